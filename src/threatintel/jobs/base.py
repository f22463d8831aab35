"""What every job store shares: the job record, manifest entries, result rows, gaps, the protocol.

A job is data, not a process (docs: /work/shared/DESIGN.md, point 3). Its record holds an id,
the input's description, an input manifest of normalised indicators (each with the spellings
that led to it) cut into chunks, one result row per (job, indicator), the gaps left by sources
that could not answer, counters and timestamps. Any runner claims a chunk, runs it and writes
its rows; writing a row twice replaces it, so a chunk run twice (after a crash) changes nothing.

    job = await store.create("iocs.txt", providers=[], now=clock.time())
    await store.append(job.id, [(indicator, "hxxp://evil[.]com")], lines_read=1, now=...)
    await store.seal(job.id, now=...)                      # the whole input is in
    seq = await store.claim(job.id, "worker-1", now=..., lease=600)
    for entry in await store.entries(job.id, seq): ...
    await store.put(job.id, [row], now=...)                # idempotent per indicator
    await store.complete(job.id, seq, now=...)

Stores: MemoryJobStore (``jobs.memory``), SQLiteJobStore (``jobs.sqlite``), RedisJobStore
(``jobs.redis``). Their rows hold indicators and enrichments (the Enrichment JSON, vendor bodies
left out), never a key.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Protocol

from threatintel.errors import RequestError, ThreatIntelError
from threatintel.models import Enrichment, Indicator, SourceStatus

#: Spellings kept per indicator: enough to join back to a spreadsheet, bounded for hostile input.
MAX_SPELLINGS: Final = 16
#: Spellings longer than this are cut (a whole pasted line can be one).
MAX_SPELLING_CHARS: Final = 200
#: A claimed chunk whose runner has not finished it within this many seconds may be claimed again.
DEFAULT_LEASE: Final = 600.0

#: A source left in one of these states has not answered yet: the job keeps a gap for it, and a
#: resume asks that source again. ``pending`` is the engine's "still waiting at the deadline".
GAP_STATUSES: Final = frozenset(
    {
        SourceStatus.QUOTA_EXHAUSTED.value,
        SourceStatus.RATE_LIMITED.value,
        SourceStatus.TIMEOUT.value,
        SourceStatus.ERROR.value,
        SourceStatus.CIRCUIT_OPEN.value,
        SourceStatus.PENDING.value,
    }
)


class JobState(StrEnum):
    QUEUED = "queued"  # created; input may still be coming in
    RUNNING = "running"  # a runner is working on it (or died doing so: see ``updated_at``)
    DONE = "done"  # every chunk has a result row per indicator (gaps may remain)
    FAILED = "failed"  # stopped by an error; resumable
    CANCELLED = "cancelled"  # stopped on request (Ctrl-C, an HTTP cancel); resumable


#: States in which a job counts as finished for retention.
FINISHED: Final = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class JobStoreError(ThreatIntelError):
    """A job store backend failed (its file or server); the message names no indicator."""


class UnknownJob(RequestError):
    """No job has this id (never created, or deleted after its retention time)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} (see 'threatintel jobs')")


def new_job_id(now: float) -> str:
    """Sortable by creation time, unguessable enough for a URL: ``20240310-120000-3f9a1c``."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def indicator_key(indicator: Indicator) -> str:
    """The key of an indicator inside a job: its type and normalised value."""
    return f"{indicator.type.value}:{indicator.value}"


def clip_spelling(spelling: str) -> str:
    return spelling[:MAX_SPELLING_CHARS]


def add_spelling(spellings: list[str], spelling: str) -> bool:
    """Record one more spelling (bounded, no repeats); True if the list changed."""
    spelling = clip_spelling(spelling)
    if not spelling or spelling in spellings or len(spellings) >= MAX_SPELLINGS:
        return False
    spellings.append(spelling)
    return True


@dataclass(frozen=True, slots=True)
class Job:
    """A job's record and counters, as one store read saw them."""

    id: str
    input: str
    providers: tuple[str, ...]  # the selection asked for; empty = every source
    state: JobState
    created_at: float
    updated_at: float
    total: int = 0  # indicators in the manifest
    done: int = 0  # indicators with a result row
    chunks: int = 0
    chunks_done: int = 0
    sealed: bool = False  # the whole input is in the manifest
    lines_read: int = 0  # input lines already in the manifest (ingest resumes after them)
    rejected: int = 0  # candidates the parser skipped
    gaps: int = 0  # (indicator, source) pairs still to ask
    message: str | None = None
    verdicts: Mapping[str, int] = field(default_factory=dict)
    types: Mapping[str, int] = field(default_factory=dict)  # manifest indicators per type
    done_types: Mapping[str, int] = field(default_factory=dict)  # answered ones per type
    # What the submitter asked for besides the input (the CLI keeps its report format and
    # output path here, so a resume need not be told them again).
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def queued(
        cls,
        input: str,
        providers: Sequence[str],
        *,
        now: float,
        options: Mapping[str, str] | None = None,
    ) -> Job:
        """A new job's record, as every store creates it: a fresh id, queued, nothing done."""
        return cls(
            new_job_id(now),
            input,
            tuple(providers),
            JobState.QUEUED,
            now,
            now,
            options=dict(options or {}),
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done)


