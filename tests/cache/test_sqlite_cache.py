"""SQLiteCache specifics: it survives restarts, stays bounded, heals a corrupt file, and fails
as CacheError."""

from __future__ import annotations

import logging
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


def stored_bytes(path: Path) -> tuple[int, int]:
    """The values' total as the cache keeps it, and as summed afresh from the rows."""
    conn = sqlite3.connect(path)
    try:
        kept = conn.execute("SELECT value_bytes FROM totals").fetchone()[0]
        summed = conn.execute("SELECT coalesce(sum(length(value)), 0) FROM entries").fetchone()[0]
        return int(kept), int(summed)
    finally:
        conn.close()


async def test_values_stay_within_max_bytes(tmp_path: Path, clock: VirtualClock) -> None:
    """After many large sets the values total max_bytes at most, and the newest ones stay."""
    path = tmp_path / "c.db"
    async with SQLiteCache(path, clock=clock, max_bytes=10_000, purge_every=10) as cache:
        for i in range(200):
            await cache.set(f"k{i}", bytes([i % 256]) * 1_000, ttl=10_000)
            clock.advance(1)
        await cache.purge()
        assert await cache.value_bytes() == 10_000
        assert await cache.count() == 10
        assert await cache.get("k199") is not None
        assert await cache.get("k190") is not None
        assert await cache.get("k189") is None
    assert stored_bytes(path) == (10_000, 10_000)


async def test_trimming_bytes_deletes_just_enough_of_the_oldest(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """A purge over max_bytes deletes the oldest rows until the total fits, and no more."""
    async with SQLiteCache(tmp_path / "c.db", clock=clock, max_bytes=2_500) as cache:
        for i, size in enumerate([1_000, 100, 100, 800, 1_000, 700]):
            await cache.set(f"k{i}", b"x" * size, ttl=10_000)
            clock.advance(1)
        assert await cache.value_bytes() == 3_700
        assert await cache.purge() == 3
        assert await cache.value_bytes() == 2_500
        assert [await cache.get(f"k{i}") is not None for i in range(6)] == [False] * 3 + [True] * 3


async def test_a_trim_larger_than_one_batch(tmp_path: Path, clock: VirtualClock) -> None:
    """Trimming works through the oldest rows batch after batch until the total fits."""
    async with SQLiteCache(
        tmp_path / "c.db", clock=clock, max_bytes=100, purge_every=5_000
    ) as cache:
        for i in range(1_200):
            await cache.set(f"k{i}", b"xy", ttl=10_000)
            clock.advance(0.001)
        assert await cache.purge() == 1_150
        assert await cache.count() == 50
        assert await cache.get("k1199") is not None
        assert await cache.get("k1149") is None


async def test_byte_total_follows_every_kind_of_write(tmp_path: Path, clock: VirtualClock) -> None:
    """Inserts, overwrites, deletes and purges all keep the stored total equal to the real sum."""
    path = tmp_path / "c.db"
    async with SQLiteCache(path, clock=clock, max_entries=30, purge_every=7) as cache:
        for i in range(100):
            await cache.set(f"k{i % 40}", b"v" * (i * 7 % 300), ttl=5 + i % 50)
            if i % 3 == 0:
                await cache.delete(f"k{(i * 11) % 40}")
            clock.advance(1)
        await cache.purge()
        kept = await cache.value_bytes()
    assert stored_bytes(path) == (kept, kept)


async def test_an_older_file_gets_its_byte_total_on_open(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """A file written before the byte total existed is counted once when first opened."""
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "CREATE TABLE entries (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
            " stored_at REAL NOT NULL, expires_at REAL NOT NULL)"
        )
        now = clock.time()
        conn.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?)",
            [(f"k{i}", b"x" * 100, now, now + 60) for i in range(5)],
        )
        conn.commit()
    finally:
        conn.close()
    async with SQLiteCache(path, clock=clock) as cache:
        assert await cache.value_bytes() == 500
        await cache.set("k0", b"y" * 10, ttl=60)
        assert await cache.value_bytes() == 410


GARBAGE = b"this is not a database\x00\xff" * 200


