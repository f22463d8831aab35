"""What a new user meets at the CLI: help and version, one-line errors with documented exit
codes, readable `config`, quota-wait notices and the simulator's paste-ready banner."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from rich.progress import Progress
from typer.main import get_command
from typer.testing import CliRunner

from support import sim_env, stderr_lines
from threatintel import __version__
from threatintel.cli import app
from threatintel.cli_run import QuotaWaitNotice
from threatintel.cli_support import config_value, quota_wait_line, simulator_banner
from threatintel.quota import BLOCKED, QuotaWait
from threatintel.simulator import SimulatorServer

runner = CliRunner()

VT_WAIT = QuotaWait("virustotal", "key:0123456789", 52.4, "minute", 4, "VIRUSTOTAL_RATE_LIMIT")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def cli_process(*args: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "threatintel", *args], env=env, **popen
    )


# --- help and version -----------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["version"]])
def test_version_flag_and_command(args: list[str]) -> None:
    """`--version` and `version` both print the version and exit 0."""
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert result.stdout == f"threatintel {__version__}\n"


COMMANDS = ["analyze", "extract", "config", "quota", "version", "demo", "simulate"]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_at_80_columns_is_whole(command: list[str]) -> None:
    """-h equals --help; at 80 columns no help text is cut off and flags show no <bool>."""
    short = runner.invoke(app, [*command, "-h"], env={"COLUMNS": "80"}, terminal_width=80)
    long = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout
    text = short.stdout
    assert "…" not in text and "<bool>" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    group = get_command(app)
    target = group.commands[command[0]] if command else group  # type: ignore[attr-defined]
    for param in target.params:
        help_text = getattr(param, "help", None)
        if help_text:
            assert " ".join(help_text.split()) in flat, param.name
    if not command:
        for name, sub in group.commands.items():  # type: ignore[attr-defined]
            first_line = (sub.help or "").strip().splitlines()[0]
            assert f"{name} {first_line}" in flat


def _every_command() -> list[list[str]]:
    """The path of every command and sub-command, from the click tree Typer builds."""
    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


@pytest.mark.parametrize("command", _every_command(), ids=lambda c: " ".join(c) or "top")
def test_help_names_arguments_by_metavar_not_python_type(command: list[str]) -> None:
    """No --help at 80 columns shows a Python type such as <list[str]> or <str>: arguments
    are named by their metavar (INDICATOR, FILE, ID)."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    assert not re.search(r"<(list\[|str>|int>|float>)", result.stdout), result.stdout


# --- one clear line and a documented exit code ----------------------------------------------


def one_line(stderr: str) -> str:
    lines = stderr_lines(stderr)
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "report it" not in stderr
    return lines[0]


def test_undecodable_env_file_names_it_and_exits_3(tmp_path: Path) -> None:
    """A Latin-1 ./.env is a configuration error naming the file, not an internal error."""
    Path(".env").write_bytes(b"VIRUSTOTAL_API_KEY=cl\xe9\n")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 3
    line = one_line(result.stderr)
    assert str(Path(".env").resolve()) in line and "UTF-8" in line


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["analyze", "-f", "/dev/null"], None, "/dev/null is empty"),
        (["analyze", "-f", "empty.txt"], None, "empty.txt is empty"),
        (["analyze", "-f", "blank.txt"], None, "blank.txt holds only blanks"),
        (["analyze", "-f", "-"], "", "stdin is empty"),
        (["analyze", "-f", "-"], " \n\t\n", "stdin holds only blanks"),
        (["extract", "/dev/null"], None, "/dev/null is empty"),
        (["extract"], "", "stdin is empty"),
    ],
)
def test_empty_inputs_are_one_line_exit_2(
    sim: SimulatorServer, args: list[str], stdin: str | None, message: str
) -> None:
    """Empty files, /dev/null, blank text and an empty stdin each get one line and exit 2."""
    Path("empty.txt").write_bytes(b"")
    Path("blank.txt").write_text("  \n\n\t \n")
    result = runner.invoke(app, args, input=stdin, env=sim_env(sim))
    assert result.exit_code == 2
    assert message in one_line(result.stderr)
    assert sim.log.count() == 0


