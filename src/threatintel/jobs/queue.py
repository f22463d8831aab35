"""JobQueue: a job's chunks as tasks on Docket, for workers on any number of machines.

    async with JobQueue(redis_url, runner=chunks) as queue:   # chunks: ChunkRunner or None
        await queue.enqueue(job.id, range(job.chunks))        # after the input is in the store
        await queue.work(concurrency=4, redelivery_timeout=60)  # a worker: until cancelled
        await queue.cancel(job.id, range(job.chunks))

Why Docket: fastmcp's background tasks (MCP ``analyze_batch``) already run on it, so one
established Redis-backed queue engine serves both, and it gives what a chunk needs: a task keyed
``<job>:<seq>`` is never queued twice while it is queued or running (a resume re-enqueues every
chunk not done, and the ones still waiting stay single), a worker renews its lease while a chunk
runs however long its lookups wait for quota, and a worker that dies (SIGKILL, a lost machine)
stops renewing, so its chunk is delivered again after ``JOB_REDELIVERY_TIMEOUT``.

At-least-once is made exact by the job store and the cache: a chunk run twice skips the
indicators that already have a result row, writes each row idempotently per indicator, and the
lookups the first run answered come from the shared cache (the cross-instance lock makes a
second asker wait for the first one's answer rather than ask upstream).

The docket is our own (``threatintel-jobs``), not the MCP tasks' one: a Docket worker drops a
task it has no function for, and the MCP task functions live in a server, so the two kinds of
worker must not read one stream. Docket is imported when a queue opens: only Redis mode pays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from threatintel.jobs.base import JobState
from threatintel.logs import log_completed

if TYPE_CHECKING:
    from threatintel.jobs.base import JobStore
    from threatintel.jobs.runner import JobRunner
    from threatintel.settings import Settings

logger = logging.getLogger("threatintel.worker")

#: The docket (Redis key prefix and stream) of job chunks.
QUEUE_NAME: Final = "threatintel-jobs"
#: The task's registered name: workers resolve it by name, so every version agrees on it.
TASK: Final = "threatintel.run_chunk"
#: A chunk that failed (the job store did not answer, Redis full) is tried again this often,
#: 2 s apart at first, doubling up to 5 minutes (about 20 minutes in all); after the last
#: attempt its job is marked failed, saying how to resume it.
RETRY_ATTEMPTS: Final = 8
RETRY_MIN_DELAY: Final = timedelta(seconds=2)
RETRY_MAX_DELAY: Final = timedelta(minutes=5)


def queue_url(settings: Settings, store: JobStore) -> str | None:
    """The Redis URL of the shared queue a job in ``store`` goes on, or None: jobs go on it
    when REDIS_URL is set and the job store is Redis's (else they run in-process)."""
    if settings.redis_url is None:
        return None
    from threatintel.jobs.redis import RedisJobStore  # the redis client only in Redis mode

    return settings.redis_url.get_secret_value() if isinstance(store, RedisJobStore) else None


def chunk_key(job_id: str, seq: int) -> str:
    """The task key of one chunk: Docket keeps one task per key queued or running."""
    return f"{job_id}:{seq}"


class ChunkRunner:
    """What a worker does with one delivered chunk (any process: a `threatintel worker`, a
    server or a CLI batch working on its own job). The queue runs only over the Redis job
    store (``queue_url``), whose atomic start and finish it relies on."""

    def __init__(self, runner: JobRunner) -> None:
        from threatintel.jobs.redis import RedisJobStore

        if not isinstance(runner.store, RedisJobStore):
            raise TypeError("queued chunks run over the Redis job store only")
        self.runner = runner
        self.store = runner.store

    async def __call__(self, job_id: str, seq: int) -> None:
        store = self.store
        now = self.runner.engine.clock.time
        state = await store.start(job_id, now=now())
        if state is None:
            logger.info("job %s is gone; its chunk %d is dropped", job_id, seq)
            return
        if state is not JobState.RUNNING:  # cancelled, failed or done: nothing to run
            logger.debug("job %s is %s; chunk %d skipped", job_id, state.value, seq)
            return
        logger.info("job %s chunk %d started", job_id, seq)
        began = time.perf_counter()
        asked = await self.runner.run_chunk(job_id, seq)
        logger.info(
            "job %s chunk %d done: %d indicators in %.2fs",
            job_id,
            seq,
            asked,
            time.perf_counter() - began,
        )
        job = await store.get(job_id)
        if job.sealed and job.chunks_done >= job.chunks and job.state is JobState.RUNNING:
            # Two workers may finish the last chunks at once: one transition, one report.
            if not await store.finish(job_id, now=now()):
                return
            log_completed(
                logger, f"job {job_id} done", job.done, job.verdicts, now() - job.created_at
            )

    async def give_up(self, job_id: str, seq: int, exc: Exception) -> None:
        """The chunk failed on its last attempt: the job stops as failed, saying which chunk
        and how to go on (not a silent stall)."""
        message = (
            f"chunk {seq} failed {RETRY_ATTEMPTS} times ({type(exc).__name__}); "
            f"resume with: threatintel batch --resume {job_id}"
        )
        logger.error("job %s: %s", job_id, message)
        try:
            now = self.runner.engine.clock.time()
            await self.store.set_state(job_id, JobState.FAILED, now=now, message=message)
        except Exception as again:  # the store is what failed: the log line is all we leave
            logger.error("job %s could not be marked failed (%s)", job_id, type(again).__name__)


