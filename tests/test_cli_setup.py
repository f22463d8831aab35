"""`threatintel setup`: keys typed without echo in a terminal (or piped), checked against the
simulator, saved 0600 to the user's config file with its other lines kept, never printed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values
from typer.testing import CliRunner

from support import sim_env
from terminal import PtyProcess
from threatintel._envfile import quote, update_env_file
from threatintel._redaction import fingerprint
from threatintel.cli import app
from threatintel.simulator import SimulatorServer

runner = CliRunner()

GOOD_VT = "vt-good-key-0123456789abcdef0123456789abcdef"
GOOD_ABUSE = "abuse-good-key-00112233445566778899"
WRONG_ABUSE = "abuse-wrong-key-99887766554433221100"


def keyless_env(sim: SimulatorServer, tmp_path: Path) -> dict[str, str]:
    """The simulator's endpoints and no keys; the user's config file under tmp_path."""
    env = {k: v for k, v in sim_env(sim).items() if not k.endswith("_API_KEY")}
    return env | {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def config_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "threatintel" / "config.env"


@pytest.fixture
def picky_sim(sim: SimulatorServer) -> SimulatorServer:
    """The simulator taking only the GOOD keys of VirusTotal and AbuseIPDB."""
    sim.config.virustotal.keys = {GOOD_VT}
    sim.config.abuseipdb.keys = {GOOD_ABUSE}
    return sim


def test_setup_in_a_terminal(picky_sim: SimulatorServer, tmp_path: Path) -> None:
    """In a terminal keys are not echoed nor printed; a refused key is not saved; file is 0600."""
    env = keyless_env(picky_sim, tmp_path)
    with PtyProcess(["setup"], env=env, cwd=tmp_path) as term:
        term.expect("VirusTotal API key (not set): ")
        term.send(GOOD_VT)
        term.expect("OTX API key")
        term.send("")
        term.expect("AbuseIPDB API key (not set): ")
        term.send(WRONG_ABUSE)
        term.expect("IPinfo API key")
        term.send("")
        term.expect("Save AbuseIPDB's refused key anyway? [y/N]")
        term.send("")
        assert term.wait() == 0
    shown = term.output
    assert GOOD_VT not in shown and WRONG_ABUSE not in shown
    assert f"VirusTotal: {fingerprint(GOOD_VT)} accepted" in shown
    assert f"AbuseIPDB: {fingerprint(WRONG_ABUSE)} refused" in shown
    path = config_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dotenv_values(path) == {"VIRUSTOTAL_API_KEY": GOOD_VT}


@pytest.mark.parametrize("at", ["key", "question"])
def test_ctrl_c_says_interrupted(picky_sim: SimulatorServer, tmp_path: Path, at: str) -> None:
    """Ctrl-C at a key prompt or a yes/no question ends setup on a line of its own saying
    "interrupted" (exit 130), and saves nothing."""
    with PtyProcess(["setup"], env=keyless_env(picky_sim, tmp_path), cwd=tmp_path) as term:
        term.expect("VirusTotal API key (not set): ")
        if at == "question":
            term.send("vt-wrong-key")
            for prompt in ("OTX API key", "AbuseIPDB API key", "IPinfo API key"):
                term.expect(prompt)  # getpass drops what was typed ahead of its prompt
                term.send("")
            term.expect("refused key anyway? [y/N] ")
        term.send_raw("\x03")
        code = term.wait()
    assert code == 130, term.output
    assert term.output.rstrip().endswith("\ninterrupted"), term.output
    assert not config_file(tmp_path).exists()


def test_setup_keeps_the_files_other_lines(picky_sim: SimulatorServer, tmp_path: Path) -> None:
    """An existing config file keeps its comments and settings; the key is replaced in place."""
    path = config_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("# mine\nCACHE_TTL=60\nVIRUSTOTAL_API_KEY=old-key\nMAX_WORKERS=5\n")
    path.chmod(0o644)
    env = keyless_env(picky_sim, tmp_path)
    result = runner.invoke(app, ["setup"], input=f"{GOOD_VT}\n\n\n\n", env=env)
    assert result.exit_code == 0, result.output
    assert path.read_text() == (
        f"# mine\nCACHE_TTL=60\nVIRUSTOTAL_API_KEY={GOOD_VT}\nMAX_WORKERS=5\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"current {fingerprint('old-key')}" in result.stderr
    assert "old-key" not in result.output and GOOD_VT not in result.output


def test_a_refused_key_is_saved_when_the_user_insists(
    picky_sim: SimulatorServer, tmp_path: Path
) -> None:
    """Answering yes saves a key the service refused (the user may know better)."""
    env = keyless_env(picky_sim, tmp_path)
    result = runner.invoke(app, ["setup"], input=f"\n\n{WRONG_ABUSE}\n\ny\n", env=env)
    assert result.exit_code == 0, result.output
    assert dotenv_values(config_file(tmp_path)) == {"ABUSEIPDB_API_KEY": WRONG_ABUSE}


def test_enter_everywhere_changes_nothing(picky_sim: SimulatorServer, tmp_path: Path) -> None:
    """Enter for every key keeps them all: no file is written, nobody is asked."""
    result = runner.invoke(app, ["setup"], input="\n\n\n\n", env=keyless_env(picky_sim, tmp_path))
    assert result.exit_code == 0
    assert "nothing changed" in result.stderr
    assert not config_file(tmp_path).exists()
    assert not picky_sim.log.records()


def test_env_file_option_chooses_the_file(picky_sim: SimulatorServer, tmp_path: Path) -> None:
    """With the global --env-file, setup writes that file instead of the user's config."""
    target = tmp_path / "team.env"
    result = runner.invoke(
        app,
        ["--env-file", str(target), "setup"],
        input=f"{GOOD_VT}\n\n\n\n",
        env=keyless_env(picky_sim, tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert dotenv_values(target) == {"VIRUSTOTAL_API_KEY": GOOD_VT}


def test_a_broken_saved_key_can_be_replaced(picky_sim: SimulatorServer, tmp_path: Path) -> None:
    """A saved key that makes the settings invalid does not stop setup from replacing it."""
    path = config_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("VIRUSTOTAL_API_KEY=has a space\n")
    env = keyless_env(picky_sim, tmp_path)
    result = runner.invoke(app, ["setup"], input=f"{GOOD_VT}\n\n\n\n", env=env)
    assert result.exit_code == 0, result.output
    assert dotenv_values(path) == {"VIRUSTOTAL_API_KEY": GOOD_VT}


def test_an_unreachable_service_asks_before_saving(sim: SimulatorServer, tmp_path: Path) -> None:
    """A key that cannot be checked (nothing listens) is saved unless the user says no."""
    env = keyless_env(sim, tmp_path) | {"IPINFO_BASE_URL": "http://127.0.0.1:1/ipinfo"}
    result = runner.invoke(app, ["setup"], input="\n\n\nipinfo-token-1234\nn\n", env=env)
    assert result.exit_code == 0, result.output
    assert "could not be checked" in result.stderr
    assert "nothing saved" in result.stderr


@pytest.mark.parametrize(
    "value", ["plain-Key_0123", "with#hash", "quote'inside", "both'and\"", "back\\slash'x"]
)
def test_values_read_back_as_written(tmp_path: Path, value: str) -> None:
    """Whatever a key holds, the env file gives it back unchanged to the settings' reader."""
    path = tmp_path / "x.env"
    update_env_file(path, {"OTX_API_KEY": value})
    assert dotenv_values(path) == {"OTX_API_KEY": value}
    assert quote("simple") == "simple"


def test_later_duplicates_are_dropped(tmp_path: Path) -> None:
    """A second line for the same variable, which would override the new value, goes."""
    path = tmp_path / "x.env"
    path.write_text("export OTX_API_KEY=a\nX=1\nOTX_API_KEY=b\n")
    update_env_file(path, {"OTX_API_KEY": "c"})
    assert path.read_text() == "OTX_API_KEY=c\nX=1\n"
