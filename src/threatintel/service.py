"""Service: what the server doors (MCP, HTTP) ask of one engine.

    async with Service(settings) as service:
        analysis = await service.analyze(["8.8.8.8"], deadline=20)   # pending sources, not a hang
        job = await service.submit(text=big_text)                    # runs here in the background
        job = await service.wait(job.id, timeout=30, on_progress=...)
        body = await service.report(job.id, "markdown")
        status = await service.status()

One Service per process holds one engine (one cache, one limiter, one set of breakers) and one
job store, so every door gives the same answers and spends the same budget. It knows nothing of
MCP or HTTP: adapters translate its answers and its errors (``RequestError`` subclasses say what
the caller got wrong; ``UnknownJob`` names a job that is not there).

A job submitted here runs in this process as an asyncio task over ``JobRunner``, the same runner
the CLI's ``batch`` uses. With REDIS_URL its input is read into the shared job store here and its
chunks go on the job queue (``jobs.queue``), which `threatintel worker` processes anywhere consume
(this process too, unless EMBEDDED_WORKER is false); progress, results and cancellation are the
same calls either way, and any instance answers for any job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal

from pydantic import BaseModel, Field

from threatintel._keyguard import KeyGuard
from threatintel.engine import Engine, ResultHook
from threatintel.errors import RequestError
from threatintel.indicators import extract
from threatintel.jobs import JobState, JobStore, JobStoreError, job_store_for
from threatintel.jobs.base import Job
from threatintel.jobs.queue import ChunkRunner, JobQueue, queue_url
from threatintel.jobs.runner import JobRunner, job_analysis
from threatintel.logs import log_analysis, log_completed
from threatintel.metrics import Metrics
from threatintel.models import Analysis, Enrichment, Extraction, Indicator
from threatintel.settings import Settings

logger = logging.getLogger("threatintel.service")

#: How often a waiter re-reads a job that runs in another process.
REMOTE_POLL = 0.5

#: Chunks a server (or a CLI batch) works on at once beside its other work (EMBEDDED_WORKER).
EMBEDDED_CONCURRENCY = 2

#: Seconds between two clean-ups of finished jobs older than JOB_RETENTION (a server runs for
#: months; the one at start-up alone would let them pile up).
CLEANUP_EVERY = 3_600.0

ProgressHook = Callable[[Job], object]


# --- status -------------------------------------------------------------------------------
class WindowStatus(BaseModel):
    window: str
    limit: int
    used: int
    remaining: int
    resets_at: datetime | None = None
    limit_from: str = Field(description="configured | learned | default")


class KeyStatus(BaseModel):
    key: str = Field(description="the key's fingerprint, or 'anonymous'; never the key")
    blocked_until: datetime | None = None
    windows: list[WindowStatus] = Field(default_factory=list)


class CacheCounts(BaseModel):
    entries: int = 0
    hits: int = 0
    misses: int = 0
    hit_rate: float | None = None


class ProviderStatus(BaseModel):
    provider: str
    title: str
    configured: bool
    circuit: Literal["closed", "open", "half_open"]
    circuit_retry_after: float = Field(0.0, description="seconds until an open circuit is tried")
    shared_store_reachable: bool = True
    keys: list[KeyStatus] = Field(default_factory=list)
    cache: CacheCounts = Field(default_factory=CacheCounts)


class ServiceStatus(BaseModel):
    providers: list[ProviderStatus]
    cache: str = Field(description="where answers are cached")
    jobs_running_here: int = 0


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[Job]
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Service:
    """One engine and one job store behind every server door (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        store: JobStore | None = None,
    ) -> None:
        self.settings = settings
        self._owns_store = store is None
        self.jobs = store if store is not None else job_store_for(settings)
        self._owns_engine = engine is None
        self.metrics = Metrics()
        # Stores open on first use: an Engine refusing its settings leaves nothing to close.
        self.engine = (
            engine
            if engine is not None
            else Engine(settings, on_lookup=self.metrics.on_lookup, on_call=self.metrics.on_call)
        )
        self._guard = KeyGuard(settings)
        self._running: dict[str, _Running] = {}
        self.queue: JobQueue | None = None  # set on entry in Redis mode
        self._worker: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Service:
        await self._cleanup()
        if self.settings.job_retention:
            self._janitor = asyncio.create_task(self._clean_periodically())
        url = queue_url(self.settings, self.jobs)
        if url is not None:
            chunks = ChunkRunner(JobRunner(self.engine, self.jobs))
            self.queue = await JobQueue(url, runner=chunks).__aenter__()
            if self.settings.embedded_worker:
                self._worker = asyncio.create_task(self.work(concurrency=EMBEDDED_CONCURRENCY))
        return self

    async def _cleanup(self) -> None:
        """Delete finished jobs older than JOB_RETENTION (none when it is 0)."""
        if not self.settings.job_retention:
            return
        try:
            gone = await self.jobs.cleanup(
                now=self.engine.clock.time(), retention=self.settings.job_retention
            )
        except JobStoreError as exc:  # a server starts anyway; /ready says what is wrong
            logger.warning("old jobs not cleaned up: %s", exc)
            return
        if gone:
            logger.info("deleted %d finished jobs older than JOB_RETENTION", gone)

    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(CLEANUP_EVERY)
            await self._cleanup()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop this process's jobs (they stay resumable, marked cancelled) and close up."""
        for running in self._running.values():
            running.task.cancel()
        await asyncio.gather(*(r.task for r in self._running.values()), return_exceptions=True)
        self._running.clear()
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.gather(self._janitor, return_exceptions=True)
            self._janitor = None
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self.queue is not None:
            await self.queue.__aexit__(None, None, None)
            self.queue = None
        if self._owns_engine:
            await self.engine.aclose()
        if self._owns_store:
            await self.jobs.aclose()

    # --- synchronous answers ----------------------------------------------------------------
    async def analyze(
        self,
        values: Iterable[str | Indicator] = (),
        *,
        text: str | None = None,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
        on_result: ResultHook | None = None,
    ) -> Analysis:
        """Values and text analysed together, within ``deadline`` seconds (sources still
        waiting then are ``pending``); ``on_result`` sees each enrichment as it completes.
        NoIndicators / UnknownProvider as the engine raises."""
        return await self.engine.analyze(
            list(values), text=text, providers=providers, deadline=deadline, on_result=on_result
        )

    async def lookup(
        self,
        value: str,
        *,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
    ) -> Enrichment:
        """One indicator, as given (raw or defanged); NoIndicators saying why when ``value``
        is not one that can be looked up."""
        # Engine.lookup, not analyze(): one indicator needs no stream, attribution or
        # Analysis around it (a third of a cached lookup's CPU on the HTTP load figure).
        began = time.perf_counter()
        enrichment = await self.engine.lookup(value, providers=providers, deadline=deadline)
        log_analysis("lookup", [enrichment], time.perf_counter() - began)
        return enrichment

    def extract(self, text: str) -> Extraction:
        """The indicators in ``text`` (refanged, typed) and the rejected candidates; nothing
        is looked up. Our own keys are never returned as indicators."""
        return self._guard.screen_extraction(extract(text))

    # --- jobs ---------------------------------------------------------------------------------
    async def submit(
        self,
        values: Iterable[str] = (),
        *,
        text: str | None = None,
        providers: Sequence[str] | None = None,
        label: str = "api",
    ) -> Job:
        """A new job over ``values`` (one per line) then ``text``, started in this process.
        RequestError for an unknown provider or an empty request; input that holds no
        indicator ends the job failed, its message saying what was skipped."""
        lines = [value.replace("\n", " ") + "\n" for value in values]
        if text:
            lines.extend(text.splitlines(keepends=True))
        if not lines:
            raise RequestError("nothing to analyse: give indicators or text")
        job = await JobRunner(self.engine, self.jobs).create(label, providers=providers)
        run = self._dispatch if self.queue is not None else self._run
        running = _Running(asyncio.create_task(run(job.id, lines)))
        self._running[job.id] = running
        running.task.add_done_callback(lambda _: self._finished(job.id))
        return job

    async def _run(self, job_id: str, lines: list[str]) -> Job:
        running = self._running.get(job_id)

        def stored(_: Enrichment) -> None:
            if running is not None:
                running.changed.set()

        runner = JobRunner(self.engine, self.jobs, on_result=stored)
        started = time.perf_counter()
        try:
            job = await runner.process(job_id, lines)
        except RequestError as exc:  # no indicator in the input: the job says so
            await self.jobs.set_state(
                job_id, JobState.FAILED, now=self.engine.clock.time(), message=str(exc)
            )
            job = await self.jobs.get(job_id)
        except Exception:
            logger.exception("job %s stopped", job_id)
            raise
        what = f"job {job.id} {job.state.value}"
        log_completed(logger, what, job.done, job.verdicts, time.perf_counter() - started)
        return job

    async def _dispatch(self, job_id: str, lines: list[str]) -> Job:
        """Read the input into the shared store, then put its chunks on the queue."""
        assert self.queue is not None
        try:
            job = await JobRunner(self.engine, self.jobs).ingest(job_id, lines)
        except RequestError as exc:  # no indicator in the input: the job says so
            now = self.engine.clock.time()
            await self.jobs.set_state(job_id, JobState.FAILED, now=now, message=str(exc))
            return await self.jobs.get(job_id)
        await self.queue.enqueue(job_id, range(job.chunks))
        logger.info("job %s queued: %d indicators in %d chunks", job_id, job.total, job.chunks)
        return job

    async def work(self, *, concurrency: int, name: str | None = None) -> None:
        """Work on queued chunks (any job's) until cancelled: the body of `threatintel worker`
        and of a server's embedded worker. Redis mode only."""
        if self.queue is None:
            raise RuntimeError("no job queue: REDIS_URL is not set")
        await self.queue.work(
            concurrency=concurrency,
            redelivery_timeout=self.settings.job_redelivery_timeout,
            name=name,
        )

    def _finished(self, job_id: str) -> None:
        running = self._running.pop(job_id, None)
        if running is not None:
            running.changed.set()  # a waiter reads the final state from the store

    async def job(self, job_id: str) -> Job:
        """The job's record and counters; UnknownJob when there is none."""
        return await self.jobs.get(job_id)

    async def cancel(self, job_id: str) -> Job:
        """Stop the job: its task here if it runs here; otherwise mark it cancelled, and in
        Redis mode take its chunks off the queue and signal the workers running them."""
        running = self._running.get(job_id)
        if running is not None:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        job = await self.jobs.get(job_id)
        if not job.finished:
            await self.jobs.set_state(job_id, JobState.CANCELLED, now=self.engine.clock.time())
        if self.queue is not None:
            # Queued chunks leave the queue; running ones are signalled, and any that starts
            # anyway sees the job cancelled and does nothing. A resume queues them again.
            await self.queue.cancel(job_id, range(job.chunks))
        return await self.jobs.get(job_id)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressHook | None = None,
    ) -> Job:
        """The job once finished, or as it stands after ``timeout`` seconds; ``on_progress``
        gets the job at each change (each stored result here, each poll for a remote job)."""
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        while True:
            job = await self.jobs.get(job_id)
            if on_progress is not None:
                on_progress(job)
            left = None if until is None else until - loop.time()
            if job.finished or (left is not None and left <= 0):
                return job
            running = self._running.get(job_id)
            step = REMOTE_POLL if left is None else min(REMOTE_POLL, left)
            if running is None:
                await asyncio.sleep(step)
                continue
            running.changed.clear()
            try:
                async with asyncio.timeout(left):
                    await running.changed.wait()
            except TimeoutError:
                pass

    async def results(self, job_id: str) -> Analysis:
        """The job's stored results as one Analysis (every format renders it)."""
        return await job_analysis(self.jobs, job_id)

    async def report(self, job_id: str, fmt: str) -> str:
        """The job's results in one of ``reports.FORMATS``; ValueError for an unknown one."""
        from threatintel.reports import FORMATS, render

        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        analysis = await self.results(job_id)
        return render(analysis, fmt, internal_domains=self.settings.internal_domains)

    # --- health -------------------------------------------------------------------------------
    async def status(self) -> ServiceStatus:
        """Sources configured, quota left per key (fingerprints), circuits, cache counts."""
        from threatintel.cache.admin import as_cache_admin

        counts: dict[str, CacheCounts] = {}
        where = type(self.engine.cache).__name__
        admin = as_cache_admin(self.engine.cache)
        stats = None
        if admin is not None:
            try:
                stats = await admin.stats()
            except Exception as exc:  # a status report still answers with the store down
                logger.warning("cache statistics unavailable: %s", type(exc).__name__)
                where = "unreachable"
        if stats is not None:
            where = stats.where
            for p in stats.providers:
                counts[p.provider] = CacheCounts(
                    entries=p.entries, hits=p.hits, misses=p.misses, hit_rate=p.hit_rate
                )
        providers = []
        for q in await self.engine.quota():
            providers.append(
                ProviderStatus(
                    provider=q.provider,
                    title=self.engine.providers[q.provider].title,
                    configured=q.configured,
                    circuit=q.breaker.value,
                    circuit_retry_after=round(q.breaker_retry_after, 1),
                    shared_store_reachable=not q.degraded,
                    keys=[
                        KeyStatus(
                            key=k.key,
                            blocked_until=_when(k.blocked_until),
                            windows=[
                                WindowStatus(
                                    window=w.window,
                                    limit=w.limit,
                                    used=w.used,
                                    remaining=w.remaining,
                                    resets_at=_when(w.reset_at),
                                    limit_from=w.source,
                                )
                                for w in k.windows
                            ],
                        )
                        for k in q.keys
                    ],
                    cache=counts.get(q.provider, CacheCounts()),
                )
            )
        return ServiceStatus(providers=providers, cache=where, jobs_running_here=self.jobs_running)

    async def queue_depth(self) -> int | None:
        """Chunks on the shared queue not finished yet; None without a queue or when Redis
        does not answer (a scrape still gets the rest)."""
        if self.queue is None:
            return None
        try:
            return await self.queue.depth()
        except Exception as exc:  # any Redis failure: the metric is left out, not the scrape
            logger.warning("job queue depth unavailable: %s", type(exc).__name__)
            return None

    @property
    def jobs_running(self) -> int:
        """Jobs running in this process now."""
        return len(self._running)

    async def ready(self) -> list[str]:
        """Why this instance cannot serve yet (empty when it can): the job store must answer
        and at least one source must be configured with its circuit not open."""
        from threatintel.jobs import UnknownJob

        problems: list[str] = []
        try:
            await self.jobs.get("readiness-probe")
        except UnknownJob:
            pass  # the store answered
        except Exception as exc:  # any store failure: the probe only needs to know
            problems.append(f"job store unreachable ({type(exc).__name__})")
        usable = [
            q.provider
            for q in await self.engine.quota()
            if q.configured and q.breaker.value != "open"
        ]
        if not usable:
            problems.append("no source is usable (none configured, or every circuit open)")
        return problems


__all__ = [
    "CacheCounts",
    "KeyStatus",
    "ProviderStatus",
    "Service",
    "ServiceStatus",
    "WindowStatus",
]