class JobQueue:
    """Job chunks on the Docket at ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, runner: ChunkRunner | None = None) -> None:
        from docket import Docket  # only a Redis-mode process pays for it

        self.runner = runner
        self.docket = Docket(name=QUEUE_NAME, url=url)

    async def __aenter__(self) -> JobQueue:
        from docket import ExponentialRetry

        await self.docket.__aenter__()
        runner = self.runner

        async def run_chunk(
            job_id: str,
            seq: int,
            retry: ExponentialRetry = ExponentialRetry(  # noqa: B008 (Docket's dependency style)
                attempts=RETRY_ATTEMPTS,
                minimum_delay=RETRY_MIN_DELAY,
                maximum_delay=RETRY_MAX_DELAY,
            ),
        ) -> None:
            if runner is None:  # a queue that only submits never runs a worker
                raise RuntimeError("this process has no chunk runner")
            try:
                await runner(job_id, seq)
            except Exception as exc:
                if retry.attempt < RETRY_ATTEMPTS:
                    logger.warning(
                        "job %s chunk %d failed (%s); trying again (attempt %d of %d)",
                        job_id,
                        seq,
                        type(exc).__name__,
                        retry.attempt + 1,
                        RETRY_ATTEMPTS,
                    )
                    raise
                await runner.give_up(job_id, seq, exc)

        self.docket.register(run_chunk, names=[TASK])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.docket.__aexit__(exc_type, exc, tb)

    async def enqueue(self, job_id: str, chunks: Iterable[int]) -> int:
        """Queue these chunks of the job; a chunk already queued or running stays as it is.
        How many were newly queued."""
        from docket import Disposition

        calls = [self.docket.call(TASK, key=chunk_key(job_id, seq))(job_id, seq) for seq in chunks]
        executions = await self.docket.add_many(calls)
        return sum(e.disposition is Disposition.SCHEDULED for e in executions)

    async def take(self, job_id: str, seq: int) -> bool:
        """Take a chunk still waiting on the queue off it, to run it here; False when a
        worker has it already (or it is done). Used by a `batch` that helps with its own job
        only, never with another's."""
        from docket.execution import ExecutionState

        key = chunk_key(job_id, seq)
        execution = await self.docket.get_execution(key)
        if execution is None:
            return False
        await execution.sync()
        if execution.state not in (ExecutionState.SCHEDULED, ExecutionState.QUEUED):
            return False
        await self.docket.cancel(key)
        return True

    async def cancel(self, job_id: str, chunks: Iterable[int]) -> None:
        """Take the job's queued chunks off the queue and signal the running ones to stop."""
        for seq in chunks:
            await self.docket.cancel(chunk_key(job_id, seq))

    async def depth(self) -> int:
        """Chunks waiting for a worker (queued now or scheduled for a retry)."""
        async with self.docket.redis() as redis:
            client: Any = redis
            waiting = await client.xlen(self.docket.stream_key)
            later = await client.zcard(self.docket.queue_key)
        return int(waiting) + int(later)

    async def work(
        self, *, concurrency: int, redelivery_timeout: float, name: str | None = None
    ) -> None:
        """Work on chunks until cancelled; a chunk in flight when cancelled is delivered again
        (to this or another worker) once its lease runs out."""
        from docket import Worker

        async with Worker(
            self.docket,
            name=name,
            concurrency=concurrency,
            redelivery_timeout=timedelta(seconds=redelivery_timeout),
            schedule_automatic_tasks=False,
        ) as worker:
            await worker.run_forever()


__all__ = ["QUEUE_NAME", "TASK", "ChunkRunner", "JobQueue", "chunk_key", "queue_url"]
