"""One thread that owns one SQLite connection: the machinery of the SQLite cache and quota store.

    worker = SQLiteWorker(path, label="SQLite cache", error=CacheError, prepare=create_tables)
    rows = await worker.run(count_rows, "entries")   # count_rows(conn, "entries"), on the thread
    await worker.aclose()

The file is opened on first use: parent directories are created, the connection is put in WAL
mode with ``synchronous=NORMAL`` and then handed to the backend's ``prepare(conn)`` for its
schema. The files hold the indicators of incidents, so what is created here is the owner's
alone: directories 0700 and the database 0600 (less the umask, which can only take more away);
SQLite gives its ``-wal``/``-shm`` files the database's mode. Directories and files that
already exist keep theirs: they are the operator's choice. Every sqlite3 or OS error is raised
as the backend's own exception class (``error``), naming the file and never its contents, so
no sqlite3 exception leaves a backend.

A file found corrupt, or not a database at all, while it is being opened heals itself: it is
moved aside to ``<name>.corrupt-<UTC timestamp>`` with its ``-wal``/``-shm``/``-journal``
files, made owner-only like the rest, the newest ``KEEP_CORRUPT`` such copies are kept for a
post-mortem and older ones deleted, ONE warning names the file, and a fresh file takes its
place. Both files hold only what can be fetched or counted again, so starting over beats what
used to happen: a warning on every run, and (for quotas) a per-process budget that let short
CLI runs in a row overspend.
Only when the file cannot be moved, or the fresh one cannot be opened either, is ``error``
raised. Corruption that shows up later, in a statement that reads a damaged page, is raised
as ``error`` like any failure: moving a file aside under other processes' open connections is
safe only before anyone here has used it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, Final, ParamSpec, TypeVar

from threatintel._files import PRIVATE_FILE_MODE, make_private_dirs

#: How long a statement waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS: Final = 5.0
#: Pause between attempts to open a file another process is setting up at the same moment.
OPEN_RETRY_PAUSE: Final = 0.01
#: Corrupt copies kept beside the file; older ones are deleted when another is set aside.
KEEP_CORRUPT: Final = 3
#: Between a file's name and the UTC time it was set aside, e.g.
#: ``quota.sqlite3.corrupt-20240310T120000.000000Z``.
CORRUPT_MARKER: Final = ".corrupt-"
#: Files SQLite keeps beside a database while it is in use; they belong to it and move with it.
SIDECARS: Final = ("-wal", "-shm", "-journal")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# "database disk image is malformed" and "file is not a database", extended codes included.
_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def is_corrupt(exc: BaseException) -> bool:
    """True when ``exc`` says the file is damaged or not a database, not merely unusable now."""
    return isinstance(exc, sqlite3.DatabaseError) and _primary_code(exc) in _CORRUPT_CODES


def _primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code; None for errors the sqlite3 module raises on its own."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


@contextmanager
def transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """Commit what the block did, or roll all of it back if it raised."""
    conn.execute(begin)
    try:
        yield
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk, an interrupt).
        if conn.in_transaction:
            conn.rollback()
        raise
    conn.execute("COMMIT")


class SQLiteWorker:
    """Runs functions of one lazily opened SQLite connection on a dedicated thread.

        worker = SQLiteWorker(path, label="SQLite quota store", error=QuotaStoreUnavailable,
                              prepare=create_tables, logger="threatintel.quota")
        grant = await worker.run(acquire, bucket, windows, now)   # acquire(conn, bucket, ...)

    ``label`` starts every message (``"<label> <path> is closed"``); ``error`` is the exception
    class raised for every sqlite3 and OS failure; ``prepare(conn)`` creates the schema and must
    be safe to run again (it is retried while another process holds the new file). ``now`` is
    the epoch-seconds clock that names corrupt copies.
    """

    __slots__ = (
        "_closed",
        "_conn",
        "_error",
        "_executor",
        "_log",
        "_now",
        "_prepare",
        "busy_timeout",
        "label",
        "path",
    )

    def __init__(
        self,
        path: Path,
        *,
        label: str,
        error: type[Exception],
        prepare: Callable[[sqlite3.Connection], None],
        logger: str = "threatintel",
        thread_name: str = "threatintel-sqlite",
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.label = label
        self.busy_timeout = busy_timeout
        self._error = error
        self._prepare = prepare
        self._log = logging.getLogger(logger)
        self._now = now
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        # One dedicated worker thread owns the connection for its whole life: sqlite3 objects
        # must stay on the thread that made them, calls are serialised without a lock, and a
        # slow disk or a wait for another process's write lock never occupies the event loop's
        # default executor that other code shares.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """``fn(conn, *args, **kwargs)`` on the worker thread, opening the file if need be."""
        if self._closed:
            raise self._error(f"{self.label} {self.path} is closed")

        def call() -> _T:
            return fn(self._connection(), *args, **kwargs)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._translated, call)

    async def aclose(self) -> None:
        """Close the connection and let the thread go; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            # Queued behind every call already submitted, so those still see an open file.
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._translated, self._close
            )
        finally:
            self._executor.shutdown(wait=False)

    # -- on the worker thread ----------------------------------------------------------------

    def _translated(self, work: Callable[[], _T]) -> _T:
        """The one place sqlite3 and OS errors become the backend's error."""
        try:
            return work()
        except (sqlite3.Error, OSError) as exc:
            raise self._error(self._describe(exc)) from exc

    def _describe(self, exc: BaseException) -> str:
        where = f"{self.label} {self.path}"
        if is_corrupt(exc):
            return f"{where} is corrupt or not a database; delete it to start over"
        if isinstance(exc, OSError):
            return f"{where} cannot be created: {_reason(exc)}"
        # sqlite3's own messages ("database is locked", "unable to open database file") name
        # no data, so they are safe to pass on.
        return f"{where} failed: {exc}"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._conn = self._heal()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        make_private_dirs(self.path.parent)
        # SQLite would create the file 0644; made first, it is 0600 and SQLite gives the
        # -wal and -shm files the same mode. An empty file is an empty database.
        with suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        # Autocommit (isolation_level=None): transactions are exactly the backends' explicit
        # BEGIN ... COMMIT, so the write lock is never held between calls and other processes
        # share the file; ``timeout`` is SQLite's busy timeout for that lock.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            self._set_up(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the backend's schema, waiting out other processes opening the file."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                # WAL: readers never wait for the writer. synchronous=NORMAL survives any process
                # crash and skips an fsync per write; only a power cut can lose the last few
                # writes, which for a cache or a quota count costs a few repeated requests.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._prepare(conn)
                return
            except sqlite3.OperationalError as exc:
                # Turning a new file to WAL needs it alone, and SQLite fails that at once
                # instead of calling the busy handler when another process opens the file at
                # that moment; this thread waits the way the busy handler would.
                busy = _primary_code(exc) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(OPEN_RETRY_PAUSE)

    def _heal(self) -> sqlite3.Connection:
        """Open a fresh file in place of the corrupt one, which is kept aside."""
        # Another process may have set the file aside and started afresh since this one
        # failed to open it; look again, so as not to move that fresh file away. (Two processes
        # can still cross if both look within the microseconds before either moves the file.)
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
        try:
            aside = self._set_aside()
        except OSError as exc:
            message = (
                f"{self.label} {self.path} is corrupt or not a database and cannot be moved"
                f" aside ({_reason(exc)}); delete it to start over"
            )
            raise self._error(message) from exc
        if aside is not None:
            self._log.warning(
                "%s %s was corrupt or not a database; moved it to %s and started a fresh file",
                self.label,
                self.path,
                aside,
            )
        return self._open()

    def _set_aside(self) -> Path | None:
        """Move the file (and its sidecars) aside; None if another process already did."""
        stamp = datetime.fromtimestamp(self._now(), UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}{CORRUPT_MARKER}{stamp}")
        # SQLite usually deletes a corrupt file's sidecars when it closes it, but whatever is
        # left belongs to the old file: a fresh database must not start beside an old WAL or
        # journal, which SQLite would apply to it. Sidecars go first, so a process opening the
        # path meanwhile still finds the corrupt file; they keep their suffix for the copy.
        for suffix in SIDECARS:
            with suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return None
        # The copy stays around for a post-mortem: one an older version left world-readable
        # (0644) becomes the owner's alone.
        for suffix in ("", *SIDECARS):
            with suppress(FileNotFoundError):
                _make_private(Path(f"{aside}{suffix}"))
        try:
            self._prune()
        except OSError as exc:
            # Old copies left behind cost disk space, not correctness.
            self._log.debug("could not prune corrupt copies of %s: %s", self.path, _reason(exc))
        return aside

    def _prune(self) -> None:
        """Delete all but the newest ``KEEP_CORRUPT`` corrupt copies, with their sidecars."""
        prefix = self.path.name + CORRUPT_MARKER
        # The UTC timestamps have a fixed width, so names sort by age.
        with os.scandir(self.path.parent) as entries:
            copies = sorted(
                (
                    entry.name
                    for entry in entries
                    if entry.name.startswith(prefix) and not entry.name.endswith(SIDECARS)
                ),
                reverse=True,
            )
        for name in copies[KEEP_CORRUPT:]:
            for suffix in ("", *SIDECARS):
                (self.path.parent / f"{name}{suffix}").unlink(missing_ok=True)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _make_private(path: Path) -> None:
    """Take the group's and others' permissions off ``path``; never adds any."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & ~PRIVATE_FILE_MODE:
        os.chmod(path, mode & PRIVATE_FILE_MODE)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
