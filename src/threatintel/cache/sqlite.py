"""The default persistent cache: one SQLite file that survives restarts.

    async with SQLiteCache(Path("~/.cache/threatintel/threatintel.sqlite3").expanduser()) as cache:
        ...

One table, ``entries(key TEXT PRIMARY KEY, value BLOB, stored_at REAL, expires_at REAL)``, with
indexes on ``expires_at`` and ``stored_at``; the value is stored as the raw bytes. The file is
opened on first use (parent directories are created) in WAL mode with ``synchronous=NORMAL``:
a crash may lose the last few writes but never corrupts the file, which is the right trade for
a cache. Expired rows are purged when the file is opened and every ``purge_every`` sets; at the
same moments, rows beyond ``max_entries`` are deleted oldest first, so the file stays bounded.

Every sqlite3 or OS error becomes ``CacheError`` here, naming the file (never its contents).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from threatintel.cache.base import SYSTEM_CLOCK, CacheBase, CacheEntry, check_ttl
from threatintel.clock import Clock
from threatintel.errors import CacheError

DEFAULT_MAX_ENTRIES: Final = 200_000
DEFAULT_PURGE_EVERY: Final = 500
#: How long a statement waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS: Final = 5.0

_T = TypeVar("_T")

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
    " stored_at REAL NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_expires_at ON entries (expires_at)",
    # Trimming to max_entries deletes the oldest rows; without this it would sort the table.
    "CREATE INDEX IF NOT EXISTS entries_stored_at ON entries (stored_at)",
)


class SQLiteCache(CacheBase):
    """A ``Cache`` in one SQLite file, bounded in rows and purged of expired entries."""

    __slots__ = (
        "_closed",
        "_conn",
        "_executor",
        "_sets_since_purge",
        "clock",
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
        purge_every: int = DEFAULT_PURGE_EVERY,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if purge_every < 1:
            raise ValueError("purge_every must be at least 1")
        self.path = Path(path)
        self.clock = clock
        self.max_entries = max_entries
        self.purge_every = purge_every
        self._conn: sqlite3.Connection | None = None
        self._sets_since_purge = 0
        self._closed = False
        # One dedicated worker thread owns the connection for its whole life: sqlite3 objects
        # must stay on the thread that made them, calls are serialised without a lock, and a
        # slow disk never occupies the event loop's default executor that other code shares.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threatintel-sqlite")

    # -- the Cache protocol ----------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        return await self._run(self._get, key, self.clock.time())

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        now = self.clock.time()
        await self._run(self._set, key, bytes(value), now, now + check_ttl(ttl))

    async def delete(self, key: str) -> None:
        await self._run(self._delete, key)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._translated, self._close
            )
        finally:
            self._executor.shutdown(wait=False)

    # -- maintenance, also useful to operators -----------------------------------------------

    async def purge(self) -> int:
        """Delete expired rows and trim to ``max_entries`` now; returns the rows deleted."""
        return await self._run(self._purge, self.clock.time())

    async def count(self) -> int:
        """Rows in the file, expired ones not yet purged included."""
        return await self._run(self._count)

    # -- the worker thread ---------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            raise CacheError(f"SQLite cache {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._translated, fn, *args)

    def _translated(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run ``fn`` on the worker thread; the one place sqlite3 and OS errors are translated."""
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(self._describe(exc)) from exc

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, sqlite3.DatabaseError) and any(
            sign in str(exc) for sign in ("not a database", "malformed")
        ):
            return f"SQLite cache {self.path} is corrupt or not a database; delete it to start over"
        if isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
            return f"SQLite cache {self.path} cannot be created: {reason}"
        return f"SQLite cache {self.path} failed: {exc}"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): every statement is its own short transaction, so
        # the write lock is never held between calls and other processes can share the file.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
            self._purge(self.clock.time())
        except BaseException:
            self._conn = None
            conn.close()
            raise
        return conn

    def _get(self, key: str, now: float) -> CacheEntry | None:
        row = (
            self._connection()
            .execute("SELECT value, stored_at, expires_at FROM entries WHERE key = ?", (key,))
            .fetchone()
        )
        if row is None or row[2] <= now:
            # An expired row is left for the next purge: deleting it here would turn a read into
            # a write that contends for the file's lock.
            return None
        return CacheEntry(bytes(row[0]), float(row[1]), float(row[2]))

    def _set(self, key: str, value: bytes, stored_at: float, expires_at: float) -> None:
        self._connection().execute(
            "INSERT INTO entries (key, value, stored_at, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, stored_at = excluded.stored_at,"
            " expires_at = excluded.expires_at",
            (key, value, stored_at, expires_at),
        )
        self._sets_since_purge += 1
        if self._sets_since_purge >= self.purge_every:
            self._purge(stored_at)

    def _delete(self, key: str) -> None:
        self._connection().execute("DELETE FROM entries WHERE key = ?", (key,))

    def _purge(self, now: float) -> int:
        conn = self._connection()
        self._sets_since_purge = 0
        deleted = conn.execute("DELETE FROM entries WHERE expires_at <= ?", (now,)).rowcount
        excess = self._count() - self.max_entries
        if excess > 0:
            deleted += conn.execute(
                "DELETE FROM entries WHERE key IN"
                " (SELECT key FROM entries ORDER BY stored_at LIMIT ?)",
                (excess,),
            ).rowcount
        return max(0, deleted)

    def _count(self) -> int:
        row = self._connection().execute("SELECT count(*) FROM entries").fetchone()
        return int(row[0])

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
