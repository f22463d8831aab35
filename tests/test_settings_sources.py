"""Where settings may come from: a case folder's ./.env may not choose endpoints or scope.

An analyst cds into a case folder (perhaps unpacked from an attacker's archive): its ./.env may
still supply keys and tuning, but never where our keys go or what is sent. The environment, an
explicit --env-file and the user's own config.env may set everything.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import TEST_KEYS, sim_env, stderr_lines
from threatintel.cli import app
from threatintel.errors import ConfigError
from threatintel.settings import DEFAULT_VIRUSTOTAL_BASE_URL, Settings, user_config_file
from threatintel.simulator import SimulatorServer

runner = CliRunner()

HOSTILE = "VIRUSTOTAL_BASE_URL=https://collector.example/api/v3\nQUERY_PRIVATE=true\n"


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_cwd_dotenv_cannot_set_endpoints_or_scope(caplog: pytest.LogCaptureFixture) -> None:
    """./.env's endpoint and scope lines are ignored with one warning naming them and the file,
    while its keys and tuning still apply."""
    Path(".env").write_text(HOSTILE + "VIRUSTOTAL_API_KEY=case-key\nMAX_RETRIES=7\n")
    with caplog.at_level(logging.WARNING, logger="threatintel.settings"):
        settings = Settings.load()
    assert settings.virustotal_base_url == DEFAULT_VIRUSTOTAL_BASE_URL
    assert settings.query_private is False
    assert [k.get_secret_value() for k in settings.virustotal_api_key] == ["case-key"]
    assert settings.max_retries == 7
    (warning,) = warnings_from(caplog)
    assert "VIRUSTOTAL_BASE_URL" in warning and "QUERY_PRIVATE" in warning
    assert str(Path(".env").resolve()) in warning and "\n" not in warning


@pytest.mark.parametrize(
    ("line", "read"),
    [
        ("REDIS_URL=redis://collector.example:6379/0", lambda s: s.redis_url),
        ("CACHE_DIR=./poisoned-cache", lambda s: s.cache_dir.name),
        ("REPORTS_DIR=/mnt/share/out", lambda s: str(s.reports_dir)),
        ("INTERNAL_DOMAINS=.nothing", lambda s: s.internal_domains),
        ("SCORING__MALICIOUS_THRESHOLD=99", lambda s: s.scoring.malicious_threshold),
        ("OTX_BASE_URL=https://collector.example", lambda s: s.otx_base_url),
        # Never read from a file (httpx reads the environment), but named in the warning.
        ("HTTPS_PROXY=http://collector.example:3128", lambda s: os.environ.get("HTTPS_PROXY")),
    ],
)
def test_each_refused_setting_keeps_its_value(
    line: str, read: Callable[[Settings], object], caplog: pytest.LogCaptureFixture
) -> None:
    """Stores, reports, internal names and scoring from ./.env are ignored like endpoints."""
    expected = read(Settings.load())
    Path(".env").write_text(line + "\n")
    with caplog.at_level(logging.WARNING, logger="threatintel.settings"):
        assert read(Settings.load()) == expected
    (warning,) = warnings_from(caplog)
    assert line.partition("=")[0] in warning


def test_an_explicit_env_file_may_set_everything(caplog: pytest.LogCaptureFixture) -> None:
    """The same lines in a file named with env_file= are honoured, without a warning, and the
    implicit ./.env is then not read at all."""
    chosen = Path("chosen.env")
    chosen.write_text(HOSTILE)
    Path(".env").write_text("MAX_RETRIES=7\n")
    with caplog.at_level(logging.WARNING, logger="threatintel.settings"):
        settings = Settings.load(env_file=chosen)
    assert settings.virustotal_base_url == "https://collector.example/api/v3"
    assert settings.query_private is True
    assert settings.max_retries != 7
    assert warnings_from(caplog) == []


def test_the_user_config_file_may_set_everything_and_cwd_keys_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's own config.env sets endpoints; a ./.env key overrides its key (local wins)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    user_config_file().parent.mkdir(parents=True)
    user_config_file().write_text(HOSTILE + "VIRUSTOTAL_API_KEY=user-key\n")
    assert user_config_file() == tmp_path / "xdg" / "threatintel" / "config.env"
    Path(".env").write_text("VIRUSTOTAL_API_KEY=case-key\n")
    settings = Settings.load()
    assert settings.virustotal_base_url == "https://collector.example/api/v3"
    assert settings.query_private is True
    assert [k.get_secret_value() for k in settings.virustotal_api_key] == ["case-key"]


def test_the_environment_beats_an_explicit_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable in the process environment wins over the same one in --env-file."""
    Path("chosen.env").write_text("MAX_RETRIES=7\n")
    monkeypatch.setenv("MAX_RETRIES", "2")
    assert Settings.load(env_file="chosen.env").max_retries == 2


def test_a_missing_env_file_is_a_config_error_naming_it() -> None:
    """--env-file naming no file stops with a ConfigError naming the path."""
    with pytest.raises(ConfigError, match=r"missing\.env: no such file"):
        Settings.load(env_file="missing.env")


def test_a_directory_as_env_file_is_a_config_error_naming_it() -> None:
    """--env-file naming a directory stops with a ConfigError rather than reading nothing."""
    Path("team.env").mkdir()
    with pytest.raises(ConfigError, match=r"team\.env: is a directory"):
        Settings.load(env_file="team.env")


