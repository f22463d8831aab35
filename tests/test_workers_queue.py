"""The job queue through each door: a CLI batch with REDIS_URL puts its chunks on the queue
(a `threatintel worker` runs them, or the CLI itself by default), and cancelling a distributed
job takes its chunks off the queue and stops the worker running one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from http_server import CONSOLE_SCRIPT
from support import VENDOR_NAMES, emptied_redis_database, sim_env, sim_settings
from test_workers import WorkerProcess, indicators
from threatintel.jobs import JobState
from threatintel.service import Service
from threatintel.simulator import SimulatorServer
from threatintel.simulator.config import VendorConfig
from threatintel.simulator.faults import FaultKind

#: A database of its own on the local Redis, emptied before and after (no other test uses it).
REDIS_DB = 11
#: Bound of every poll below (each waits on the event loop or a process, never a sleep).
WITHIN = 20.0


@pytest.fixture
def queue_redis() -> Iterator[str]:
    """REDIS_URL of an emptied database of its own; skips when no Redis answers."""
    with emptied_redis_database(REDIS_DB, "the job queue tests") as url:
        yield url


def batch(env: dict[str, str], path: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONSOLE_SCRIPT, "batch", str(path), "-o", str(output), "--quiet"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.slow
def test_a_cli_batch_with_redis_is_run_by_the_workers(
    sim: SimulatorServer, queue_redis: str, tmp_path: Path
) -> None:
    """`threatintel batch` with REDIS_URL and EMBEDDED_WORKER=false queues its chunks: a
    separate worker asks every lookup, and the CLI still writes every indicator once."""
    values = indicators(120)
    source = tmp_path / "iocs.txt"
    source.write_text("\n".join(values) + "\n")
    env = sim_env(sim, REDIS_URL=queue_redis, BATCH_SIZE="25")
    worker = WorkerProcess(env, 7, tmp_path)
    try:
        worker.wait_started()
        done = batch({**env, "EMBEDDED_WORKER": "false"}, source, tmp_path / "out.jsonl")
    finally:
        worker.stop()
    assert done.returncode == 0, done.stderr
    assert "chunks queued for `threatintel worker`s" in done.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["indicator"]["value"] for line in lines) == sorted(values)
    asked_by = {r.key for r in sim.log.records() if r.indicator is not None}
    assert asked_by == set(worker.keys.values())  # the worker asked everything, the CLI nothing


def test_a_cli_batch_with_redis_and_no_worker_runs_by_itself(
    sim: SimulatorServer, queue_redis: str, tmp_path: Path
) -> None:
    """With REDIS_URL and no worker running, a batch works on its own queued chunks (the
    default EMBEDDED_WORKER=true) and finishes."""
    values = indicators(40)
    source = tmp_path / "iocs.txt"
    source.write_text("\n".join(values) + "\n")
    done = batch(sim_env(sim, REDIS_URL=queue_redis, BATCH_SIZE="10"), source, tmp_path / "o.jsonl")
    assert done.returncode == 0, done.stderr
    assert "done: 40/40 indicators" in done.stderr
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["indicator"]["value"] for line in lines) == sorted(values)


@contextlib.asynccontextmanager
async def api_and_worker(
    sim: SimulatorServer, url: str, request_timeout: float = 5.0
) -> AsyncIterator[tuple[Service, Service]]:
    """An API-side Service that only queues and a worker Service working on the queue."""
    settings = sim_settings(
        sim, redis_url=url, batch_size=10, embedded_worker=False, request_timeout=request_timeout
    )
    async with Service(settings) as api, Service(settings) as worker:
        working = asyncio.create_task(worker.work(concurrency=1))
        try:
            yield api, worker
        finally:
            working.cancel()
            await asyncio.gather(working, return_exceptions=True)


async def until(condition: object, what: str) -> None:
    """Wait (bounded) for ``condition()`` to hold, yielding to the event loop in between."""
    assert callable(condition)
    try:
        async with asyncio.timeout(WITHIN):
            while not await condition():
                await asyncio.sleep(0.05)  # a poll interval, not a wait for an outcome
    except TimeoutError:
        raise AssertionError(f"not within {WITHIN:g} s: {what}") from None


async def until_queued(api: Service, job_id: str, *, chunks: int) -> None:
    """Wait (bounded) until the job's whole input is in and its ``chunks`` are queued."""

    async def queued() -> bool:
        return (await api.job(job_id)).sealed and (await api.queue_depth() or 0) == chunks

    await until(queued, "the job is on the queue")


