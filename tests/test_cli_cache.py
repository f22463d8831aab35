"""`threatintel cache warm | stats | clear` against the simulator and a real SQLite cache (and
the real Redis, when one answers at 127.0.0.1:6379)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import REDIS_URL, sim_env
from terminal import EXPECT_TIMEOUT, PtyProcess
from threatintel.cli import app
from threatintel.cli_cache import human_age, parse_duration
from threatintel.cli_support import BLOCK
from threatintel.simulator import SimulatorServer

runner = CliRunner()

REPORT = "C2 at 45.142.212[.]61, update.cdn-update-check[.]net and 8.8.8.8\n"


def warm(sim: SimulatorServer, tmp_path: Path, **env: str) -> str:
    report = tmp_path / "iocs.txt"
    report.write_text(REPORT)
    result = runner.invoke(app, ["cache", "warm", str(report)], env=sim_env(sim, **env))
    assert result.exit_code == 0, result.output
    return result.stdout


def stats(sim: SimulatorServer, **env: str) -> dict[str, dict[str, object]]:
    result = runner.invoke(app, ["cache", "stats", "--json"], env=sim_env(sim, **env))
    assert result.exit_code == 0, result.output
    return {p["provider"]: p for p in json.loads(result.stdout)["providers"]}


def test_warm_fills_the_cache_and_says_so(sim: SimulatorServer, tmp_path: Path) -> None:
    """A first warm looks every answer up; a second finds all of them cached and asks nobody."""
    first = warm(sim, tmp_path)
    assert first.startswith("3 indicators: ")
    assert " 0 already cached, 0 failed" in first
    asked = len(sim.log.records())
    assert asked > 0
    second = warm(sim, tmp_path)
    assert f"0 answers looked up, {asked} already cached, 0 failed" in second
    assert len(sim.log.records()) == asked


def test_warm_counts_failures_by_source(sim: SimulatorServer, tmp_path: Path) -> None:
    """Lookups that fail are counted apart, named by source and status, and not cached."""
    sim.config.otx.keys = {"a-key-we-do-not-have"}
    line = warm(sim, tmp_path)
    assert "failed (otx auth_failed 3)" in line


def test_warm_reads_stdin(sim: SimulatorServer) -> None:
    """'-' reads the indicators from stdin."""
    result = runner.invoke(app, ["cache", "warm", "-"], input="8.8.8.8\n", env=sim_env(sim))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("1 indicator: ")


def test_warm_without_indicators_is_one_line_and_asks_nobody(sim: SimulatorServer) -> None:
    """Input with no indicator exits 2 with one line naming what was skipped; nothing is asked."""
    result = runner.invoke(app, ["cache", "warm", "-"], input="999.1.1.1 only\n", env=sim_env(sim))
    assert result.exit_code == 2
    assert "no indicators found in the input (999.1.1.1:" in " ".join(result.stderr.split())
    assert len(sim.log) == 0


def test_stats_show_entries_and_a_hit_rate_across_runs(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """Stats count each provider's entries, and the hit rate adds up the runs before."""
    warm(sim, tmp_path)
    warm(sim, tmp_path)
    otx = stats(sim)["otx"]
    assert otx["entries"] == 3
    assert (otx["hits"], otx["misses"], otx["hit_rate"]) == (3, 3, 0.5)
    table = runner.invoke(app, ["cache", "stats"], env=sim_env(sim, COLUMNS="80"))
    assert "50% of 6" in table.stdout
    # The first line names the file (the terminal folds a long path); the table fits.
    assert all(len(line) <= 80 for line in table.stdout.splitlines()[1:])


def test_stats_without_a_cache_file_say_so(sim: SimulatorServer) -> None:
    """Before the first lookup there is no file, and stats say so instead of making one."""
    result = runner.invoke(app, ["cache", "stats"], env=sim_env(sim))
    assert result.exit_code == 0
    assert "no cache yet" in result.stderr


def test_clear_one_provider(sim: SimulatorServer, tmp_path: Path) -> None:
    """clear --provider removes that provider's answers only and says how many went."""
    warm(sim, tmp_path)
    result = runner.invoke(app, ["cache", "clear", "--provider", "otx"], env=sim_env(sim))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "removed 3 entries (AlienVault OTX's cached answers) from SQLite"
    )
    left = stats(sim)
    assert "otx" not in left  # no entries, and its counts restarted
    assert left["virustotal"]["entries"] == 3


def test_clear_older_than_keeps_fresh_answers(sim: SimulatorServer, tmp_path: Path) -> None:
    """--older-than 1d removes nothing that was just stored."""
    warm(sim, tmp_path)
    result = runner.invoke(app, ["cache", "clear", "--older-than", "1d"], env=sim_env(sim))
    assert result.stdout.startswith("removed 0 entries (every cached answer stored over 1d ago)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provider", "nope"], "unknown provider 'nope'; choose from virustotal"),
        (["--older-than", "7 days"], "give a number and a unit, like 7d, 12h or 30m"),
        (["--older-than", "0h"], "give a number and a unit"),
    ],
)
def test_clear_refuses_bad_options(sim: SimulatorServer, args: list[str], message: str) -> None:
    """A bad provider name or age is one line and exit 2, before anything is removed."""
    result = runner.invoke(app, ["cache", "clear", *args], env=sim_env(sim))
    assert result.exit_code == 2
    assert message in result.stderr