@pytest.mark.parametrize(
    "url",
    [
        "http://collector.example/api/v3",
        "http://10.0.0.5:8080/api",
        "http://127.0.0.1.collector.example/api",
        "http://[::ffff:10.0.0.1]/api",
        "http://localhost.collector.example/api",
    ],
)
def test_plain_http_off_loopback_is_refused(url: str) -> None:
    """A plain http:// endpoint whose host is not loopback is a ConfigError naming the
    variable: the key would cross the network in clear."""
    with pytest.raises(ConfigError) as caught:
        Settings.load(virustotal_base_url=url)
    assert "VIRUSTOTAL_BASE_URL" in str(caught.value) and "loopback" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://ev\x1bcil.example/api",
        "https://mirror.example/\u202eapi",
        "https://mirror.example/a\u200bpi",
        "https://mirror.example/a pi",
    ],
)
def test_an_endpoint_with_hidden_characters_is_refused(url: str) -> None:
    """A base URL holding a control, bidi, zero-width or space character is a ConfigError
    naming the variable, never a lookup that fails later or a note that prints it raw."""
    with pytest.raises(ConfigError) as caught:
        Settings.load(virustotal_base_url=url)
    assert "VIRUSTOTAL_BASE_URL" in str(caught.value) and "control" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8900/virustotal/api/v3",
        "http://127.4.5.6/api",
        "http://[::1]:8900/api",
        "http://localhost:8900/api",
        "https://mirror.example/api/v3",
    ],
)
def test_loopback_http_and_any_https_are_accepted(url: str) -> None:
    """http:// to a loopback host (the simulator) and https:// anywhere are accepted."""
    assert Settings.load(virustotal_base_url=url).virustotal_base_url == url


def test_plain_http_off_loopback_exits_3(sim: SimulatorServer) -> None:
    """The CLI refuses a plain http:// endpoint off loopback with one line and exit code 3."""
    env = sim_env(sim, OTX_BASE_URL="http://collector.example/api/v1")
    result = runner.invoke(app, ["analyze", "45.142.212.61"], env=env)
    assert result.exit_code == 3
    (line,) = stderr_lines(result.stderr)
    assert line.startswith("error:") and "OTX_BASE_URL" in line
    assert sim.log.count() == 0


def test_non_default_endpoints_are_announced_once(sim: SimulatorServer) -> None:
    """A run whose endpoints are not the vendors' says so in one stderr line naming them."""
    result = runner.invoke(app, ["analyze", "45.142.212.61"], env=sim_env(sim))
    assert result.exit_code == 0, result.output
    origin = sim.base_urls["virustotal"].split("/virustotal")[0]
    note = (
        "note: VIRUSTOTAL_BASE_URL, OTX_BASE_URL, ABUSEIPDB_BASE_URL, IPINFO_BASE_URL point at "
        f"{origin} (not the vendors' own addresses)"
    )
    # Wrapped to the terminal's width like other notes: compare the words.
    assert " ".join(result.stderr.split()).count(note) == 1
    assert result.stderr.count("note:") == 1


def test_default_endpoints_and_the_demo_are_not_announced() -> None:
    """Neither a run on the vendors' endpoints nor the demo (which names its simulator) prints
    the endpoint note."""
    assert "note:" not in runner.invoke(app, ["config"]).stderr
    demo = runner.invoke(app, ["demo", "--format", "json"])
    assert demo.exit_code == 0, demo.output
    assert "_BASE_URL" not in demo.stderr and "SIMULATOR" in demo.stderr


def test_global_env_file_option_is_honoured(sim: SimulatorServer) -> None:
    """`threatintel --env-file PATH analyze` reads endpoints from PATH and asks that host."""
    env_file = Path("case.env")
    env_file.write_text(f"VIRUSTOTAL_BASE_URL={sim.base_urls['virustotal']}\n")
    env = {"VIRUSTOTAL_API_KEY": TEST_KEYS["virustotal"]}
    args = ["--env-file", str(env_file), "analyze", "45.142.212.61", "-p", "virustotal"]
    result = runner.invoke(app, [*args, "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    assert sim.log.count(vendor="virustotal") == 1
    assert "note: VIRUSTOTAL_BASE_URL points at" in result.stderr


def threatintel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threatintel", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=dict(os.environ),
    )


def test_cli_warns_about_a_hostile_dotenv_and_honours_env_file(tmp_path: Path) -> None:
    """As a real process: in a case folder whose ./.env redirects VirusTotal, `config` warns in
    one line and keeps the vendor's endpoint; with --env-file the same content applies."""
    (tmp_path / ".env").write_text(HOSTILE)
    ignored = threatintel("config", "--json", cwd=tmp_path)
    assert ignored.returncode == 0, ignored.stderr
    shown = json.loads(ignored.stdout)
    assert shown["VIRUSTOTAL_BASE_URL"] == DEFAULT_VIRUSTOTAL_BASE_URL
    assert shown["QUERY_PRIVATE"] is False
    (warning,) = ignored.stderr.strip().splitlines()
    assert "ignoring QUERY_PRIVATE, VIRUSTOTAL_BASE_URL from" in warning
    assert str(tmp_path / ".env") in warning
    chosen = threatintel("--env-file", ".env", "config", "--json", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["VIRUSTOTAL_BASE_URL"] == "https://collector.example/api/v3"
    assert json.loads(chosen.stdout)["QUERY_PRIVATE"] is True
    assert " ".join(chosen.stderr.split()) == (
        "note: VIRUSTOTAL_BASE_URL points at https://collector.example (not the vendors' own "
        "addresses)"
    )
