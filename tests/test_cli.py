"""The CLI against the simulator: in memory with CliRunner, and a few runs as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import TEST_KEYS, sim_env, stderr_lines
from threatintel import __version__
from threatintel._redaction import fingerprint
from threatintel.cli import app
from threatintel.simulator import SimulatorServer

runner = CliRunner()


def test_analyze_values_as_json(sim: SimulatorServer) -> None:
    """Defanged values on the command line come back as normalised JSON enrichments."""
    result = runner.invoke(
        app,
        ["analyze", "185.220.101[.]4", "hxxp://cdn-update-check[.]net/x", "--format", "json"],
        env=sim_env(sim),
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    values = [e["indicator"]["value"] for e in data["enrichments"]]
    assert values == ["185.220.101.4", "http://cdn-update-check.net/x"]
    assert data["enrichments"][0]["verdict"]["label"] == "malicious"
    assert data["started_at"].endswith("Z")


def test_analyze_file_and_stdin_as_jsonl(sim: SimulatorServer, tmp_path: Path) -> None:
    """-f FILE and -f - read free text; jsonl prints one enrichment per line."""
    report = tmp_path / "report.txt"
    report.write_text("C2 at 45.142.212[.]61 and update.cdn-update-check[.]net\n")
    from_file = runner.invoke(
        app, ["analyze", "-f", str(report), "--format", "jsonl"], env=sim_env(sim)
    )
    from_stdin = runner.invoke(
        app,
        ["analyze", "-f", "-", "--format", "jsonl"],
        input=report.read_text(),
        env=sim_env(sim),
    )
    for result in (from_file, from_stdin):
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [e["indicator"]["value"] for e in lines] == [
            "45.142.212.61",
            "update.cdn-update-check.net",
        ]


def test_table_output_and_providers_option(sim: SimulatorServer) -> None:
    """The table shows verdicts and what only the chosen sources said."""
    result = runner.invoke(
        app, ["analyze", "45.142.212.61", "--providers", "otx,abuseipdb"], env=sim_env(sim)
    )
    assert result.exit_code == 0, result.output
    assert "malicious" in result.stdout
    assert "AbuseIPDB 100%" in result.stdout and "OTX " in result.stdout
    assert "VT " not in result.stdout and "IPinfo" not in result.stdout
    assert {r.vendor for r in sim.log.records()} == {"otx", "abuseipdb"}


def test_output_file_is_written(sim: SimulatorServer, tmp_path: Path) -> None:
    """--output writes the rendered report to the path, creating folders."""
    target = tmp_path / "out" / "result.json"
    result = runner.invoke(
        app, ["analyze", "45.142.212.61", "--format", "json", "-o", str(target)], env=sim_env(sim)
    )
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["enrichments"][0]["indicator"]["type"] == "ipv4"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["analyze"], None, "give indicators"),
        (["analyze", "not-an-indicator"], None, "no indicators found"),
        (["analyze", "-f", "-"], "nothing to see here\n", "no indicators found"),
        (["analyze", "-f", "/nonexistent/file.txt"], None, "cannot read"),
        (["analyze", "8.8.8.8", "--providers", "shodan"], None, "unknown provider"),
        (["extract", "-"], "just prose, no indicators\n", "no indicators found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sim: SimulatorServer, args: list[str], stdin: str | None, message: str
) -> None:
    """Bad invocations and inputs without indicators exit 2 with one line, no traceback."""
    result = runner.invoke(app, args, input=stdin, env=sim_env(sim))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(stderr_lines(result.stderr)) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["analyze", "45.142.212.61", "--providers", "otx,Shodan"], None),
        (["analyze", "-f", "-", "--providers", "Shodan"], "seen 45.142.212.61\n"),
    ],
)
def test_unknown_provider_is_the_engines_request_error(
    sim: SimulatorServer, args: list[str], stdin: str | None
) -> None:
    """An unknown provider, from arguments or from text, is the engine's request error: exit 2,
    one line naming it as typed and the choices, and no lookup made."""
    result = runner.invoke(app, args, input=stdin, env=sim_env(sim))
    assert result.exit_code == 2, result.output
    assert stderr_lines(result.stderr) == [
        "error: unknown provider 'Shodan'; choose from virustotal, otx, abuseipdb, ipinfo"
    ]
    assert len(sim.log) == 0


def test_invalid_setting_names_the_variable() -> None:
    """An invalid environment value stops with exit 3 and names the variable."""
    result = runner.invoke(app, ["analyze", "8.8.8.8"], env={"MAX_RETRIES": "lots"})
    assert result.exit_code == 3
    assert "MAX_RETRIES" in result.stderr


def test_a_key_unfit_for_a_header_stops_at_start_up(sim: SimulatorServer) -> None:
    """A key with a line break or a non-ASCII character is exit 3, one line, key unshown."""
    for bad in ("SECRET-PART\nSECOND-LINE", "SECRET-PARTé"):
        env = sim_env(sim, OTX_API_KEY=bad)
        result = runner.invoke(app, ["analyze", "45.142.212.61"], env=env)
        assert result.exit_code == 3, result.output
        assert "OTX_API_KEY" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "SECRET-PART" not in result.output and "internal error" not in result.output


def test_extract_text_and_json() -> None:
    """extract prints typed indicators; JSON adds the rejected candidates with reasons."""
    text = "see hxxps://evil-login[.]com/a and 10.0.0.5, attachment invoice.pdf\n"
    plain = runner.invoke(app, ["extract", "-"], input=text)
    assert plain.exit_code == 0
    assert plain.stdout.splitlines() == ["url\thttps://evil-login.com/a", "ipv4\t10.0.0.5"]
    as_json = runner.invoke(app, ["extract", "-", "--format", "json"], input=text)
    data = json.loads(as_json.stdout)
    assert data["rejected"][0]["candidate"] == "invoice.pdf"
    assert "file name" in data["rejected"][0]["reason"]


def test_config_masks_keys() -> None:
    """config shows every setting, with keys only as fingerprints."""
    key = TEST_KEYS["virustotal"]
    result = runner.invoke(app, ["config", "--json"], env={"VIRUSTOTAL_API_KEY": key})
    assert result.exit_code == 0
    assert key not in result.output
    shown = json.loads(result.stdout)
    assert shown["VIRUSTOTAL_API_KEY"] == [fingerprint(key)]
    assert shown["CACHE_TTL"] == 86400 and shown["VIRUSTOTAL_RATE_LIMIT"] == 4


def test_quota_shows_what_earlier_runs_spent(sim: SimulatorServer) -> None:
    """Separate CLI runs share one budget on disk; `quota` shows it per key fingerprint."""
    env = sim_env(sim, VIRUSTOTAL_RATE_LIMIT="4")
    for value in ("45.142.212.61", "185.220.101.4"):
        assert runner.invoke(app, ["analyze", value], env=env).exit_code == 0
    result = runner.invoke(app, ["quota", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = {entry["provider"]: entry for entry in json.loads(result.stdout)}
    (vt_key,) = report["virustotal"]["keys"]
    assert vt_key["key"] == fingerprint(TEST_KEYS["virustotal"])
    minute = next(w for w in vt_key["windows"] if w["window"] == "minute")
    assert (minute["used"], minute["remaining"]) == (2, 2)
    assert TEST_KEYS["virustotal"] not in result.stdout
    table = runner.invoke(app, ["quota"], env=env)
    assert table.exit_code == 0 and "virustotal" in table.stdout


def test_config_and_quota_never_show_the_redis_password() -> None:
    """REDIS_URL's password is masked in config; quota says when Redis is unreachable."""
    env = {"REDIS_URL": "redis://:hunter2-secret@127.0.0.1:1/0"}
    shown = runner.invoke(app, ["config"], env=env)
    assert shown.exit_code == 0
    assert "hunter2" not in shown.output and "127.0.0.1:1" in shown.output
    quota = runner.invoke(app, ["quota"], env=env)
    assert quota.exit_code == 0, quota.output
    assert "hunter2" not in quota.output
    assert "UNREACHABLE" in quota.stdout


