"""The default persistent cache: one SQLite file that survives restarts.

    async with SQLiteCache(Path("~/.cache/threatintel/threatintel.sqlite3").expanduser()) as cache:
        ...

One table, ``entries(key TEXT PRIMARY KEY, value BLOB, stored_at REAL, expires_at REAL)``, with
indexes on ``expires_at`` and ``stored_at``; the value is stored as the raw bytes. Beside it,
``totals`` holds one row, the sum of ``length(value)`` over the table, kept exact by triggers.
The file is opened on first use (parent directories are created) in WAL mode with
``synchronous=NORMAL``: a crash may lose the last few writes but never corrupts the file, which
is the right trade for a cache; a file that is corrupt all the same is moved aside and started
afresh (see ``threatintel._sqlite``).

The file stays bounded: when it is opened and every ``purge_every`` sets, expired rows are
deleted, then the oldest rows beyond ``max_entries``, then the oldest rows until the values
total ``max_bytes`` at most (every answer keeps its vendor body, compressed). Between purges
the file may run over by up to ``purge_every`` values.

Every sqlite3 or OS error becomes ``CacheError`` here, naming the file (never its contents).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Final

from threatintel._sqlite import SIDECARS, SQLiteWorker, transaction
from threatintel.cache.admin import CacheStats, LookupCounts, StatsBuilder, provider_prefix
from threatintel.cache.base import SYSTEM_CLOCK, CacheBase, CacheEntry, check_ttl
from threatintel.clock import Clock
from threatintel.errors import CacheError

DEFAULT_MAX_ENTRIES: Final = 200_000
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_PURGE_EVERY: Final = 500
#: The oldest rows are looked at this many at a time when trimming to ``max_bytes``.
TRIM_BATCH: Final = 500
LOGGER_NAME: Final = "threatintel.cache"
#: Keys per query in ``get_many``: below SQLite's oldest bound on parameters (999).
MAX_KEYS_PER_READ: Final = 500

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
    " stored_at REAL NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_expires_at ON entries (expires_at)",
    # Trimming to max_entries or max_bytes deletes the oldest rows; without this it would sort
    # the table.
    "CREATE INDEX IF NOT EXISTS entries_stored_at ON entries (stored_at)",
    # SUM(length(value)) is a scan of every row, and every CLI run purges on open; a total kept
    # by triggers costs one small update per write and makes the byte check one read. Triggers
    # live in the file, so every writer keeps it, whatever its version.
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0),"
    " value_bytes INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN"
    " UPDATE totals SET value_bytes = value_bytes + length(NEW.value); END",
    "CREATE TRIGGER IF NOT EXISTS entries_changed AFTER UPDATE OF value ON entries BEGIN"
    " UPDATE totals SET value_bytes = value_bytes - length(OLD.value) + length(NEW.value); END",
    "CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries BEGIN"
    " UPDATE totals SET value_bytes = value_bytes - length(OLD.value); END",
    # Lookups answered from the cache (hits) or not, per provider, for `cache stats`.
    "CREATE TABLE IF NOT EXISTS lookups (provider TEXT PRIMARY KEY, hits INTEGER NOT NULL,"
    " misses INTEGER NOT NULL, since REAL NOT NULL)",
)


class SQLiteCache(CacheBase):
    """A ``Cache`` in one SQLite file, bounded in rows and bytes and purged of expired entries."""

    __slots__ = (
        "_lookups",
        "_sets_since_purge",
        "_worker",
        "clock",
        "max_bytes",
        "max_entries",
        "path",
        "purge_every",
    )

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        purge_every: int = DEFAULT_PURGE_EVERY,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if purge_every < 1:
            raise ValueError("purge_every must be at least 1")
        self.path = Path(path)
        self.clock = clock
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.purge_every = purge_every
        self._sets_since_purge = 0
        self._lookups = LookupCounts()
        self._worker = SQLiteWorker(
            self.path,
            label="SQLite cache",
            error=CacheError,
            prepare=self._prepare,
            logger=LOGGER_NAME,
            thread_name="threatintel-sqlite",
            now=clock.time,
        )

    @property
    def label(self) -> str:
        """What messages call this cache: ``SQLite file <path>``."""
        return f"SQLite file {self.path}"

    # -- the Cache protocol ----------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        return await self._worker.run(_get, key, self.clock.time())

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The live entries among ``keys``, read in one trip to the worker thread."""
        if not keys:
            return {}
        return await self._worker.run(_get_many, list(dict.fromkeys(keys)), self.clock.time())

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        now = self.clock.time()
        await self._worker.run(self._set, key, bytes(value), now, now + check_ttl(ttl))

    async def delete(self, key: str) -> None:
        await self._worker.run(_delete, key)

    async def aclose(self) -> None:
        with suppress(CacheError):  # counts are worth a try, not a failed close
            await self.save_lookups()
        await self._worker.aclose()

    # -- CacheAdmin and HitCounter -----------------------------------------------------------

    async def stats(self) -> CacheStats:
        builder, counts, since = await self._worker.run(_stats, self.clock.time())
        unsaved = [(name, h, m) for name, (h, m) in self._lookups.peek().items()]
        return builder.build(
            self.label, counts + unsaved, file_bytes=self._file_bytes(), counting_since=since
        )

    async def remove(self, *, provider: str | None = None, older_than: float | None = None) -> int:
        if provider is not None:
            provider_prefix(provider)  # ValueError for a name no key can hold
        cutoff = None if older_than is None else self.clock.time() - older_than
        if older_than is None:
            self._lookups.forget(provider)
        return await self._worker.run(_remove, provider, cutoff)

    def note_lookup(self, provider: str, *, hit: bool) -> int:
        return self._lookups.add(provider, hit=hit)

    async def save_lookups(self) -> None:
        async def write(counts: dict[str, tuple[int, int]]) -> None:
            await self._worker.run(_save_lookups, counts, self.clock.time())

        await self._lookups.save(write)

    def _file_bytes(self) -> int:
        total = 0
        for suffix in ("", *SIDECARS):
            with suppress(OSError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    # -- maintenance, also useful to operators -----------------------------------------------

    async def purge(self) -> int:
        """Delete expired rows and trim to ``max_entries`` and ``max_bytes`` now; returns the
        rows deleted."""
        return await self._worker.run(self._purge, self.clock.time())

    async def count(self) -> int:
        """Rows in the file, expired ones not yet purged included."""
        return await self._worker.run(_count)

    async def value_bytes(self) -> int:
        """Bytes of values in the file, expired ones not yet purged included."""
        return await self._worker.run(_value_bytes)

    # -- on the worker thread ----------------------------------------------------------------

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # One transaction, so that no process ever sees the triggers without the total's row.
        with transaction(conn):
            for statement in _SCHEMA:
                conn.execute(statement)
            if conn.execute("SELECT 1 FROM totals").fetchone() is None:
                # A file written before the total existed: count its values once.
                conn.execute(
                    "INSERT INTO totals (id, value_bytes)"
                    " SELECT 0, coalesce(sum(length(value)), 0) FROM entries"
                )
        # A CLI run is short and may never reach purge_every sets.
        self._purge(conn, self.clock.time())

    def _set(
        self, conn: sqlite3.Connection, key: str, value: bytes, stored_at: float, expires_at: float
    ) -> None:
        conn.execute(
            "INSERT INTO entries (key, value, stored_at, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, stored_at = excluded.stored_at,"
            " expires_at = excluded.expires_at",
            (key, value, stored_at, expires_at),
        )
        self._sets_since_purge += 1
        if self._sets_since_purge >= self.purge_every:
            self._purge(conn, stored_at)

    def _purge(self, conn: sqlite3.Connection, now: float) -> int:
        self._sets_since_purge = 0
        # One transaction: one commit instead of one per statement, and nobody inserts an
        # older row between choosing the oldest rows and deleting them.
        with transaction(conn):
            deleted = conn.execute("DELETE FROM entries WHERE expires_at <= ?", (now,)).rowcount
            excess = _count(conn) - self.max_entries
            if excess > 0:
                deleted += conn.execute(
                    "DELETE FROM entries WHERE key IN"
                    " (SELECT key FROM entries ORDER BY stored_at LIMIT ?)",
                    (excess,),
                ).rowcount
            deleted += self._trim_bytes(conn)
        return max(0, deleted)

    def _trim_bytes(self, conn: sqlite3.Connection) -> int:
        """Delete the oldest rows until the values total ``max_bytes`` at most."""
        # SQLite reuses the pages freed here for later writes, so once the cache is full the
        # file stops growing (it does not shrink: that would take a VACUUM, a rewrite of the
        # whole file, for space about to be filled again).
        excess = _value_bytes(conn) - self.max_bytes
        deleted = 0
        while excess > 0:
            # Sizes come from the stored_at index and each row's header: length() of a blob
            # does not read the blob.
            sizes = conn.execute(
                "SELECT length(value) FROM entries ORDER BY stored_at, rowid LIMIT ?",
                (TRIM_BATCH,),
            ).fetchall()
            if not sizes:
                break
            doomed = 0
            for (size,) in sizes:
                doomed += 1
                excess -= int(size)
                if excess <= 0:
                    break
            deleted += conn.execute(
                "DELETE FROM entries WHERE rowid IN"
                " (SELECT rowid FROM entries ORDER BY stored_at, rowid LIMIT ?)",
                (doomed,),
            ).rowcount
        return deleted


def _get(conn: sqlite3.Connection, key: str, now: float) -> CacheEntry | None:
    row = conn.execute(
        "SELECT value, stored_at, expires_at FROM entries WHERE key = ?", (key,)
    ).fetchone()
    if row is None or row[2] <= now:
        # An expired row is left for the next purge: deleting it here would turn a read into a
        # write that contends for the file's lock.
        return None
    return CacheEntry(bytes(row[0]), float(row[1]), float(row[2]))


def _get_many(conn: sqlite3.Connection, keys: list[str], now: float) -> dict[str, CacheEntry]:
    found: dict[str, CacheEntry] = {}
    for start in range(0, len(keys), MAX_KEYS_PER_READ):
        chunk = keys[start : start + MAX_KEYS_PER_READ]
        rows = conn.execute(
            "SELECT key, value, stored_at, expires_at FROM entries"
            f" WHERE key IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for key, value, stored_at, expires_at in rows:
            if expires_at > now:  # expired rows are left for the purge, as in _get
                found[str(key)] = CacheEntry(bytes(value), float(stored_at), float(expires_at))
    return found


def _delete(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM entries WHERE key = ?", (key,))


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


def _value_bytes(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value_bytes FROM totals").fetchone()[0])


def _stats(
    conn: sqlite3.Connection, now: float
) -> tuple[StatsBuilder, list[tuple[str, int, int]], float | None]:
    builder = StatsBuilder()
    # length() of a blob reads the row's header, not the blob.
    rows = conn.execute(
        "SELECT key, length(value), stored_at FROM entries WHERE expires_at > ?", (now,)
    )
    for key, size, stored_at in rows:
        builder.add(str(key), int(size), float(stored_at))
    counts = [
        (str(name), int(hits), int(misses))
        for name, hits, misses in conn.execute("SELECT provider, hits, misses FROM lookups")
    ]
    since = conn.execute("SELECT min(since) FROM lookups").fetchone()[0]
    return builder, counts, None if since is None else float(since)


def _remove(conn: sqlite3.Connection, provider: str | None, cutoff: float | None) -> int:
    where: list[str] = []
    params: list[object] = []
    if provider is not None:
        prefix = provider_prefix(provider)
        # A range of the primary key: ':' + 1 is ';', so this is every key with the prefix.
        where.append("key >= ? AND key < ?")
        params += [prefix, prefix[:-1] + ";"]
    if cutoff is not None:
        where.append("stored_at <= ?")
        params.append(cutoff)
    with transaction(conn):
        sql = "DELETE FROM entries" + (" WHERE " + " AND ".join(where) if where else "")
        removed = conn.execute(sql, params).rowcount
        if cutoff is None:
            if provider is None:
                conn.execute("DELETE FROM lookups")
            else:
                conn.execute("DELETE FROM lookups WHERE provider = ?", (provider,))
    return max(0, removed)


def _save_lookups(conn: sqlite3.Connection, counts: dict[str, tuple[int, int]], now: float) -> None:
    with transaction(conn):
        conn.executemany(
            "INSERT INTO lookups (provider, hits, misses, since) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (provider) DO UPDATE SET"
            " hits = hits + excluded.hits, misses = misses + excluded.misses",
            [(name, hits, misses, now) for name, (hits, misses) in counts.items()],
        )