@dataclass(frozen=True, slots=True)
class Entry:
    """One indicator of the manifest and every spelling of it seen in the input."""

    indicator: Indicator
    spellings: tuple[str, ...]

    @property
    def key(self) -> str:
        return indicator_key(self.indicator)


@dataclass(frozen=True, slots=True)
class Gap:
    """A source that has not answered about an indicator yet, and when it is worth asking."""

    key: str
    provider: str
    status: str
    reset_at: float | None = None


@dataclass(frozen=True, slots=True)
class ResultRow:
    """What a store keeps per (job, indicator): the enrichment as JSON and its gaps."""

    key: str
    type: str
    verdict: str
    body: str
    gaps: tuple[Gap, ...] = ()

    @classmethod
    def of(cls, enrichment: Enrichment) -> ResultRow:
        """The row for an enrichment; vendor bodies are never stored (they may echo a key)."""
        if any(source.raw is not None for source in enrichment.sources.values()):
            enrichment = enrichment.model_copy(
                update={
                    "sources": {
                        name: source.model_copy(update={"raw": None})
                        for name, source in enrichment.sources.items()
                    }
                }
            )
        key = indicator_key(enrichment.indicator)
        gaps = tuple(
            Gap(
                key,
                name,
                source.status.value,
                source.reset_at.timestamp() if source.reset_at is not None else None,
            )
            for name, source in enrichment.sources.items()
            if source.status.value in GAP_STATUSES
        )
        return cls(
            key=key,
            type=enrichment.indicator.type.value,
            verdict=enrichment.verdict.label.value,
            body=enrichment.model_dump_json(),
            gaps=gaps,
        )


class JobStore(Protocol):
    """Where jobs live. Times are the caller's clock; every write is idempotent per row."""

    async def create(
        self,
        input: str,
        *,
        providers: Sequence[str],
        now: float,
        options: Mapping[str, str] | None = None,
    ) -> Job: ...

    async def get(self, job_id: str) -> Job:
        """The job's record and counters; UnknownJob if there is none."""
        ...

    async def jobs(self) -> list[Job]:
        """Every job, newest first."""
        ...

    async def append(
        self,
        job_id: str,
        items: Sequence[tuple[Indicator, str]],
        *,
        lines_read: int,
        rejected: int = 0,
        now: float,
    ) -> list[str]:
        """Add the indicators not yet in the manifest as one new chunk (in order), record the
        extra spellings of those already there, and set ``lines_read``, all at once. Returns
        the keys of the new ones."""
        ...

    async def seal(self, job_id: str, *, now: float) -> None:
        """The whole input is in the manifest."""
        ...

    async def set_state(
        self, job_id: str, state: JobState, *, now: float, message: str | None = None
    ) -> None: ...

    async def claim(self, job_id: str, worker: str, *, now: float, lease: float) -> int | None:
        """The first chunk neither done nor claimed by a live lease, now claimed until
        ``now + lease``; or None. ``worker`` names the claimant for stores that keep it (none
        does yet: a queue worker of issue 11 may want it in logs)."""
        ...

    async def renew(self, job_id: str, chunks: Sequence[int], *, now: float, lease: float) -> None:
        """Extend the claims on ``chunks`` (those not done) to ``now + lease``: their runner
        is alive and still working on them, however long its lookups wait."""
        ...

    async def release(self, job_id: str) -> None:
        """Forget every claim on the job's chunks (its one runner died and starts again)."""
        ...

    async def entries(self, job_id: str, chunk: int) -> list[Entry]: ...

    async def complete(self, job_id: str, chunk: int, *, now: float) -> None: ...

    async def put(self, job_id: str, rows: Sequence[ResultRow], *, now: float) -> None:
        """Write (or replace) each indicator's result row and its gaps, counters kept exact;
        a row for an indicator outside the manifest is ignored."""
        ...

    async def answered(self, job_id: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` already have a result row."""
        ...

    async def result(self, job_id: str, key: str) -> str | None: ...

    def results(self, job_id: str) -> AsyncIterator[str]:
        """Every result row's enrichment JSON, in manifest order, a page at a time."""
        ...

    def gaps(self, job_id: str) -> AsyncIterator[Gap]: ...

    async def delete(self, job_id: str) -> None: ...

    async def cleanup(self, *, now: float, retention: float) -> int:
        """Delete finished jobs not updated for ``retention`` seconds; how many went."""
        ...

    async def aclose(self) -> None: ...


#: Result rows read per page by ``results`` and keys per round trip.
PAGE: Final = 500
