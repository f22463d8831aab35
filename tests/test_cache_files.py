"""Where the cache and quota files live, and that only their owner can read them."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import sim_settings
from threatintel.cache import SQLiteCache
from threatintel.cli import app
from threatintel.clock import VirtualClock
from threatintel.engine import Engine
from threatintel.settings import Settings, default_cache_dir
from threatintel.simulator import SimulatorServer

runner = CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a given umask, and put the process's own back afterwards."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


# --- one cache per user and machine -------------------------------------------------------


def test_cache_dir_defaults_to_the_user_cache_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without CACHE_DIR the cache lives in the platform's user cache dir, whatever the cwd."""
    monkeypatch.delenv("CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "threatintel"
    first = Settings.load().cache_dir
    monkeypatch.chdir(tmp_path)
    assert Settings.load().cache_dir == first == tmp_path / "xdg" / "threatintel"


def test_cache_dir_still_overrides_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CACHE_DIR, when set, is where the files go."""
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "elsewhere"))
    assert Settings.load().cache_dir == tmp_path / "elsewhere"


def test_tests_never_use_the_real_user_cache_dir() -> None:
    """The isolated test environment points the cache (and the user cache dir) at tmp dirs."""
    real = Path.home() / ".cache"
    assert not Settings.load().cache_dir.is_relative_to(real)
    assert not default_cache_dir().is_relative_to(real)


def test_config_shows_the_resolved_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`threatintel config` prints the directory in use, not a placeholder."""
    monkeypatch.delenv("CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["CACHE_DIR"] == str(tmp_path / "xdg" / "threatintel")


# --- private files ------------------------------------------------------------------------


async def test_a_fresh_cache_dir_is_private(
    sim: SimulatorServer, tmp_path: Path, umask: int
) -> None:
    """Every directory made for the cache is 0700 and every database file 0600, -wal/-shm too."""
    cache_dir = tmp_path / "missing" / "nested" / "threatintel"
    async with Engine(sim_settings(sim, cache_backend="sqlite", cache_dir=cache_dir)) as engine:
        await engine.analyze(["45.142.212.61"])
        # While the engine is open: SQLite removes -wal and -shm when the last user closes.
        files = sorted(p.name for p in cache_dir.iterdir())
        assert files == [
            "quota.sqlite3",
            "quota.sqlite3-shm",
            "quota.sqlite3-wal",
            "threatintel.sqlite3",
            "threatintel.sqlite3-shm",
            "threatintel.sqlite3-wal",
        ]
        assert {name: mode(cache_dir / name) for name in files} == dict.fromkeys(files, 0o600)
    made = [tmp_path / "missing", tmp_path / "missing" / "nested", cache_dir]
    assert [mode(directory) for directory in made] == [0o700] * 3


async def test_a_stricter_umask_is_respected(tmp_path: Path) -> None:
    """A umask that takes away more than group and others is applied, never overridden."""
    if os.geteuid() != 0:
        pytest.skip("only root can write into a 0500 directory made under this umask")
    previous = os.umask(0o277)  # owner read-only files, owner r-x directories
    try:
        cache = SQLiteCache(tmp_path / "strict" / "cache.sqlite3", clock=VirtualClock(0))
        try:
            await cache.set("k", b"v", ttl=60)
            assert mode(tmp_path / "strict" / "cache.sqlite3") == 0o400
        finally:
            await cache.aclose()
        assert mode(tmp_path / "strict") == 0o500
    finally:
        os.umask(previous)


async def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    """A directory the operator made (say, shared with a group) is used as it is."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o750)
    async with SQLiteCache(shared / "cache.sqlite3", clock=VirtualClock(0)) as cache:
        await cache.set("k", b"v", ttl=60)
    assert mode(shared) == 0o750
    assert mode(shared / "cache.sqlite3") == 0o600


async def test_a_corrupt_file_set_aside_is_private(tmp_path: Path) -> None:
    """A world-readable corrupt file moved aside becomes 0600, like the fresh file beside it."""
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database, " * 100)
    path.chmod(0o644)
    # SQLite deletes a leftover -wal itself on close, but not a lone -shm.
    sidecar = tmp_path / "cache.sqlite3-shm"
    sidecar.write_bytes(b"an old shared-memory index")
    sidecar.chmod(0o644)
    async with SQLiteCache(path, clock=VirtualClock(1_700_000_000)) as cache:
        await cache.set("k", b"v", ttl=60)
        aside = sorted(tmp_path.glob("cache.sqlite3.corrupt-*"))
        assert [p.name.endswith("-shm") for p in aside] == [False, True]
        assert [mode(p) for p in aside] == [0o600, 0o600]
        assert mode(path) == 0o600
