"""JobRunner: stream input into a job's manifest, run its chunks through the engine, fill gaps.

    runner = JobRunner(engine, store, on_result=progress.advance)
    job = await runner.create("iocs.txt", providers=[])
    job = await runner.process(job.id, lines)      # ingest and run at once; resumable
    job = await runner.fill_gaps(job.id)           # ask again only the sources that missed

The input is read a line at a time, parsed by the engine's ``Intake`` (the one parser, which
screens our own keys out) and handed to the store a chunk (``BATCH_SIZE`` new indicators) at a
time: the dedupe across runs lives in the store (on disk for SQLite), so a 100,000-line file
never sits in memory. Each indicator keeps the spellings read up to when its chunk is written.
Chunks are claimed and their indicators fed to ``Engine.stream`` while the input is still
coming in; a chunk is marked done once every indicator in it has its row, which is the
checkpoint: a runner killed at any moment loses at most the lookups in flight, and those cost
nothing the second time (the cache holds them). Indicators that already have a row are never
asked again.

This module is the only consumer of the engine a job needs, so an HTTP handler or a queue
worker runs a job exactly as the CLI does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from threatintel.engine import Engine
from threatintel.intake import Intake
from threatintel.jobs.base import (
    DEFAULT_LEASE,
    Job,
    JobState,
    JobStore,
    JobStoreError,
    ResultRow,
)
from threatintel.models import Analysis, Enrichment, Indicator
from threatintel.scoring import score

logger = logging.getLogger("threatintel.jobs")

#: Called with the keys (``type:value``) of the indicators each append added to the manifest.
IngestHook = Callable[[list[str]], None]

#: Result rows written to the store at most per call.
WRITE_BATCH = 200

#: Shorter leases would let a runner re-claim its own chunks in a loop.
MIN_LEASE = 1.0

#: A runner renews its chunks' leases this often, as a fraction of the lease: two renewals
#: can fail or come late before a live runner's chunks look abandoned.
RENEW_EVERY = 1 / 3

#: Input lines read per trip to the reading thread.
READ_BLOCK = 1_000

#: Called with each enrichment as it is stored (progress bars, JSON Lines output).
StoredHook = Callable[[Enrichment], None]


@dataclass(slots=True)
class _Open:
    """A claimed chunk whose indicators are in flight; done when ``left`` reaches zero."""

    seq: int
    left: int
    spellings: dict[Indicator, tuple[str, ...]] = field(default_factory=dict)


class JobRunner:
    """Runs jobs of one store on one engine (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        store: JobStore,
        *,
        worker: str = "local",
        lease: float = DEFAULT_LEASE,
        on_result: StoredHook | None = None,
        on_ingest: IngestHook | None = None,
    ) -> None:
        if lease < MIN_LEASE:
            raise ValueError(f"a chunk's lease must be at least {MIN_LEASE:g} s")
        self.engine = engine
        self.store = store
        self.worker = worker
        self.lease = lease
        self.on_result = on_result
        self.on_ingest = on_ingest
        self._fed = asyncio.Event()
        self._open: dict[Indicator, _Open] = {}
        self._held: set[int] = set()  # chunks this runner has in flight

    def _now(self) -> float:
        return self.engine.clock.time()

    async def create(
        self,
        input: str,
        *,
        providers: Sequence[str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> Job:
        """A new, empty job; RequestError for an unknown provider name. ``options`` are kept
        with it for whoever resumes it (``Job.options``)."""
        names = self.engine.select(providers) if providers else []
        return await self.store.create(input, providers=names, now=self._now(), options=options)

    # --- input ------------------------------------------------------------------------------
    async def ingest(self, job_id: str, lines: Iterable[str]) -> Job:
        """Stream ``lines`` into the manifest, ``BATCH_SIZE`` new indicators per chunk.

        Lines the job already read (``Job.lines_read``, from a run that died while reading)
        are skipped, so resuming with the same file goes on where the input stopped.
        NoIndicators (the job left unsealed) when the job holds none once the input is read.
        """
        job = await self.store.get(job_id)
        size = self.engine.settings.batch_size
        # The one parser (with our keys screened out). Its seen-set is this run's only; the
        # store dedupes across runs. Spellings are claimed as each chunk is written, so memory
        # holds at most one chunk's.
        with self.engine.intake() as intake:
            pending: list[Indicator] = []
            number = 0
            rejected = 0
            source = iter(lines)
            while True:
                # Read on a thread, a block at a time: a slow stdin never stalls the lookups.
                block = await asyncio.to_thread(list, itertools.islice(source, READ_BLOCK))
                for line in block:
                    number += 1
                    if number <= job.lines_read:
                        continue
                    # Each item is a line, whether or not it came with its newline.
                    text = line if line.endswith("\n") else line + "\n"
                    pending.extend(indicator for indicator, _ in intake.feed_text(text))
                    if len(pending) >= size:
                        await self._append(job_id, intake, pending, number, rejected)
                        pending, rejected = [], intake.counts.rejected
                if not block:
                    break
            pending.extend(indicator for indicator, _ in intake.finish())
            await self._append(job_id, intake, pending, max(number, job.lines_read), rejected)
            if not (await self.store.get(job_id)).total:
                intake.require()  # NoIndicators, as the engine's stream decides it
        await self.store.seal(job_id, now=self._now())
        self._fed.set()
        return await self.store.get(job_id)

    async def _append(
        self,
        job_id: str,
        intake: Intake,
        indicators: list[Indicator],
        lines_read: int,
        rejected_before: int,
    ) -> None:
        pairs: list[tuple[Indicator, str]] = []
        for indicator in indicators:
            spellings = intake.claim(indicator)
            pairs.extend((indicator, spelling) for spelling in spellings or [""])
        rejected = intake.counts.rejected - rejected_before
        new = await self.store.append(
            job_id, pairs, lines_read=lines_read, rejected=rejected, now=self._now()
        )
        if new and self.on_ingest is not None:
            self.on_ingest(new)
        self._fed.set()
        await asyncio.sleep(0)  # let the run loop pick the chunk up

    # --- running ----------------------------------------------------------------------------
    async def process(
        self, job_id: str, lines: Iterable[str] | None = None, *, takeover: bool = False
    ) -> Job:
        """Run every chunk of the job not done yet, reading ``lines`` into it meanwhile.

        ``takeover``: this runner is the job's only one and the last died (a CLI resume), so
        claims the dead one left are dropped instead of waiting out their lease.
        """
        if takeover:
            await self.store.release(job_id)
        job = await self.store.get(job_id)
        names = self.engine.select(job.providers or None)
        await self.store.set_state(job_id, JobState.RUNNING, now=self._now())
        feeder: asyncio.Task[Job] | None = None
        keepalive = asyncio.create_task(self._keep_leases(job_id))
        try:
            if lines is not None and not job.sealed:
                feeder = asyncio.create_task(self.ingest(job_id, lines))
            stream = self.engine.stream(
                self._indicators(job_id, feeder), providers=names, allow_empty=True
            )
            await self._write(job_id, stream, self._with_spellings, self._completed)
            if feeder is not None:
                await feeder
            job = await self.store.get(job_id)
            # Otherwise input is still to come, or another runner holds chunks (it marks the
            # job done when it finishes the last one): the job stays as it is, resumable.
            if job.sealed and job.chunks_done == job.chunks:
                await self.store.set_state(job_id, JobState.DONE, now=self._now())
        except BaseException as exc:
            if feeder is not None:
                feeder.cancel()
            cancelled = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            state = JobState.CANCELLED if cancelled else JobState.FAILED
            message = None if cancelled else f"stopped by {type(exc).__name__}"
            await asyncio.shield(
                self.store.set_state(job_id, state, now=self._now(), message=message)
            )
            raise
        finally:
            keepalive.cancel()
        return await self.store.get(job_id)

    async def run_chunk(self, job_id: str, seq: int) -> int:
        """Run one chunk that a queue delivered (its lease is the queue's, not the store's):
        the indicators without a result row yet go through the engine, each row is written
        as it comes, and the chunk is marked done. How many indicators were run; running a
        chunk again (a redelivery after a worker died) runs only what the first run left."""
        job = await self.store.get(job_id)
        names = self.engine.select(job.providers or None)
        entries = await self.store.entries(job_id, seq)
        answered = await self.store.answered(job_id, [entry.key for entry in entries])
        todo = {e.indicator: e.spellings for e in entries if e.key not in answered}
        if todo:
            stream = self.engine.stream(list(todo), providers=names, allow_empty=True)

            def with_spellings(enrichment: Enrichment) -> Enrichment:
                spellings = todo.get(enrichment.indicator, ())
                return enrichment.model_copy(update={"inputs": list(spellings)})

            await self._write(job_id, stream, with_spellings)
        await self.store.complete(job_id, seq, now=self._now())
        return len(todo)

    async def _keep_leases(self, job_id: str) -> None:
        """Renew the leases of the chunks in flight while the job runs, however long its
        lookups wait for quota, so no other runner takes over a live runner's chunks; a
        runner that dies stops renewing, and its chunks are free once their lease ends."""
        # A participant of a lockstep clock (a no-op on the system clock): its renewals then
        # come in time order with every other wait, never skipped by a jump past them.
        with self.engine.clock.participant():
            while True:
                await self.engine.clock.sleep(self.lease * RENEW_EVERY)
                if not self._held:
                    continue
                try:
                    await self.store.renew(
                        job_id, sorted(self._held), now=self._now(), lease=self.lease
                    )
                except JobStoreError as exc:  # a blip: the next renewal comes well in time
                    logger.warning("renewing the leases of job %s failed: %s", job_id, exc)

    async def _indicators(
        self, job_id: str, feeder: asyncio.Task[Job] | None
    ) -> AsyncIterator[Indicator]:
        """Indicators of claimed chunks, one chunk after another, waiting for input if need be."""
        self._open.clear()
        self._held.clear()
        while True:
            self._fed.clear()
            seq = await self.store.claim(job_id, self.worker, now=self._now(), lease=self.lease)
            if seq is None:
                if feeder is None or feeder.done():
                    return
                await self._wait_for_input(feeder)
                continue
            if seq in self._held:
                # Our own chunk, still in flight past its lease: claiming it again renewed
                # the lease; its indicators are already on their way.
                continue
            entries = await self.store.entries(job_id, seq)
            answered = await self.store.answered(job_id, [entry.key for entry in entries])
            todo = [entry for entry in entries if entry.key not in answered]
            chunk = _Open(seq, len(todo), spellings={e.indicator: e.spellings for e in todo})
            if not todo:
                await self.store.complete(job_id, seq, now=self._now())
                continue
            self._held.add(seq)
            for entry in todo:
                self._open[entry.indicator] = chunk
                yield entry.indicator

    async def _wait_for_input(self, feeder: asyncio.Task[Job]) -> None:
        fed = asyncio.ensure_future(self._fed.wait())
        try:
            await asyncio.wait({fed, feeder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            fed.cancel()
        if feeder.done() and feeder.exception() is not None:
            feeder.result()  # the input could not be read: stop with its error

    def _with_spellings(self, enrichment: Enrichment) -> Enrichment:
        spellings = self._open[enrichment.indicator].spellings.get(enrichment.indicator, ())
        return enrichment.model_copy(update={"inputs": list(spellings)})

    async def _completed(self, job_id: str, stored: list[Enrichment]) -> None:
        """Count the stored indicators off their chunks; a chunk with none left is done."""
        for enrichment in stored:
            chunk = self._open.pop(enrichment.indicator)
            chunk.left -= 1
            if chunk.left == 0:
                self._held.discard(chunk.seq)
                await self.store.complete(job_id, chunk.seq, now=self._now())

    async def _write(
        self,
        job_id: str,
        stream: AsyncIterator[Enrichment],
        prepare: Callable[[Enrichment], Enrichment],
        after: Callable[[str, list[Enrichment]], Awaitable[None]] | None = None,
    ) -> None:
        """Store the stream's enrichments, as many per write as have come meanwhile.

        A writer task takes what the stream has produced since its last write, up to
        WRITE_BATCH rows, in one store call (one transaction or round trip instead of one per
        row), then tells ``on_result`` and ``after``: nothing is reported before it is
        stored, so output written from ``on_result`` never runs ahead of the store.
        """
        queue: asyncio.Queue[Enrichment | None] = asyncio.Queue(maxsize=WRITE_BATCH * 4)

        async def writer() -> None:
            while True:
                batch: list[Enrichment] = []
                item = await queue.get()
                while item is not None:
                    batch.append(prepare(item))
                    if len(batch) >= WRITE_BATCH or queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    rows = [ResultRow.of(enrichment) for enrichment in batch]
                    await self.store.put(job_id, rows, now=self._now())
                    if self.on_result is not None:
                        for enrichment in batch:
                            self.on_result(enrichment)
                    if after is not None:
                        await after(job_id, batch)
                if item is None:
                    return

        task = asyncio.create_task(writer())
        try:
            async for enrichment in stream:
                await _put_unless_done(queue, enrichment, task)
            await _put_unless_done(queue, None, task)
            await task
        finally:
            task.cancel()

    # --- gaps -------------------------------------------------------------------------------
    async def fill_gaps(self, job_id: str) -> Job:
        """Ask each source that has not answered about an indicator again, and only those;
        merge the new answers into the stored enrichment and score it afresh."""
        missing: dict[str, list[str]] = {}
        async for gap in self.store.gaps(job_id):
            missing.setdefault(gap.key, []).append(gap.provider)
        groups: dict[tuple[str, ...], list[str]] = {}
        for key, names in missing.items():
            groups.setdefault(tuple(sorted(names)), []).append(key)
        for providers, keys in groups.items():
            stored: dict[Indicator, Enrichment] = {}
            for key in keys:
                body = await self.store.result(job_id, key)
                if body is not None:
                    enrichment = Enrichment.model_validate_json(body)
                    stored[enrichment.indicator] = enrichment
            selected = self.engine.select(list(providers))
            stream = self.engine.stream(list(stored), providers=selected, allow_empty=True)

            def merged(
                fresh: Enrichment, stored: dict[Indicator, Enrichment] = stored
            ) -> Enrichment:
                return merge_sources(stored.pop(fresh.indicator), fresh, self.engine)

            await self._write(job_id, stream, merged)
        return await self.store.get(job_id)


@dataclass(frozen=True, slots=True)
class GapSummary:
    """One provider's gaps in a job: how many indicators miss it and when it is worth asking."""

    provider: str
    count: int
    reset_at: float | None  # the latest reset among them; None when no source said


async def gap_summary(store: JobStore, job_id: str) -> list[GapSummary]:
    """The job's gaps per provider, in provider name order."""
    counts: dict[str, int] = {}
    resets: dict[str, float | None] = {}
    async for gap in store.gaps(job_id):
        counts[gap.provider] = counts.get(gap.provider, 0) + 1
        if gap.reset_at is not None:
            resets[gap.provider] = max(gap.reset_at, resets.get(gap.provider) or gap.reset_at)
        else:
            resets.setdefault(gap.provider, None)
    return [GapSummary(name, counts[name], resets[name]) for name in sorted(counts)]


async def job_analysis(store: JobStore, job_id: str) -> Analysis:
    """The job's stored results as one Analysis, for any report format (attribution included)."""
    from threatintel.attribution import attribute  # only when a report is made
    from threatintel.providers import PROVIDERS

    job = await store.get(job_id)
    enrichments = [Enrichment.model_validate_json(body) async for body in store.results(job_id)]
    return Analysis(
        enrichments=enrichments,
        providers=list(job.providers or PROVIDERS),
        attribution=attribute(enrichments),
        started_at=datetime.fromtimestamp(job.created_at, UTC),
        finished_at=datetime.fromtimestamp(job.updated_at, UTC),
    )


def merge_sources(stored: Enrichment, fresh: Enrichment, engine: Engine) -> Enrichment:
    """``stored`` with the sources ``fresh`` asked replaced by its answers, scored afresh."""
    sources = {**stored.sources, **fresh.sources}
    verdict = score(stored.indicator, sources, engine.settings.scoring)
    return stored.model_copy(update={"sources": sources, "verdict": verdict})


async def _put_unless_done(
    queue: asyncio.Queue[Enrichment | None], item: Enrichment | None, writer: asyncio.Task[None]
) -> None:
    """Queue ``item`` for the writer; if the writer has failed, raise its error instead of
    waiting for room it will never make."""
    if queue.full():
        put = asyncio.ensure_future(queue.put(item))
        await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
        if put.done():
            return
        put.cancel()
        writer.result()  # raises the writer's error
        raise RuntimeError("the result writer stopped early")
    if writer.done():
        writer.result()
    queue.put_nowait(item)


__all__ = [
    "GapSummary",
    "IngestHook",
    "JobRunner",
    "StoredHook",
    "gap_summary",
    "job_analysis",
    "merge_sources",
]