def corrupt_copies(path: Path) -> list[str]:
    """The names of the copies set aside beside ``path``, oldest first."""
    return sorted(p.name for p in path.parent.glob(path.name + ".corrupt-*"))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_corrupt_file_is_set_aside_and_started_afresh(
    tmp_path: Path, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database is kept aside, one warning names it, and the cache works."""
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(GARBAGE)
    async with SQLiteCache(path, clock=clock) as cache:
        assert await cache.get("k") is None
        await cache.set("k", b"v", ttl=60)
        entry = await cache.get("k")
    assert entry is not None
    assert entry.value == b"v"
    # The clock names the copy: 1_700_000_000 is 2023-11-14 22:13:20 UTC.
    aside = tmp_path / "cache.sqlite3.corrupt-20231114T221320.000000Z"
    assert corrupt_copies(path) == [aside.name]
    assert aside.read_bytes() == GARBAGE
    assert warnings(caplog) == [
        f"SQLite cache {path} was corrupt or not a database; moved it to {aside}"
        " and started a fresh file"
    ]


async def test_a_healed_file_is_a_plain_cache_for_the_next_opener(
    tmp_path: Path, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After one cache healed the file, later ones open it with no warning and no new copy."""
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(GARBAGE)
    async with SQLiteCache(path, clock=clock) as first:
        await first.set("k", b"v", ttl=60)
    async with SQLiteCache(path, clock=clock) as second:
        assert await second.get("k") is not None
    assert len(corrupt_copies(path)) == 1
    assert len(warnings(caplog)) == 1


async def test_a_malformed_table_is_set_aside_too(tmp_path: Path, clock: VirtualClock) -> None:
    """A database whose pages are damaged (not just its header) is healed when it is opened."""
    path = tmp_path / "cache.sqlite3"
    async with SQLiteCache(path, clock=clock) as cache:
        for i in range(50):
            await cache.set(f"k{i}", b"x" * 3_000, ttl=60)
    damaged = bytearray(path.read_bytes())
    damaged[2 * 4096 :] = b"\xff" * (len(damaged) - 2 * 4096)
    path.write_bytes(bytes(damaged))
    async with SQLiteCache(path, clock=clock) as cache:
        assert await cache.count() == 0
        await cache.set("k", b"v", ttl=60)
    assert len(corrupt_copies(path)) == 1


async def test_leftover_sidecars_move_with_the_corrupt_file(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """A sidecar SQLite left beside the corrupt file goes aside under the copy's name."""
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(GARBAGE)
    # SQLite deletes a leftover -wal or -journal itself on close, but not a lone -shm.
    Path(f"{path}-shm").write_bytes(b"an old shared-memory index")
    async with SQLiteCache(path, clock=clock) as cache:
        await cache.set("k", b"v", ttl=60)
    (copy, sidecar) = corrupt_copies(path)
    assert sidecar == f"{copy}-shm"
    assert (tmp_path / sidecar).read_bytes() == b"an old shared-memory index"


async def test_only_the_newest_three_corrupt_copies_are_kept(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """Each heal keeps one more copy, but older ones beyond three are deleted with sidecars."""
    path = tmp_path / "cache.sqlite3"
    made = []
    for _ in range(5):
        path.write_bytes(GARBAGE)
        async with SQLiteCache(path, clock=clock) as cache:
            await cache.count()
        made.extend(corrupt_copies(path)[-1:])
        Path(f"{tmp_path / made[-1]}-wal").write_bytes(b"wal")
        clock.advance(86_400)
    assert len(set(made)) == 5
    assert corrupt_copies(path) == sorted(made[2:] + [f"{name}-wal" for name in made[2:]])


async def test_a_corrupt_file_that_cannot_be_moved_raises_cache_error(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """When the copy's name is taken by a directory, the file stays and CacheError says why."""
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(GARBAGE)
    blocker = tmp_path / "cache.sqlite3.corrupt-20231114T221320.000000Z"
    blocker.mkdir()
    (blocker / "keeps it from being replaced").write_text("x")
    async with SQLiteCache(path, clock=clock) as cache:
        with pytest.raises(CacheError, match="corrupt or not a database and cannot be moved"):
            await cache.get("k")
    assert path.read_bytes() == GARBAGE


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
    """Zero max_entries, max_bytes or purge_every is a configuration mistake."""
    with pytest.raises(ValueError, match="max_entries"):
        SQLiteCache(tmp_path / "c.db", max_entries=0)
    with pytest.raises(ValueError, match="max_bytes"):
        SQLiteCache(tmp_path / "c.db", max_bytes=0)
    with pytest.raises(ValueError, match="purge_every"):
        SQLiteCache(tmp_path / "c.db", purge_every=0)