def test_version() -> None:
    """version prints the package version."""
    result = runner.invoke(app, ["version"])
    assert result.stdout.strip() == f"threatintel {__version__}"


def test_demo_in_memory() -> None:
    """The demo analyses the bundled sample against the simulator and says so."""
    result = runner.invoke(app, ["demo", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "SIMULATOR" in result.stderr
    data = json.loads(result.stdout)
    assert len(data["enrichments"]) >= 45
    labels = {e["verdict"]["label"] for e in data["enrichments"]}
    assert labels == {"malicious", "suspicious", "harmless", "unknown"}
    private = [
        e
        for e in data["enrichments"]
        if any(s["status"] == "not_queried_private" for s in e["sources"].values())
    ]
    assert private, "the demo sample holds private addresses that must not be queried"


def test_demo_ignores_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A corporate proxy in the environment does not capture the demo's loopback traffic."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    result = runner.invoke(app, ["demo", "--format", "json"])
    assert result.exit_code == 0, result.output
    labels = {e["verdict"]["label"] for e in json.loads(result.stdout)["enrichments"]}
    assert "malicious" in labels


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE"),
        ({"HTTPS_PROXY": "notaproxy://x"}, "HTTPS_PROXY"),
        ({"VIRUSTOTAL_BASE_URL": "ftp://mirror.example/api"}, "VIRUSTOTAL_BASE_URL"),
    ],
)
def test_broken_network_settings_are_one_line_exit_3(env: dict[str, str], message: str) -> None:
    """A missing CA file, a bad proxy URL or a bad base URL stop with exit 3 and one line."""
    result = runner.invoke(app, ["analyze", "45.142.212.61"], env=env)
    assert result.exit_code == 3, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_binary_input_is_refused(tmp_path: Path) -> None:
    """A binary file is refused with one line instead of spending quota on junk."""
    blob = tmp_path / "sample.exe"
    blob.write_bytes(b"MZ\x90\x00\x03" + bytes(range(256)) * 100)
    result = runner.invoke(app, ["analyze", "-f", str(blob)])
    assert result.exit_code == 2
    assert "binary" in result.stderr