async def test_cancelling_a_distributed_job_stops_its_chunks(
    sim: SimulatorServer, queue_redis: str
) -> None:
    """A cancel sent to the API side marks the job cancelled for everyone, takes its queued
    chunks off the queue and stops the chunk a worker is running (its hung lookups let go)."""
    sim.config.otx = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.HANG,))
    # Lookups hang longer than the test waits: only a cancel lets them go.
    async with api_and_worker(sim, queue_redis, request_timeout=3 * WITHIN) as (api, _):
        job = await api.submit(indicators(60), providers=["otx"])

        async def hung() -> bool:
            return sim.simulator.hangs.active > 0

        await until(hung, "a chunk is running")
        assert await api.queue_depth() == 6  # one running, five waiting
        body, _ = await api.metrics.exposition(api)
        assert b"threatintel_job_queue_depth 6.0" in body
        cancelled = await api.cancel(job.id)
        assert cancelled.state is JobState.CANCELLED

        async def emptied() -> bool:
            assert api.queue is not None
            return await api.queue.depth() == 0 and sim.simulator.hangs.active == 0

        await until(emptied, "the queue is empty and the hung lookups let go")
        final = await api.job(job.id)
        assert final.state is JobState.CANCELLED and final.done < final.total


async def test_progress_and_results_of_a_distributed_job_are_the_usual_calls(
    sim: SimulatorServer, queue_redis: str
) -> None:
    """A job run by another process's worker is followed with the same wait/job/results calls
    as a local one, and ends done with every indicator's result."""
    for name in VENDOR_NAMES:
        getattr(sim.config, name).latency = 0.02
    values = indicators(30)
    seen: list[int] = []
    async with api_and_worker(sim, queue_redis) as (api, _):
        job = await api.submit(values)
        job = await api.wait(job.id, timeout=WITHIN, on_progress=lambda j: seen.append(j.done))
        assert job.state is JobState.DONE and (job.done, job.total) == (30, 30)
        assert seen == sorted(seen) and seen[-1] == 30
        analysis = await api.results(job.id)
        assert sorted(e.indicator.value for e in analysis.enrichments) == sorted(values)


async def test_only_one_of_two_finishing_workers_marks_the_job_done(queue_redis: str) -> None:
    """Two workers finishing a job's last chunks at once both ask to mark it done: exactly
    one is told it did (so the job's end is reported once), and the job is done."""
    from threatintel.jobs.redis import RedisJobStore

    store = RedisJobStore(queue_redis)
    try:
        job = await store.create("iocs.txt", providers=[], now=1.0)
        assert not await store.finish(job.id, now=2.0)  # only a running job can finish
        await store.set_state(job.id, JobState.RUNNING, now=2.0)
        told = await asyncio.gather(store.finish(job.id, now=3.0), store.finish(job.id, now=3.0))
        assert sorted(told) == [False, True]
        assert (await store.get(job.id)).state is JobState.DONE
    finally:
        await store.aclose()


