"""SQLiteCache specifics: it survives restarts, stays bounded, and fails as CacheError."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from threatintel.cache import SQLiteCache
from threatintel.clock import VirtualClock
from threatintel.errors import CacheError


async def test_entries_survive_a_restart(tmp_path: Path, clock: VirtualClock) -> None:
    """A second cache on the same file, after the first closed, sees the entry and its times."""
    path = tmp_path / "nested" / "dirs" / "cache.sqlite3"
    async with SQLiteCache(path, clock=clock) as first:
        await first.set("k", b"kept", ttl=3_600)
    stored_at = clock.time()
    clock.advance(60)
    async with SQLiteCache(path, clock=clock) as second:
        entry = await second.get("k")
    assert entry is not None
    assert entry.value == b"kept"
    assert entry.stored_at == stored_at
    assert entry.expires_at == stored_at + 3_600


async def test_two_caches_share_one_file(tmp_path: Path, clock: VirtualClock) -> None:
    """Writes through one connection are read through another at once (as between processes)."""
    path = tmp_path / "cache.sqlite3"
    async with SQLiteCache(path, clock=clock) as writer, SQLiteCache(path, clock=clock) as reader:
        await writer.set("k", b"v", ttl=60)
        entry = await reader.get("k")
    assert entry is not None
    assert entry.value == b"v"


async def test_file_uses_wal_journal(tmp_path: Path, clock: VirtualClock) -> None:
    """The database is put in WAL mode, so readers do not block the writer."""
    path = tmp_path / "cache.sqlite3"
    async with SQLiteCache(path, clock=clock) as cache:
        await cache.set("k", b"v", ttl=60)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_purge_deletes_expired_rows(tmp_path: Path, clock: VirtualClock) -> None:
    """A purge removes every expired row and keeps the live ones."""
    async with SQLiteCache(tmp_path / "c.db", clock=clock) as cache:
        for i in range(20):
            await cache.set(f"short{i}", b"x", ttl=10)
        for i in range(5):
            await cache.set(f"long{i}", b"x", ttl=1_000)
        clock.advance(100)
        assert await cache.count() == 25
        assert await cache.purge() == 20
        assert await cache.count() == 5


async def test_expired_rows_are_purged_every_purge_every_sets(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """Without anyone calling purge, the purge_every-th set clears out expired rows."""
    async with SQLiteCache(tmp_path / "c.db", clock=clock, purge_every=10) as cache:
        for i in range(9):
            await cache.set(f"old{i}", b"x", ttl=1)
        clock.advance(5)
        assert await cache.count() == 9
        await cache.set("fresh", b"x", ttl=60)
        assert await cache.count() == 1


async def test_expired_rows_are_purged_on_open(tmp_path: Path, clock: VirtualClock) -> None:
    """Reopening a file after its entries expired starts from a purged table."""
    path = tmp_path / "c.db"
    async with SQLiteCache(path, clock=clock) as cache:
        await cache.set("old", b"x", ttl=1)
        await cache.set("live", b"x", ttl=1_000)
    clock.advance(10)
    async with SQLiteCache(path, clock=clock) as cache:
        assert await cache.count() == 1


async def test_row_count_stays_within_max_entries(tmp_path: Path, clock: VirtualClock) -> None:
    """After many sets the table holds max_entries rows at most, the newest ones."""
    async with SQLiteCache(tmp_path / "c.db", clock=clock, max_entries=50, purge_every=10) as cache:
        for i in range(500):
            await cache.set(f"k{i}", b"x", ttl=10_000)
            clock.advance(1)
        assert await cache.count() == 50
        assert await cache.get("k499") is not None
        assert await cache.get("k450") is not None
        assert await cache.get("k449") is None


async def test_corrupt_file_raises_cache_error(tmp_path: Path, clock: VirtualClock) -> None:
    """A file that is not a database gives CacheError naming it, never a sqlite3 error."""
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database\x00\xff" * 200)
    async with SQLiteCache(path, clock=clock) as cache:
        with pytest.raises(CacheError, match="corrupt") as caught:
            await cache.get("k")
        with pytest.raises(CacheError):
            await cache.set("k", b"v", ttl=60)
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value, sqlite3.Error)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


async def test_uncreatable_directory_raises_cache_error(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """A parent 'directory' that is really a file gives CacheError, not OSError."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should be")
    path = blocker / "sub" / "cache.sqlite3"
    async with SQLiteCache(path, clock=clock) as cache:
        with pytest.raises(CacheError, match="cannot be created") as caught:
            await cache.set("k", b"v", ttl=60)
    assert str(path) in str(caught.value)


async def test_unopenable_path_raises_cache_error(tmp_path: Path, clock: VirtualClock) -> None:
    """A path SQLite cannot open as a file (here, a directory) gives CacheError."""
    path = tmp_path / "is-a-directory"
    path.mkdir()
    async with SQLiteCache(path, clock=clock) as cache:
        with pytest.raises(CacheError, match="is-a-directory"):
            await cache.get("k")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root can write to read-only directories; needs an unprivileged user",
)
async def test_read_only_directory_raises_cache_error(tmp_path: Path, clock: VirtualClock) -> None:
    """A directory the process may not write gives CacheError when the file is first created."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        async with SQLiteCache(locked / "cache.sqlite3", clock=clock) as cache:
            with pytest.raises(CacheError):
                await cache.set("k", b"v", ttl=60)
    finally:
        locked.chmod(0o700)


async def test_closed_cache_raises_cache_error(tmp_path: Path, clock: VirtualClock) -> None:
    """Using a cache after aclose is a CacheError; closing twice is harmless."""
    cache = SQLiteCache(tmp_path / "c.db", clock=clock)
    await cache.set("k", b"v", ttl=60)
    await cache.aclose()
    await cache.aclose()
    with pytest.raises(CacheError, match="closed"):
        await cache.get("k")


def test_limits_must_be_positive(tmp_path: Path) -> None:
    """Zero max_entries or purge_every is a configuration mistake."""
    with pytest.raises(ValueError, match="max_entries"):
        SQLiteCache(tmp_path / "c.db", max_entries=0)
    with pytest.raises(ValueError, match="purge_every"):
        SQLiteCache(tmp_path / "c.db", purge_every=0)