@pytest.mark.parametrize("command", ["extract", "batch"])
def test_a_stray_nul_in_a_text_file_is_a_separator_said_in_one_line(
    sim: SimulatorServer, tmp_path: Path, command: str
) -> None:
    """One NUL in a log does not make the whole file binary: the indicators on both sides
    are read (the URL does not swallow it) and one note line says so."""
    log = tmp_path / "proxy.log"
    log.write_bytes(b"seen 45.142.0.9\x00hxxp://bad-site[.]com/x\x00 then\n")
    args = ["extract", str(log)] if command == "extract" else ["batch", str(log), "-q"]
    result = runner.invoke(app, args, env=sim_env(sim))
    assert result.exit_code == 0, result.output
    assert "45.142.0.9" in result.stdout and "http://bad-site.com/x" in result.stdout
    assert "%00" not in result.stdout
    notes = [line for line in result.stderr.splitlines() if "NUL" in line]
    assert notes == [f"note: {log} holds 2 NUL bytes near its start; read as separators"]


@pytest.mark.parametrize("command", ["analyze", "batch"])
def test_a_utf16_export_is_refused_with_how_to_convert_it(tmp_path: Path, command: str) -> None:
    """A UTF-16 file (every other byte a NUL) is named as UTF-16 with the iconv line, not
    called binary, in one line and exit 2."""
    export = tmp_path / "export.txt"
    export.write_text("8.8.8.8\nevil.example.com\n" * 20, encoding="utf-16")
    args = ["analyze", "-f", str(export)] if command == "analyze" else ["batch", str(export)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "UTF-16" in line and "iconv -f UTF-16 -t UTF-8" in line


# --- real processes -----------------------------------------------------------------------


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "threatintel", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_demo_as_a_real_process() -> None:
    """`python -m threatintel demo` runs end to end: simulator, engine and table."""
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert "simulator" in result.stdout.lower()
    assert "indicators:" in result.stdout


@pytest.mark.parametrize(
    "args",
    [("analyze", "--format", "xml", "8.8.8.8"), ("nope",), ("analyze", "--bogus")],
)
def test_usage_errors_are_one_line_from_the_entry_point(args: tuple[str, ...]) -> None:
    """The console entry point turns usage errors into one line and exit code 2."""
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error:")


def _thresholds(code: str) -> tuple[int, int, int]:
    script = "import atexit, gc, sys\natexit.register(lambda: print(*gc.get_threshold()))\n" + code
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    young, middle, old = (int(n) for n in done.stdout.split()[-3:])
    return young, middle, old


def _frozen(code: str) -> int:
    script = "import gc\n" + code + "\nprint(gc.get_freeze_count())"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return int(done.stdout.split()[-1])


def test_start_up_leaves_the_collectors_sight_only_in_the_cli_process() -> None:
    """settle() freezes start-up's objects once prepare() made the process the CLI's, else not."""
    settle = "from threatintel._process import prepare, settle\nimport threatintel.engine\n"
    assert _frozen(settle + "prepare()\nsettle()") > 10_000
    assert _frozen(settle + "settle()") == 0


def test_the_cli_process_makes_full_collections_rarer() -> None:
    """The CLI's process raises the young and full-collection thresholds; importing the
    library leaves the host's alone."""
    cli = _thresholds(
        "sys.argv = ['threatintel', 'version']\nfrom threatintel.cli import main\nmain()"
    )
    library = _thresholds("import threatintel.engine")
    assert cli[2] >= 100 and cli[0] >= 10_000
    assert library[2] < 100 and library[0] < 10_000
    assert cli[1] == library[1]