async def test_a_cli_batch_runs_only_its_own_chunks_not_another_jobs(
    sim: SimulatorServer, queue_redis: str, tmp_path: Path
) -> None:
    """With another job waiting on the queue and no worker running, a CLI batch (default
    EMBEDDED_WORKER) finishes its own job and asks no lookup for the other one."""
    other = indicators(40)
    settings = sim_settings(sim, redis_url=queue_redis, batch_size=10, embedded_worker=False)
    async with Service(settings) as api:
        queued = await api.submit(other)
        await until_queued(api, queued.id, chunks=4)
        mine = [f"198.51.{i}.{i + 1}" for i in range(3)]
        source = tmp_path / "mine.txt"
        source.write_text("\n".join(mine) + "\n")
        env = sim_env(sim, REDIS_URL=queue_redis, BATCH_SIZE="10")
        done = await asyncio.to_thread(batch, env, source, tmp_path / "mine.jsonl")
        assert done.returncode == 0, done.stderr
        asked = {r.indicator for r in sim.log.records() if r.indicator is not None}
        assert asked and asked <= set(mine)  # only the batch's own indicators
        still = await api.job(queued.id)
        assert still.done == 0 and await api.queue_depth() == 4


def worker_run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONSOLE_SCRIPT, "worker"],
        env={k: v for k, v in {**os.environ, **env}.items() if v},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_without_redis_says_it_needs_redis_url() -> None:
    """`threatintel worker` without REDIS_URL stops at once with one line naming it (exit 2)."""
    done = worker_run({"REDIS_URL": ""})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: threatintel worker needs REDIS_URL (the queue and job store it shares with the "
        "servers); without Redis, batches run in the process that submits them"
    ]


def test_a_worker_whose_redis_does_not_answer_stops_with_one_error_line() -> None:
    """A worker started while its Redis is down exits 1 (a supervisor restarts it) after one
    ERROR line saying so, and the URL's password appears nowhere."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = worker_run({"REDIS_URL": f"redis://:hunter2-secret@127.0.0.1:{port}/5"})
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Redis does not answer" in errors[0], done.stderr
    assert "hunter2" not in done.stderr


async def test_a_cancelled_distributed_job_resumes_with_batch(
    sim: SimulatorServer, queue_redis: str, tmp_path: Path
) -> None:
    """A distributed job cancelled before any worker ran it is finished by
    `threatintel batch --resume ID`, every indicator in its output once."""
    values = indicators(30)
    settings = sim_settings(sim, redis_url=queue_redis, batch_size=10, embedded_worker=False)
    async with Service(settings) as api:
        job = await api.submit(values)
        await until_queued(api, job.id, chunks=3)
        assert (await api.cancel(job.id)).state is JobState.CANCELLED
        env = sim_env(sim, REDIS_URL=queue_redis, BATCH_SIZE="10")
        output = tmp_path / "resumed.jsonl"
        done = await asyncio.to_thread(
            subprocess.run,
            [CONSOLE_SCRIPT, "batch", "--resume", job.id, "-o", str(output), "--quiet"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert (await api.job(job.id)).state is JobState.DONE
    lines = output.read_text().splitlines()
    assert sorted(json.loads(line)["indicator"]["value"] for line in lines) == sorted(values)


async def test_a_chunk_that_fails_its_last_retry_fails_its_job_with_the_resume_command(
    sim: SimulatorServer, queue_redis: str
) -> None:
    """When a chunk has failed every retry, its job ends failed (not 'running' forever) with a
    message naming the chunk and the command that resumes it."""
    from threatintel.jobs import JobStoreError
    from threatintel.jobs.queue import RETRY_ATTEMPTS, ChunkRunner
    from threatintel.jobs.runner import JobRunner

    settings = sim_settings(sim, redis_url=queue_redis, batch_size=10, embedded_worker=False)
    async with Service(settings) as api:
        job = await api.submit(indicators(20))
        await until_queued(api, job.id, chunks=2)
        chunks = ChunkRunner(JobRunner(api.engine, api.jobs))
        await chunks.give_up(job.id, 1, JobStoreError("Redis job store failed (OutOfMemoryError)"))
        failed = await api.job(job.id)
        assert failed.state is JobState.FAILED
        assert failed.message == (
            f"chunk 1 failed {RETRY_ATTEMPTS} times (JobStoreError); "
            f"resume with: threatintel batch --resume {job.id}"
        )