def test_process_substitution_is_read(tmp_path: Path) -> None:
    """A pipe given as a file name (a shell's <(command)) is read, not called missing."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"seen at 45.142.212[.]61\n")
    os.close(write_fd)
    try:
        result = runner.invoke(app, ["extract", f"/dev/fd/{read_fd}"])
    finally:
        os.close(read_fd)
    assert result.exit_code == 0, result.output
    assert result.stdout == "ipv4\t45.142.212.61\n"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/proc/threatintel-report.json", "No such file or directory"),
        ("/sys/threatintel-report.json", "Permission denied"),
        ("{tmp}", "it is a directory"),
        ("{tmp}/plain.txt/report.json", "plain.txt is not a directory"),
    ],
)
def test_unwritable_output_is_refused_before_any_lookup(
    sim: SimulatorServer, tmp_path: Path, target: str, reason: str
) -> None:
    """-o to a path even root cannot write: one line, exit 2, and no quota spent."""
    (tmp_path / "plain.txt").write_text("not a folder\n")
    path = target.format(tmp=tmp_path)
    result = runner.invoke(
        app, ["analyze", "45.142.212.61", "--format", "json", "-o", path], env=sim_env(sim)
    )
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert line.startswith(f"error: cannot write {path}") and reason in line
    assert sim.log.count() == 0


@pytest.mark.parametrize(
    ("reports_dir", "args", "reason"),
    [
        ("{tmp}/plain.txt", ["--save"], "it is not a directory"),
        ("{tmp}/plain.txt/reports", ["--format", "stix"], "Not a directory"),
        ("/proc/threatintel-reports", ["--format", "misp"], "No such file or directory"),
    ],
)
def test_unwritable_reports_dir_is_refused_before_any_lookup(
    sim: SimulatorServer, tmp_path: Path, reports_dir: str, args: list[str], reason: str
) -> None:
    """A REPORTS_DIR that --save or a file format needs but cannot be written: one line naming
    it, exit 2, and no quota spent."""
    (tmp_path / "plain.txt").write_text("not a folder\n")
    directory = reports_dir.format(tmp=tmp_path)
    result = runner.invoke(
        app, ["analyze", "45.142.212.61", *args], env=sim_env(sim, REPORTS_DIR=directory)
    )
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert line.startswith(f"error: cannot save under REPORTS_DIR={directory}") and reason in line
    assert sim.log.count() == 0


def test_reports_dir_probe_leaves_no_file_behind(sim: SimulatorServer, tmp_path: Path) -> None:
    """Checking REPORTS_DIR before the lookups leaves only the saved report in it."""
    reports = tmp_path / "reports"
    reports.mkdir()
    env = sim_env(sim, REPORTS_DIR=str(reports))
    result = runner.invoke(app, ["analyze", "45.142.212.61", "--format", "stix"], env=env)
    assert result.exit_code == 0, result.output
    (saved,) = reports.iterdir()
    assert saved.name.endswith(".stix.json")


def test_output_probe_leaves_no_file_behind(sim: SimulatorServer, tmp_path: Path) -> None:
    """Checking a new output path does not leave an empty file when the run then fails."""
    target = tmp_path / "report.json"
    result = runner.invoke(app, ["analyze", "-f", "/dev/null", "-o", str(target)])
    assert result.exit_code == 2
    assert not target.exists()


def test_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`extract big.txt | head -1`: the reader leaves early, threatintel stops without a word."""
    big = tmp_path / "big.txt"
    big.write_text(
        "".join(f"host{i}.example.com 10.1.{i // 250}.{i % 250}\n" for i in range(50_000))
    )
    with cli_process(
        "extract", str(big), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # what `head -1` does after its line
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1
    assert first == b"domain\thost0.example.com\n"
    assert stderr == ""  # no traceback, no "Exception ignored"


@pytest.mark.parametrize("args", [["extract", "two.txt"], [], ["--version"], ["config"]])
def test_reader_gone_before_the_first_byte_exits_quietly(tmp_path: Path, args: list[str]) -> None:
    """`threatintel ... | true`: output the reader never takes is dropped without a word."""
    (tmp_path / "two.txt").write_text("8.8.8.8 and 1.1.1.1\n")
    with cli_process(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # long before the interpreter has started, let alone written
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1
    assert stderr == ""


# --- config, plurals, quota timestamps ------------------------------------------------------


def test_config_prints_values_as_the_readme_writes_them() -> None:
    """Defaults shown with their meaning, true/false, 10 not 10.0, one line per scoring field."""
    result = runner.invoke(app, ["config"], env={"QUERY_PRIVATE": "true", "OTX_CACHE_TTL": "60"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "QUERY_PRIVATE = true" in lines and "COMPRESS_RESPONSES = true" in lines
    assert "QUOTA_WAIT_FOR_RESET = false" in lines
    assert "REQUEST_TIMEOUT = 10" in lines and "RETRY_BACKOFF_BASE = 0.5" in lines
    assert "CACHE_TTL = 86400" in lines and "OTX_CACHE_TTL = 60" in lines
    assert "VIRUSTOTAL_CACHE_TTL = (not set: CACHE_TTL applies)" in lines
    assert "VIRUSTOTAL_API_KEY = (not set)" in lines
    assert "SCORING__MALICIOUS_THRESHOLD = 70" in lines
    assert all(re.fullmatch(r"[A-Z0-9_]+ = \S.*", line) for line in lines), lines
    for word in ("None", "True", "False", "{", "'"):
        assert word not in result.stdout, word


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("CACHE_DIR", Path("cache"), "./cache"),
        ("CACHE_DIR", Path("/var/cache/ti"), "/var/cache/ti"),
        ("INTERNAL_DOMAINS", [".lan", ".corp"], ".lan, .corp"),
        ("MAX_QUOTA_WAIT", None, "(not set: as long as the minute/hour windows need)"),
        ("MAX_QUOTA_WAIT", 30.0, "30"),
        ("RATE_LIMIT_MARGIN", 0.25, "0.25"),
    ],
)
def test_config_value(name: str, value: object, shown: str) -> None:
    """Each kind of value is written the way the README's table writes it."""
    assert config_value(name, value) == shown


def test_one_indicator_is_singular(sim: SimulatorServer) -> None:
    """The summary says "1 indicator" and "1 candidate skipped", never "1 indicators"."""
    result = runner.invoke(app, ["analyze", "45.142.212.61", "invoice.pdf"], env=sim_env(sim))
    assert result.exit_code == 0, result.output
    assert "1 indicator:" in result.stdout and "1 candidate skipped" in result.stdout
    assert "1 indicators" not in result.stdout and "1 candidates" not in result.stdout


def test_quota_json_times_are_iso_utc_like_the_reports(sim: SimulatorServer) -> None:
    """quota --json writes resets_at as the JSON reports write times: ISO 8601 with Z."""
    env = sim_env(sim, VIRUSTOTAL_RATE_LIMIT="4")
    report = runner.invoke(app, ["analyze", "45.142.212.61", "--format", "json"], env=env)
    assert ISO_UTC.match(json.loads(report.stdout)["started_at"])
    result = runner.invoke(app, ["quota", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (vt_key,) = next(q for q in json.loads(result.stdout) if q["provider"] == "virustotal")["keys"]
    times = [w["resets_at"] for w in vt_key["windows"]]
    assert len(times) == 3 and all(ISO_UTC.match(t) for t in times), times
    assert vt_key["blocked_until"] is None


def test_quota_table_fits_80_columns(sim: SimulatorServer) -> None:
    """`quota` at 80 columns keeps every cell whole, says where each limit came from and names
    a provider with no key."""
    env: dict[str, str | None] = {**sim_env(sim, COLUMNS="80"), "ABUSEIPDB_API_KEY": None}
    assert runner.invoke(app, ["analyze", "45.142.212.61"], env=env).exit_code == 0
    result = runner.invoke(app, ["quota"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = ["provider", "key", "window", "used", "limit", "left", "from", "resets", "UTC"]
    assert lines[1].split() == header
    assert "…" not in result.stdout and "configured" in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert rows["abuseipdb"] == ["not", "configured"]
    assert "key:" in rows["virustotal"][0]


# --- quota-wait notices ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (
            VT_WAIT,
            "virustotal: waiting 52s for a rate-limit slot "
            "(VIRUSTOTAL_RATE_LIMIT=4/min; set it higher for a paid key)",
        ),
        (
            QuotaWait("otx", "anonymous", 754.0, "hour", 1000, "OTX_RATE_LIMIT"),
            "otx: waiting 12m 34s for a rate-limit slot "
            "(OTX_RATE_LIMIT=1000/hour; set it higher for a paid key)",
        ),
        (
            QuotaWait("abuseipdb", "key:ab", 6400.0, "day", 1000, "ABUSEIPDB_RATE_LIMIT"),
            "abuseipdb: waiting 1h 46m for its day quota to reset "
            "(ABUSEIPDB_RATE_LIMIT=1000/day; set it higher for a paid key)",
        ),
        (
            QuotaWait("virustotal", "key:0123456789", 30.0, BLOCKED, None, None),
            "virustotal: waiting 30s: it refused key:0123456789 with 429 (too many requests)",
        ),
    ],
)
def test_quota_wait_line(event: QuotaWait, line: str) -> None:
    """A quota wait reads as provider, duration, and the variable to raise for a paid key."""
    assert quota_wait_line(event) == line


def test_quota_wait_notice_prints_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a progress bar the notice is one line on stderr, nothing on stdout."""
    QuotaWaitNotice()(VT_WAIT)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == quota_wait_line(VT_WAIT) + "\n"


def test_quota_wait_notice_prints_above_the_progress_bar() -> None:
    """With a live progress bar the notice goes through the bar's console, whole."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with Progress(console=console, transient=True) as progress:
        progress.add_task("analyse", total=10)
        QuotaWaitNotice(progress)(VT_WAIT)
    assert quota_wait_line(VT_WAIT) in screen.getvalue()


# --- the simulator's banner -----------------------------------------------------------------


def test_simulator_banner_is_ready_to_paste() -> None:
    """The banner gives one export per base URL and keys any non-empty value satisfies."""
    base = "http://127.0.0.1:8900"
    urls = {
        "virustotal": f"{base}/virustotal/api/v3",
        "otx": f"{base}/otx/api/v1",
        "abuseipdb": f"{base}/abuseipdb/api/v2",
        "ipinfo": f"{base}/ipinfo",
    }
    banner = simulator_banner(base, urls, {"abuseipdb": True})
    exports = [line for line in banner.splitlines() if line.startswith("export ")]
    assert exports == [
        f"export VIRUSTOTAL_BASE_URL={base}/virustotal/api/v3",
        f"export OTX_BASE_URL={base}/otx/api/v1",
        f"export ABUSEIPDB_BASE_URL={base}/abuseipdb/api/v2",
        f"export IPINFO_BASE_URL={base}/ipinfo",
        "export VIRUSTOTAL_API_KEY=sim",
        "export OTX_API_KEY=sim",
        "export IPINFO_API_KEY=sim",
    ]
    assert "# any non-empty key is accepted:" in banner
    assert "# ABUSEIPDB_API_KEY: this scenario accepts only the keys it lists" in banner
    assert max(len(line) for line in banner.splitlines()) <= 80


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_simulate_prints_variables_that_work(tmp_path: Path) -> None:
    """`threatintel simulate --port P` lists working URLs once it listens; a pasted key works."""
    port = free_port()
    with cli_process(
        "simulate",
        "--port",
        str(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    ) as process:
        try:
            assert process.stdout is not None
            exports: dict[str, str] = {}
            while "IPINFO_BASE_URL" not in exports or "VIRUSTOTAL_API_KEY" not in exports:
                line = process.stdout.readline().decode()
                assert line, "the simulator stopped before printing its variables"
                if line.startswith("export "):
                    for pair in line.split("#")[0].split()[1:]:
                        name, _, value = pair.partition("=")
                        exports[name] = value
            assert exports["VIRUSTOTAL_BASE_URL"] == f"http://127.0.0.1:{port}/virustotal/api/v3"
            answer = httpx.get(
                exports["VIRUSTOTAL_BASE_URL"] + "/ip_addresses/45.142.212.61",
                headers={"x-apikey": exports["VIRUSTOTAL_API_KEY"]},
                timeout=10,
            )
            assert answer.status_code == 200
            assert answer.json()["data"]["id"] == "45.142.212.61"
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_simulate_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    """A port already in use is one line and exit 2, with no banner."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["simulate", "--port", str(port)])
    assert result.exit_code == 2
    assert "cannot run the simulator" in one_line(result.stderr)
    assert result.stdout == ""


def test_quota_counts_stay_short_and_read_right() -> None:
    """Quota counts fit five characters and a million reads 1M, not 1000k."""
    from threatintel.cli import _count

    assert [_count(n) for n in (99_999, 300_000, 1_000_000, 9_500_000)] == [
        "99999",
        "300k",
        "1M",
        "9M",
    ]
