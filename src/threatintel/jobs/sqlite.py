"""SQLiteJobStore: the default, one file under the cache directory shared by local processes.

    store = SQLiteJobStore(settings.cache_dir / "jobs.sqlite3")

Tables (every one keyed by the job id first, so a job's rows sit together):

    jobs(id, input, providers, state, created_at, updated_at, sealed, lines_read, rejected,
         message)
    manifest(job, key, chunk, pos, type, indicator, spellings)   the deduplicated input
    chunks(job, seq, done, claimed_until)
    results(job, key, pos, type, verdict, body)                  one row per indicator
    gaps(job, key, provider, status, reset_at)

The dedupe of a 100,000-line input is the manifest's primary key, on disk, not a set in memory.
Counters are counted from the rows (indexed), so they are exact whoever wrote the rows. The file
is 0600 in a 0700 directory and heals itself if found corrupt (``threatintel._sqlite``); every
sqlite3 or OS error becomes ``JobStoreError`` naming the file, never its contents.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from threatintel._sqlite import SQLiteWorker, transaction
from threatintel.jobs.base import (
    FINISHED,
    PAGE,
    Entry,
    Gap,
    Job,
    JobState,
    JobStoreError,
    ResultRow,
    UnknownJob,
    add_spelling,
    indicator_key,
)
from threatintel.models import Indicator

FILENAME: Final = "jobs.sqlite3"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, input TEXT NOT NULL,"
    " providers TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL, sealed INTEGER NOT NULL DEFAULT 0,"
    " lines_read INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0, message TEXT,"
    " options TEXT NOT NULL DEFAULT '{}')",
    "CREATE TABLE IF NOT EXISTS manifest (job TEXT NOT NULL, key TEXT NOT NULL,"
    " chunk INTEGER NOT NULL, pos INTEGER NOT NULL, type TEXT NOT NULL,"
    " indicator TEXT NOT NULL, spellings TEXT NOT NULL, PRIMARY KEY (job, key))",
    "CREATE INDEX IF NOT EXISTS manifest_chunk ON manifest (job, chunk, pos)",
    "CREATE TABLE IF NOT EXISTS chunks (job TEXT NOT NULL, seq INTEGER NOT NULL,"
    " done INTEGER NOT NULL DEFAULT 0, claimed_until REAL NOT NULL DEFAULT 0,"
    " PRIMARY KEY (job, seq))",
    "CREATE TABLE IF NOT EXISTS results (job TEXT NOT NULL, key TEXT NOT NULL,"
    " pos INTEGER NOT NULL, type TEXT NOT NULL, verdict TEXT NOT NULL, body TEXT NOT NULL,"
    " PRIMARY KEY (job, key))",
    "CREATE INDEX IF NOT EXISTS results_pos ON results (job, pos)",
    "CREATE TABLE IF NOT EXISTS gaps (job TEXT NOT NULL, key TEXT NOT NULL,"
    " provider TEXT NOT NULL, status TEXT NOT NULL, reset_at REAL,"
    " PRIMARY KEY (job, key, provider))",
)
_TABLES: Final = ("gaps", "results", "chunks", "manifest")


def _create_tables(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "options" not in columns:  # a file from before jobs kept their options
        conn.execute("ALTER TABLE jobs ADD COLUMN options TEXT NOT NULL DEFAULT '{}'")


class SQLiteJobStore:
    """A ``JobStore`` in one SQLite file (see the module docstring for the layout)."""

    __slots__ = ("_worker", "path")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._worker = SQLiteWorker(
            self.path,
            label="SQLite job store",
            error=JobStoreError,
            prepare=_create_tables,
            logger="threatintel.jobs",
            thread_name="threatintel-jobs",
        )

    async def create(
        self,
        input: str,
        *,
        providers: Sequence[str],
        now: float,
        options: Mapping[str, str] | None = None,
    ) -> Job:
        job = Job.queued(input, providers, now=now, options=options)
        await self._worker.run(_insert_job, job)
        return job

    async def get(self, job_id: str) -> Job:
        return await self._worker.run(_read_job, job_id)

    async def jobs(self) -> list[Job]:
        return await self._worker.run(_read_jobs)

    async def append(
        self,
        job_id: str,
        items: Sequence[tuple[Indicator, str]],
        *,
        lines_read: int,
        rejected: int = 0,
        now: float,
    ) -> list[str]:
        return await self._worker.run(_append, job_id, list(items), lines_read, rejected, now)

    async def seal(self, job_id: str, *, now: float) -> None:
        await self._worker.run(_update_job, job_id, now, "sealed = 1", ())

    async def set_state(
        self, job_id: str, state: JobState, *, now: float, message: str | None = None
    ) -> None:
        await self._worker.run(
            _update_job, job_id, now, "state = ?, message = ?", (state.value, message)
        )

    async def claim(self, job_id: str, worker: str, *, now: float, lease: float) -> int | None:
        return await self._worker.run(_claim, job_id, now, lease)

    async def renew(self, job_id: str, chunks: Sequence[int], *, now: float, lease: float) -> None:
        for seq in chunks:  # a runner holds a few chunks at a time: one statement each
            await self._worker.run(
                _execute,
                "UPDATE chunks SET claimed_until = ? WHERE job = ? AND seq = ? AND done = 0",
                now + lease,
                job_id,
                seq,
            )

    async def release(self, job_id: str) -> None:
        await self._worker.run(
            _execute, "UPDATE chunks SET claimed_until = 0 WHERE job = ?", job_id
        )

    async def entries(self, job_id: str, chunk: int) -> list[Entry]:
        rows = await self._worker.run(
            _fetch,
            "SELECT indicator, spellings FROM manifest WHERE job = ? AND chunk = ? ORDER BY pos",
            (job_id, chunk),
        )
        return [
            Entry(Indicator.model_validate_json(indicator), tuple(json.loads(spellings)))
            for indicator, spellings in rows
        ]

    async def complete(self, job_id: str, chunk: int, *, now: float) -> None:
        await self._worker.run(_complete, job_id, chunk, now)

    async def put(self, job_id: str, rows: Sequence[ResultRow], *, now: float) -> None:
        await self._worker.run(_put, job_id, list(rows), now)

    async def answered(self, job_id: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), PAGE):
            page = list(keys[start : start + PAGE])
            marks = ",".join("?" * len(page))
            rows = await self._worker.run(
                _fetch,
                f"SELECT key FROM results WHERE job = ? AND key IN ({marks})",
                (job_id, *page),
            )
            found.update(key for (key,) in rows)
        return found

    async def result(self, job_id: str, key: str) -> str | None:
        rows = await self._worker.run(
            _fetch, "SELECT body FROM results WHERE job = ? AND key = ?", (job_id, key)
        )
        return str(rows[0][0]) if rows else None

    async def results(self, job_id: str) -> AsyncIterator[str]:
        after = -1
        while True:
            rows = await self._worker.run(
                _fetch,
                "SELECT pos, body FROM results WHERE job = ? AND pos > ? ORDER BY pos LIMIT ?",
                (job_id, after, PAGE),
            )
            for _, body in rows:
                yield str(body)
            if len(rows) < PAGE:
                return
            after = int(rows[-1][0])

    async def gaps(self, job_id: str) -> AsyncIterator[Gap]:
        after = ("", "")
        while True:
            rows = await self._worker.run(
                _fetch,
                "SELECT key, provider, status, reset_at FROM gaps WHERE job = ?"
                " AND (key, provider) > (?, ?) ORDER BY key, provider LIMIT ?",
                (job_id, *after, PAGE),
            )
            for key, provider, status, reset_at in rows:
                yield Gap(key, provider, status, reset_at)
            if len(rows) < PAGE:
                return
            after = (rows[-1][0], rows[-1][1])

    async def delete(self, job_id: str) -> None:
        await self._worker.run(_delete, [job_id])

    async def cleanup(self, *, now: float, retention: float) -> int:
        finished = tuple(state.value for state in FINISHED)
        rows = await self._worker.run(
            _fetch,
            "SELECT id FROM jobs WHERE state IN (?, ?, ?) AND updated_at < ?",
            (*finished, now - retention),
        )
        if rows:
            await self._worker.run(_delete, [job_id for (job_id,) in rows])
        return len(rows)

    async def aclose(self) -> None:
        await self._worker.aclose()


# -- on the worker thread --------------------------------------------------------------------


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, tuple(args)).fetchall()


def _execute(conn: sqlite3.Connection, sql: str, *args: Any) -> None:
    with transaction(conn):
        conn.execute(sql, args)


def _insert_job(conn: sqlite3.Connection, job: Job) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO jobs (id, input, providers, state, created_at, updated_at, options)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.input,
                json.dumps(job.providers),
                job.state.value,
                job.created_at,
                job.updated_at,
                json.dumps(job.options),
            ),
        )


def _require(conn: sqlite3.Connection, job_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT id, input, providers, state, created_at, updated_at, sealed, lines_read,"
        " rejected, message, options FROM jobs WHERE id = ?",
        (job_id,),
    ).fetchone()
    if row is None:
        raise UnknownJob(job_id)
    return tuple(row)


def _counts(conn: sqlite3.Connection, sql: str, job_id: str) -> dict[str, int]:
    return {str(name): int(count) for name, count in conn.execute(sql, (job_id,))}


def _read_job(conn: sqlite3.Connection, job_id: str) -> Job:
    row = _require(conn, job_id)
    chunks, chunks_done = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(done), 0) FROM chunks WHERE job = ?", (job_id,)
    ).fetchone()
    types = _counts(conn, "SELECT type, COUNT(*) FROM manifest WHERE job = ? GROUP BY type", job_id)
    done_types = _counts(
        conn, "SELECT type, COUNT(*) FROM results WHERE job = ? GROUP BY type", job_id
    )
    verdicts = _counts(
        conn, "SELECT verdict, COUNT(*) FROM results WHERE job = ? GROUP BY verdict", job_id
    )
    (gaps,) = conn.execute("SELECT COUNT(*) FROM gaps WHERE job = ?", (job_id,)).fetchone()
    return Job(
        id=row[0],
        input=row[1],
        providers=tuple(json.loads(row[2])),
        state=JobState(row[3]),
        created_at=row[4],
        updated_at=row[5],
        sealed=bool(row[6]),
        lines_read=row[7],
        rejected=row[8],
        message=row[9],
        options=json.loads(row[10]),
        total=sum(types.values()),
        done=sum(done_types.values()),
        chunks=chunks,
        chunks_done=chunks_done,
        gaps=gaps,
        verdicts=verdicts,
        types=types,
        done_types=done_types,
    )


def _read_jobs(conn: sqlite3.Connection) -> list[Job]:
    ids = [
        job_id
        for (job_id,) in conn.execute("SELECT id FROM jobs ORDER BY created_at DESC, id DESC")
    ]
    return [_read_job(conn, job_id) for job_id in ids]


def _update_job(
    conn: sqlite3.Connection, job_id: str, now: float, assignments: str, args: Sequence[Any]
) -> None:
    with transaction(conn):
        _require(conn, job_id)
        conn.execute(
            f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",
            (*args, now, job_id),
        )


def _append(
    conn: sqlite3.Connection,
    job_id: str,
    items: list[tuple[Indicator, str]],
    lines_read: int,
    rejected: int,
    now: float,
) -> list[str]:
    with transaction(conn):
        _require(conn, job_id)
        (seq,) = conn.execute("SELECT COUNT(*) FROM chunks WHERE job = ?", (job_id,)).fetchone()
        (pos,) = conn.execute(
            "SELECT COALESCE(MAX(pos), -1) + 1 FROM manifest WHERE job = ?", (job_id,)
        ).fetchone()
        new: list[str] = []
        for indicator, spelling in items:
            key = indicator_key(indicator)
            found = conn.execute(
                "SELECT spellings FROM manifest WHERE job = ? AND key = ?", (job_id, key)
            ).fetchone()
            if found is None:
                spellings: list[str] = []
                add_spelling(spellings, spelling)
                conn.execute(
                    "INSERT INTO manifest (job, key, chunk, pos, type, indicator, spellings)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        key,
                        seq,
                        pos,
                        indicator.type.value,
                        indicator.model_dump_json(),
                        json.dumps(spellings),
                    ),
                )
                pos += 1
                new.append(key)
                continue
            spellings = json.loads(found[0])
            if add_spelling(spellings, spelling):
                conn.execute(
                    "UPDATE manifest SET spellings = ? WHERE job = ? AND key = ?",
                    (json.dumps(spellings), job_id, key),
                )
        if new:
            conn.execute("INSERT INTO chunks (job, seq) VALUES (?, ?)", (job_id, seq))
        conn.execute(
            "UPDATE jobs SET lines_read = ?, rejected = rejected + ?, updated_at = ? WHERE id = ?",
            (lines_read, rejected, now, job_id),
        )
    return new


def _claim(conn: sqlite3.Connection, job_id: str, now: float, lease: float) -> int | None:
    with transaction(conn):
        _require(conn, job_id)
        row = conn.execute(
            "SELECT seq FROM chunks WHERE job = ? AND done = 0 AND claimed_until <= ?"
            " ORDER BY seq LIMIT 1",
            (job_id, now),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE chunks SET claimed_until = ? WHERE job = ? AND seq = ?",
            (now + lease, job_id, row[0]),
        )
        return int(row[0])


def _complete(conn: sqlite3.Connection, job_id: str, chunk: int, now: float) -> None:
    with transaction(conn):
        conn.execute("UPDATE chunks SET done = 1 WHERE job = ? AND seq = ?", (job_id, chunk))
        conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (now, job_id))


def _put(conn: sqlite3.Connection, job_id: str, rows: list[ResultRow], now: float) -> None:
    with transaction(conn):
        for row in rows:
            _put_row(conn, job_id, row)
        conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (now, job_id))


def _put_row(conn: sqlite3.Connection, job_id: str, row: ResultRow) -> None:
    found = conn.execute(
        "SELECT pos FROM manifest WHERE job = ? AND key = ?", (job_id, row.key)
    ).fetchone()
    if found is None:  # not in this job's manifest: nothing to answer
        return
    conn.execute(
        "INSERT OR REPLACE INTO results (job, key, pos, type, verdict, body)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (job_id, row.key, found[0], row.type, row.verdict, row.body),
    )
    conn.execute("DELETE FROM gaps WHERE job = ? AND key = ?", (job_id, row.key))
    conn.executemany(
        "INSERT INTO gaps (job, key, provider, status, reset_at) VALUES (?, ?, ?, ?, ?)",
        [(job_id, gap.key, gap.provider, gap.status, gap.reset_at) for gap in row.gaps],
    )


def _delete(conn: sqlite3.Connection, job_ids: list[str]) -> None:
    with transaction(conn):
        for job_id in job_ids:
            for table in _TABLES:
                conn.execute(f"DELETE FROM {table} WHERE job = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