def test_memory_backend_has_nothing_to_show(sim: SimulatorServer) -> None:
    """With CACHE_BACKEND=memory, stats explain that each process keeps its own cache."""
    result = runner.invoke(app, ["cache", "stats"], env=sim_env(sim, CACHE_BACKEND="memory"))
    assert result.exit_code == 0
    assert "each process keeps its own cache" in result.stderr


def test_redis_stats_and_clear(sim: SimulatorServer, tmp_path: Path, redis_url: str) -> None:
    """With REDIS_URL the commands read and clear the shared Redis cache (SCAN, not KEYS)."""
    env = {"REDIS_URL": redis_url}
    runner.invoke(app, ["cache", "clear", "--yes"], env=sim_env(sim, **env))
    warm(sim, tmp_path, **env)
    found = stats(sim, **env)
    assert found["ipinfo"]["entries"] == 2
    total = sum(int(p["entries"]) for p in found.values())  # type: ignore[call-overload]
    result = runner.invoke(app, ["cache", "clear", "--yes"], env=sim_env(sim, **env))
    expected = f"removed {total} entries (every cached answer) from Redis at"
    assert result.stdout.startswith(expected)
    assert stats(sim, **env) == {}


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Database 13 of the local Redis, its threatintel keys deleted afterwards."""
    import redis

    # A database of its own: clearing the default prefix must not touch anyone's cache.
    url = REDIS_URL.rsplit("/", 1)[0] + "/13"
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            client.ping()
    except (redis.RedisError, OSError):
        pytest.skip("no Redis at 127.0.0.1:6379: start one to run the Redis cache CLI tests")
    yield url
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match="threatintel:*", count=500))
        if keys:
            client.delete(*keys)


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604_800), ("12h", 43_200), ("30m", 1_800), ("2w", 1_209_600)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Ages are a number and a unit: s, m, h, d or w."""
    assert parse_duration(text) == seconds


def test_human_age() -> None:
    """Ages print as their largest whole unit."""
    assert [human_age(s) for s in (None, 5, 61, 7_200, 200_000)] == ["-", "5s", "1m", "2h", "2d"]


@pytest.mark.parametrize(
    "args", [["cache", "--help"], ["cache", "stats", "--help"], ["setup", "--help"]]
)
def test_new_commands_help_loads_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    """The help of the cache and setup commands loads no engine, settings, cache or Redis."""
    from test_lazy_imports import loaded_by

    loaded = loaded_by(tmp_path, *args)
    heavy = ("threatintel.engine", "threatintel.settings", "threatintel.cache", "redis")
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy)] == []


def test_clear_asks_on_a_terminal(sim: SimulatorServer, tmp_path: Path) -> None:
    """On a terminal, clear asks first; answering no (the default) removes nothing."""
    warm(sim, tmp_path)
    env = sim_env(sim, CACHE_DIR=os.environ["CACHE_DIR"])
    with PtyProcess(["cache", "clear", "--provider", "otx"], env=env, cwd=tmp_path) as term:
        term.expect("Remove AlienVault OTX's cached answers? [y/N]: ")
        term.send("")
        term.expect("nothing removed")
        assert term.wait() == 0
    assert stats(sim)["otx"]["entries"] == 3


@pytest.mark.parametrize("command", [["cache", "warm"], ["extract"]])
def test_no_file_on_a_terminal_is_a_usage_error(
    sim: SimulatorServer, tmp_path: Path, command: list[str]
) -> None:
    """With no FILE and stdin a terminal, the command says what to give instead of waiting."""
    with PtyProcess(command, env=sim_env(sim), cwd=tmp_path) as term:
        code = term.wait()
    assert code == 2, term.output
    assert "give a FILE, or pipe text in" in term.output


def test_warm_looks_up_while_the_input_is_still_coming(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """warm streams its input: the first indicators are answered before stdin ends (a feed
    dump is never held whole in memory)."""
    master, slave = pty.openpty()  # stderr a terminal: the progress bar shows the count
    env = {**os.environ, **sim_env(sim, CACHE_DIR=os.environ["CACHE_DIR"]), "TERM": "xterm"}
    with subprocess.Popen(
        [sys.executable, "-m", "threatintel", "cache", "warm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        cwd=tmp_path,
    ) as process:
        os.close(slave)
        try:
            assert process.stdin is not None and process.stdout is not None
            # More than the first block, which is checked before any lookup.
            process.stdin.write(b"45.142.212[.]61\n" + b"noise\n" * BLOCK)
            process.stdin.flush()
            shown = b""
            deadline = time.monotonic() + EXPECT_TIMEOUT
            while b"1/1" not in shown:  # answered while stdin is still open
                left = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([master], [], [], left)
                assert ready, f"no answer before the end of the input; stderr: {shown!r}"
                shown += os.read(master, 65536)
            process.stdin.write(b"185.220.101[.]4\n")
            process.stdin.close()
            assert process.wait(timeout=EXPECT_TIMEOUT) == 0
            assert process.stdout.read().decode().startswith("2 indicators:")
        finally:
            if process.poll() is None:
                process.kill()
            os.close(master)
