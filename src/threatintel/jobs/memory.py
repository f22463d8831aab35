"""MemoryJobStore: jobs in this process only (tests, and the in-memory cache backend)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from threatintel.jobs.base import (
    FINISHED,
    Entry,
    Gap,
    Job,
    JobState,
    ResultRow,
    UnknownJob,
    add_spelling,
    indicator_key,
)
from threatintel.models import Indicator


@dataclass(slots=True)
class _Chunk:
    keys: list[str]
    done: bool = False
    claimed_until: float = 0.0


@dataclass(slots=True)
class _Job:
    job: Job
    manifest: dict[str, tuple[Indicator, list[str]]] = field(default_factory=dict)
    chunks: list[_Chunk] = field(default_factory=list)
    rows: dict[str, ResultRow] = field(default_factory=dict)


class MemoryJobStore:
    """A ``JobStore`` in dictionaries; gone when the process ends."""

    __slots__ = ("_jobs",)

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}

    def _get(self, job_id: str) -> _Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJob(job_id) from None

    def _touch(self, record: _Job, now: float, **changes: object) -> None:
        record.job = dataclasses.replace(record.job, updated_at=now, **changes)  # type: ignore[arg-type]

    async def create(
        self,
        input: str,
        *,
        providers: Sequence[str],
        now: float,
        options: Mapping[str, str] | None = None,
    ) -> Job:
        job = Job.queued(input, providers, now=now, options=options)
        self._jobs[job.id] = _Job(job)
        return job

    async def get(self, job_id: str) -> Job:
        record = self._get(job_id)
        rows = record.rows.values()
        return dataclasses.replace(
            record.job,
            total=len(record.manifest),
            done=len(rows),
            chunks=len(record.chunks),
            chunks_done=sum(chunk.done for chunk in record.chunks),
            gaps=sum(len(row.gaps) for row in rows),
            verdicts=dict(Counter(row.verdict for row in rows)),
            types=dict(Counter(i.type.value for i, _ in record.manifest.values())),
            done_types=dict(Counter(row.type for row in rows)),
        )

    async def jobs(self) -> list[Job]:
        found = [await self.get(job_id) for job_id in self._jobs]
        return sorted(found, key=lambda job: (job.created_at, job.id), reverse=True)

    async def append(
        self,
        job_id: str,
        items: Sequence[tuple[Indicator, str]],
        *,
        lines_read: int,
        rejected: int = 0,
        now: float,
    ) -> list[str]:
        record = self._get(job_id)
        new: list[str] = []
        for indicator, spelling in items:
            key = indicator_key(indicator)
            if key not in record.manifest:
                record.manifest[key] = (indicator, [])
                new.append(key)
            add_spelling(record.manifest[key][1], spelling)
        if new:
            record.chunks.append(_Chunk(new))
        self._touch(record, now, lines_read=lines_read, rejected=record.job.rejected + rejected)
        return new

    async def seal(self, job_id: str, *, now: float) -> None:
        self._touch(self._get(job_id), now, sealed=True)

    async def set_state(
        self, job_id: str, state: JobState, *, now: float, message: str | None = None
    ) -> None:
        self._touch(self._get(job_id), now, state=state, message=message)

    async def claim(self, job_id: str, worker: str, *, now: float, lease: float) -> int | None:
        for seq, chunk in enumerate(self._get(job_id).chunks):
            if not chunk.done and chunk.claimed_until <= now:
                chunk.claimed_until = now + lease
                return seq
        return None

    async def renew(self, job_id: str, chunks: Sequence[int], *, now: float, lease: float) -> None:
        record = self._get(job_id)
        for seq in chunks:
            if not record.chunks[seq].done:
                record.chunks[seq].claimed_until = now + lease

    async def release(self, job_id: str) -> None:
        for chunk in self._get(job_id).chunks:
            chunk.claimed_until = 0.0

    async def entries(self, job_id: str, chunk: int) -> list[Entry]:
        record = self._get(job_id)
        out = []
        for key in record.chunks[chunk].keys:
            indicator, spellings = record.manifest[key]
            out.append(Entry(indicator, tuple(spellings)))
        return out

    async def complete(self, job_id: str, chunk: int, *, now: float) -> None:
        record = self._get(job_id)
        record.chunks[chunk].done = True
        self._touch(record, now)

    async def put(self, job_id: str, rows: Sequence[ResultRow], *, now: float) -> None:
        record = self._get(job_id)
        for row in rows:
            if row.key in record.manifest:  # else not in this job: nothing to answer
                record.rows[row.key] = row
        self._touch(record, now)

    async def answered(self, job_id: str, keys: Sequence[str]) -> set[str]:
        rows = self._get(job_id).rows
        return {key for key in keys if key in rows}

    async def result(self, job_id: str, key: str) -> str | None:
        row = self._get(job_id).rows.get(key)
        return row.body if row is not None else None

    async def results(self, job_id: str) -> AsyncIterator[str]:
        record = self._get(job_id)
        for chunk in list(record.chunks):
            for key in chunk.keys:
                row = record.rows.get(key)
                if row is not None:
                    yield row.body

    async def gaps(self, job_id: str) -> AsyncIterator[Gap]:
        for row in list(self._get(job_id).rows.values()):
            for gap in row.gaps:
                yield gap

    async def delete(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def cleanup(self, *, now: float, retention: float) -> int:
        old = [
            job_id
            for job_id, record in self._jobs.items()
            if record.job.state in FINISHED and record.job.updated_at < now - retention
        ]
        for job_id in old:
            del self._jobs[job_id]
        return len(old)

    async def aclose(self) -> None:
        return None
