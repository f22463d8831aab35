"""The persistent quota store: one SQLite file that every process on the machine counts in.

    async with SQLiteQuotaStore(Path("~/.local/state/threatintel/quota.sqlite3").expanduser()) as s:
        limiter = RateLimiter("virustotal", keys, windows, store=s, clock=SystemClock())
        ...

The default deployment has no Redis and the CLI is a short-lived process: with the memory store
five ``threatintel analyze`` runs in a minute would each spend VirusTotal's 4/minute afresh.
Here every run and every process on the machine spends one budget, and a later
``threatintel quota`` reads what is left of it.

Schema (times are the caller's epoch seconds, never SQLite's clock, as for the other stores):

    grants(bucket, window_name, expires_at)      sliding windows: one row per grant, indexed
    counters(bucket, window_name, window_id,     fixed windows: one counter per window id,
             count, resets_at)                   primary key (bucket, window_name, window_id)
    blocks(bucket PRIMARY KEY, until)            no grant before ``until`` (a 429 correction)
    newest(bucket PRIMARY KEY, at, keep_until)   the newest instant the bucket granted at
    limits(bucket PRIMARY KEY, value, until)     limits the vendor stated (JSON), kept a while
    grant_rows(bucket, window_name, rows)        rows of ``grants`` per window, kept by triggers

Each acquire is one ``BEGIN IMMEDIATE`` transaction, and SQLite lets one writer at a time into a
file across processes: checking the block and every window and then recording the grant in all
of them is atomic, as the memory store's single step and the Redis store's script are. The same
history gets the same ``Grant`` as from MemoryQuotaStore, "time never runs backwards per bucket"
included; the one difference is deliberate: a caller whose clock is behind an earlier caller's
still counts grants the memory store has already dropped (see ``CLOCK_MARGIN``).

Rows are deleted once they are ``CLOCK_MARGIN`` past use: a bucket's own on each of its
acquires, every bucket's on an instance's first acquire and every ``purge_every`` after, so the
file stays a few rows per key. A file found corrupt when opened is moved aside and started
afresh (see ``threatintel._sqlite``): losing the counts of the last minutes costs at most a few
early requests, while falling back to a per-process budget would let every short CLI run spend
it again. Every other sqlite3 or OS error becomes QuotaStoreUnavailable naming the file (the
limiter then counts locally); bucket names hold only key fingerprints.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from threatintel._sqlite import SQLiteWorker, transaction
from threatintel.quota.base import (
    BLOCKED,
    MAX_BLOCK,
    Grant,
    QuotaStoreUnavailable,
    Window,
    WindowUsage,
    block_end,
    decode_limits,
    encode_limits,
)

#: How long an acquire waits for another process's transaction before the store counts as down.
BUSY_TIMEOUT_SECONDS: Final = 5.0
#: Rows outlive their use by this much, so a caller whose clock reads a little earlier (another
#: process that read the time just before this one wrote) still counts every grant it should.
CLOCK_MARGIN: Final = 60.0
#: Every this many acquires an instance also deletes the stale rows of buckets no longer used.
DEFAULT_PURGE_EVERY: Final = 500
LOGGER_NAME: Final = "threatintel.quota"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS grants (bucket TEXT NOT NULL, window_name TEXT NOT NULL,"
    " expires_at REAL NOT NULL)",
    # Counting a window's live grants and finding the one that frees a slot are range scans.
    "CREATE INDEX IF NOT EXISTS grants_by_window ON grants (bucket, window_name, expires_at)",
    "CREATE TABLE IF NOT EXISTS counters (bucket TEXT NOT NULL, window_name TEXT NOT NULL,"
    " window_id INTEGER NOT NULL, count INTEGER NOT NULL, resets_at REAL NOT NULL,"
    " PRIMARY KEY (bucket, window_name, window_id))",
    "CREATE TABLE IF NOT EXISTS blocks (bucket TEXT PRIMARY KEY, until REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS newest (bucket TEXT PRIMARY KEY, at REAL NOT NULL,"
    " keep_until REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS limits (bucket TEXT PRIMARY KEY, value TEXT NOT NULL,"
    " until REAL NOT NULL)",
)
#: The rows of ``grants`` per sliding window, live or not, kept exact by triggers (which live in
#: the file, so every writer keeps them, whatever its version). Counting a window's live grants
#: walks all of them: an hour window (OTX's) at a paid key's pace holds tens of thousands, and
#: counting them on every acquire made each one cost milliseconds on the store's one thread, so
#: a 100,000-indicator run slowed down as it went (bench/run.py rss_100k, ~4,300/min). An
#: acquire now counts only when this total reaches the window's limit; below it, the window
#: cannot be full.
_GRANT_ROWS: Final = (
    "CREATE TABLE IF NOT EXISTS grant_rows (bucket TEXT NOT NULL, window_name TEXT NOT NULL,"
    " rows INTEGER NOT NULL, PRIMARY KEY (bucket, window_name))",
    "CREATE TRIGGER IF NOT EXISTS grant_added AFTER INSERT ON grants BEGIN"
    " INSERT INTO grant_rows (bucket, window_name, rows) VALUES (NEW.bucket, NEW.window_name, 1)"
    " ON CONFLICT (bucket, window_name) DO UPDATE SET rows = rows + 1; END",
    "CREATE TRIGGER IF NOT EXISTS grant_removed AFTER DELETE ON grants BEGIN"
    " UPDATE grant_rows SET rows = rows - 1"
    " WHERE bucket = OLD.bucket AND window_name = OLD.window_name; END",
)


class SQLiteQuotaStore:
    """A QuotaStore in one SQLite file, shared by every process that opens the same ``path``.

        store = SQLiteQuotaStore("quota.sqlite3")   # the file and its directories appear on use
        grant = await store.acquire("virustotal:0123abcd89", windows, clock.time())
        await store.aclose()

    Every failure is raised as QuotaStoreUnavailable (the limiter then counts locally).
    """

    __slots__ = ("_acquires_since_purge", "_worker", "path", "purge_every")

    def __init__(self, path: str | Path, *, purge_every: int = DEFAULT_PURGE_EVERY) -> None:
        if purge_every < 1:
            raise ValueError("purge_every must be at least 1")
        self.path = Path(path)
        self.purge_every = purge_every
        # The first acquire purges: a CLI run is short and may never reach purge_every.
        self._acquires_since_purge = purge_every
        self._worker = SQLiteWorker(
            self.path,
            label="SQLite quota store",
            error=QuotaStoreUnavailable,
            prepare=_prepare,
            logger=LOGGER_NAME,
            thread_name="threatintel-quota",
            busy_timeout=BUSY_TIMEOUT_SECONDS,
        )

    def __repr__(self) -> str:
        return f"SQLiteQuotaStore({str(self.path)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the QuotaStore protocol --------------------------------------------------------------

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant:
        return await self._worker.run(self._acquire, bucket, tuple(windows), now)

    async def block(self, bucket: str, until: float) -> None:
        await self._worker.run(_block, bucket, until)

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        return await self._worker.run(_usage, bucket, tuple(windows), now)

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        return await self._worker.run(_blocked_until, bucket, now)

    async def refund(self, bucket: str, windows: Sequence[Window], grant: Grant) -> None:
        if grant.at is not None:
            await self._worker.run(_refund, bucket, tuple(windows), grant.at)

    async def learned_limits(self, bucket: str, now: float) -> dict[str, int]:
        return decode_limits(await self._worker.run(_limits, bucket), now)

    async def keep_limits(self, bucket: str, limits: Mapping[str, int], until: float) -> None:
        if math.isfinite(until):
            await self._worker.run(_keep_limits, bucket, encode_limits(limits, until), until)

    async def aclose(self) -> None:
        await self._worker.aclose()

    # -- on the worker thread ------------------------------------------------------------------

    def _acquire(
        self, conn: sqlite3.Connection, bucket: str, windows: tuple[Window, ...], now: float
    ) -> Grant:
        with transaction(conn, "BEGIN IMMEDIATE"):
            row = conn.execute("SELECT at FROM newest WHERE bucket = ?", (bucket,)).fetchone()
            # Time never runs backwards for a bucket: a caller holding an older instant is
            # judged at the newest one granted, so it cannot reuse a slot given out since.
            if row is not None:
                now = max(now, float(row[0]))
            self._acquires_since_purge += 1
            if self._acquires_since_purge >= self.purge_every:
                self._acquires_since_purge = 0
                _purge(conn, now)
            row = conn.execute("SELECT until FROM blocks WHERE bucket = ?", (bucket,)).fetchone()
            if row is not None:
                until = block_end(row[0], now)
                if until is not None:
                    return Grant(False, wait=until - now, exhausted=BLOCKED, reset_at=until)
                # Over, or a bad row (non-finite, absurdly far, not a number): cleared.
                conn.execute("DELETE FROM blocks WHERE bucket = ?", (bucket,))
            spent: tuple[float, str] | None = None
            frees_at = now
            for window in windows:
                if window.sliding:
                    conn.execute(
                        "DELETE FROM grants"
                        " WHERE bucket = ? AND window_name = ? AND expires_at <= ?",
                        (bucket, window.name, now - CLOCK_MARGIN),
                    )
                    # Live grants are among the window's rows: fewer rows than the limit,
                    # and it has room without counting them.
                    if _rows(conn, bucket, window) < window.limit:
                        continue
                    used, _ = _live(conn, bucket, window, now)
                    if used >= window.limit:
                        frees_at = max(frees_at, _frees_at(conn, bucket, window, now, used))
                else:
                    conn.execute(
                        "DELETE FROM counters"
                        " WHERE bucket = ? AND window_name = ? AND resets_at <= ?",
                        (bucket, window.name, now - CLOCK_MARGIN),
                    )
                    if _count(conn, bucket, window, now) >= window.limit:
                        reset = window.reset_at(now)
                        # The bucket comes back when every spent window has reset.
                        if spent is None or reset > spent[0]:
                            spent = (reset, window.name)
            if spent is not None:
                return Grant(False, wait=spent[0] - now, exhausted=spent[1], reset_at=spent[0])
            if frees_at > now:
                return Grant(False, wait=frees_at - now)
            _record(conn, bucket, windows, now)
            return Grant(True, at=now)


def _block(conn: sqlite3.Connection, bucket: str, until: float) -> None:
    if not math.isfinite(until):
        return  # SQLite would store NaN as NULL and infinity as a block that never ends
    with transaction(conn, "BEGIN IMMEDIATE"):
        # A block only ever grows: a later, shorter 429 must not lift a longer one; a bad row
        # (not a number, or further than MAX_BLOCK past this block) gives way to it.
        conn.execute(
            "INSERT INTO blocks (bucket, until) VALUES (?, ?)"
            " ON CONFLICT (bucket) DO UPDATE SET until = CASE"
            " WHEN typeof(until) IN ('real', 'integer') AND until > excluded.until"
            " AND until - excluded.until <= ? THEN until ELSE excluded.until END",
            (bucket, until, MAX_BLOCK),
        )


def _usage(
    conn: sqlite3.Connection, bucket: str, windows: tuple[Window, ...], now: float
) -> list[WindowUsage]:
    result = []
    # A read transaction: every window is read from the same snapshot, and in WAL mode it
    # never waits for (nor holds up) an acquire.
    with transaction(conn, "BEGIN"):
        for window in windows:
            if window.sliding:
                used, reset = _live(conn, bucket, window, now)
            else:
                used, reset = _count(conn, bucket, window, now), window.reset_at(now)
            remaining = max(0, window.limit - used)
            result.append(WindowUsage(window.name, window.limit, used, remaining, reset))
    return result


def _refund(conn: sqlite3.Connection, bucket: str, windows: tuple[Window, ...], at: float) -> None:
    """Uncount one grant made at ``at``, in one transaction: in all its windows or in none."""
    with transaction(conn, "BEGIN IMMEDIATE"):
        for window in windows:
            if window.sliding:
                # Grants made at the same instant are interchangeable: any one of them goes.
                conn.execute(
                    "DELETE FROM grants WHERE rowid = (SELECT rowid FROM grants"
                    " WHERE bucket = ? AND window_name = ? AND expires_at = ? LIMIT 1)",
                    (bucket, window.name, at + window.seconds),
                )
            else:
                conn.execute(
                    "UPDATE counters SET count = count - 1"
                    " WHERE bucket = ? AND window_name = ? AND window_id = ? AND count > 0",
                    (bucket, window.name, window.window_id(at)),
                )


def _limits(conn: sqlite3.Connection, bucket: str) -> object:
    row = conn.execute("SELECT value FROM limits WHERE bucket = ?", (bucket,)).fetchone()
    return None if row is None else row[0]


def _keep_limits(conn: sqlite3.Connection, bucket: str, value: str, until: float) -> None:
    with transaction(conn, "BEGIN IMMEDIATE"):
        conn.execute(
            "INSERT INTO limits (bucket, value, until) VALUES (?, ?, ?)"
            " ON CONFLICT (bucket) DO UPDATE SET value = excluded.value, until = excluded.until",
            (bucket, value, until),
        )


def _blocked_until(conn: sqlite3.Connection, bucket: str, now: float) -> float | None:
    row = conn.execute("SELECT until FROM blocks WHERE bucket = ?", (bucket,)).fetchone()
    return None if row is None else block_end(row[0], now)


def _prepare(conn: sqlite3.Connection) -> None:
    """Create the tables in one transaction, so no process sees half a schema."""
    with transaction(conn, "BEGIN IMMEDIATE"):
        for statement in _SCHEMA:
            conn.execute(statement)
        counted = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'grant_rows'"
        ).fetchone()
        for statement in _GRANT_ROWS:
            conn.execute(statement)
        if counted is None:
            # A file written before the totals existed: count its grants once, in the same
            # transaction as the triggers, so no writer slips a grant in between.
            conn.execute(
                "INSERT INTO grant_rows (bucket, window_name, rows)"
                " SELECT bucket, window_name, count(*) FROM grants GROUP BY bucket, window_name"
            )


def _live(
    conn: sqlite3.Connection, bucket: str, window: Window, now: float
) -> tuple[int, float | None]:
    """How many grants of a sliding window still count at ``now``, and when the oldest stops."""
    # A grant stops counting at exactly its expiry: the instant a sleeper wakes up to.
    used, oldest = conn.execute(
        "SELECT count(*), min(expires_at) FROM grants"
        " WHERE bucket = ? AND window_name = ? AND expires_at > ?",
        (bucket, window.name, now),
    ).fetchone()
    return int(used), None if oldest is None else float(oldest)


def _rows(conn: sqlite3.Connection, bucket: str, window: Window) -> int:
    """Rows of a sliding window in ``grants``, expired ones not yet deleted included."""
    row = conn.execute(
        "SELECT rows FROM grant_rows WHERE bucket = ? AND window_name = ?", (bucket, window.name)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _frees_at(
    conn: sqlite3.Connection, bucket: str, window: Window, now: float, used: int
) -> float:
    """When a full sliding window has room again: when its ``used - limit + 1``-th grant expires."""
    (expiry,) = conn.execute(
        "SELECT expires_at FROM grants WHERE bucket = ? AND window_name = ? AND expires_at > ?"
        " ORDER BY expires_at LIMIT 1 OFFSET ?",
        (bucket, window.name, now, used - window.limit),
    ).fetchone()
    return float(expiry)


def _count(conn: sqlite3.Connection, bucket: str, window: Window, now: float) -> int:
    """Grants counted so far in the fixed window ``now`` falls in."""
    row = conn.execute(
        "SELECT count FROM counters WHERE bucket = ? AND window_name = ? AND window_id = ?",
        (bucket, window.name, window.window_id(now)),
    ).fetchone()
    return 0 if row is None else int(row[0])


def _record(conn: sqlite3.Connection, bucket: str, windows: tuple[Window, ...], now: float) -> None:
    """Count one grant made at ``now`` in every window, and remember ``now`` as the newest."""
    keep = CLOCK_MARGIN
    for window in windows:
        if window.sliding:
            conn.execute(
                "INSERT INTO grants (bucket, window_name, expires_at) VALUES (?, ?, ?)",
                (bucket, window.name, now + window.seconds),
            )
            keep = max(keep, window.seconds + CLOCK_MARGIN)
        else:
            reset = window.reset_at(now)
            conn.execute(
                "INSERT INTO counters (bucket, window_name, window_id, count, resets_at)"
                " VALUES (?, ?, ?, 1, ?) ON CONFLICT (bucket, window_name, window_id)"
                " DO UPDATE SET count = count + 1",
                (bucket, window.name, window.window_id(now), reset),
            )
            keep = max(keep, reset - now + CLOCK_MARGIN)
    # The newest instant matters only while a grant made then still counts somewhere.
    conn.execute(
        "INSERT INTO newest (bucket, at, keep_until) VALUES (?, ?, ?)"
        " ON CONFLICT (bucket) DO UPDATE SET"
        " at = max(at, excluded.at), keep_until = max(keep_until, excluded.keep_until)",
        (bucket, now, now + keep),
    )


def _purge(conn: sqlite3.Connection, now: float) -> None:
    """Delete every bucket's rows that stopped mattering ``CLOCK_MARGIN`` ago or more."""
    cutoff = now - CLOCK_MARGIN
    # Window by window, so each delete is a range of the index, not a scan of every grant.
    windows = conn.execute("SELECT bucket, window_name FROM grant_rows").fetchall()
    for bucket, window_name in windows:
        conn.execute(
            "DELETE FROM grants WHERE bucket = ? AND window_name = ? AND expires_at <= ?",
            (bucket, window_name, cutoff),
        )
    conn.execute("DELETE FROM grant_rows WHERE rows <= 0")
    conn.execute("DELETE FROM counters WHERE resets_at <= ?", (cutoff,))
    conn.execute("DELETE FROM blocks WHERE until <= ?", (cutoff,))
    conn.execute("DELETE FROM newest WHERE keep_until <= ?", (now,))
    conn.execute("DELETE FROM limits WHERE until <= ?", (cutoff,))
