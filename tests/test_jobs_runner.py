"""The job runner against the simulator: input streamed into chunks, resume without asking twice,
daily quotas that run out become gaps that a later run fills, asking only the missing source."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from support import REDIS_URL, redis_key_prefix, sim_settings
from threatintel.clock import LockstepClock
from threatintel.engine import Engine
from threatintel.errors import NoIndicators
from threatintel.jobs import JobState, JobStore, MemoryJobStore, SQLiteJobStore
from threatintel.jobs.runner import JobRunner, gap_summary, job_analysis
from threatintel.models import Enrichment
from threatintel.quota import MemoryQuotaStore
from threatintel.simulator import SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

START = 1_700_000_000.0
DOMAINS = [f"host{i}.example-{i % 7}.com" for i in range(23)]


def lines_of(values: list[str]) -> list[str]:
    """Each value defanged on its own line, plus a line of prose and a repeat in another case."""
    lines = [value.replace(".", "[.]") for value in values]
    return [lines[0], values[0].upper(), *lines[1:], "nothing to see here"]


def requests_per_indicator(sim: SimulatorServer, vendor: str | None = None) -> Counter[str]:
    return Counter(r.indicator for r in sim.log.filter(vendor=vendor) if r.indicator)


async def test_a_job_streams_its_input_into_chunks_and_answers_each_indicator_once(
    make_engine: Callable[..., Engine], sim: SimulatorServer
) -> None:
    """Every indicator gets one row with all its spellings; chunks hold BATCH_SIZE new ones."""
    engine = make_engine(batch_size=5, cache_ttl=0)
    store = MemoryJobStore()
    seen: list[Enrichment] = []
    runner = JobRunner(engine, store, on_result=seen.append)
    job = await runner.create("iocs.txt", providers=["otx", "virustotal"])
    job = await runner.process(job.id, lines_of(DOMAINS))
    assert job.state is JobState.DONE
    assert (job.total, job.done, job.chunks, job.chunks_done) == (23, 23, 5, 5)
    assert job.lines_read == 25 and job.sealed
    assert sorted(e.indicator.value for e in seen) == sorted(DOMAINS)
    first = Enrichment.model_validate_json(
        await store.result(job.id, f"domain:{DOMAINS[0]}") or "{}"
    )
    assert first.inputs == [DOMAINS[0].replace(".", "[.]"), DOMAINS[0].upper()]
    assert set(first.sources) == {"otx", "virustotal"}
    assert max(requests_per_indicator(sim).values()) == 2  # one per selected source
    analysis = await job_analysis(store, job.id)
    assert [e.indicator.value for e in analysis.enrichments] == DOMAINS  # input order


async def test_a_resumed_job_never_asks_again_what_was_answered(
    make_engine: Callable[..., Engine], sim: SimulatorServer, tmp_path: Path
) -> None:
    """Stopped halfway (cancelled), the job resumes on a new runner and asks only the rest:
    with the cache off, no indicator answered before the stop reaches the simulator again."""
    store = MemoryJobStore()
    engine = make_engine(batch_size=4, cache_ttl=0, max_workers=2)
    answered: list[str] = []
    runner = JobRunner(engine, store)
    job = await runner.create("iocs.txt", providers=["otx"])
    task = asyncio.ensure_future(runner.process(job.id, lines_of(DOMAINS)))

    def stop_after_ten(enrichment: Enrichment) -> None:
        answered.append(enrichment.indicator.value)
        if len(answered) == 10:
            task.cancel()

    runner.on_result = stop_after_ten
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped = await store.get(job.id)
    assert stopped.state is JobState.CANCELLED
    # Results are stored (and reported) a write at a time, so the cancel may land after an
    # eleventh: whatever was reported is exactly what was stored.
    assert stopped.done == len(answered) >= 10
    before = requests_per_indicator(sim)

    again = JobRunner(make_engine(batch_size=4, cache_ttl=0), store)
    done = await again.process(job.id, lines_of(DOMAINS), takeover=True)
    assert done.state is JobState.DONE and done.done == 23
    after = requests_per_indicator(sim)
    for value in answered:
        assert after[value] == before[value] == 1, value
    # With the cache off, what the stop caught unstored (in flight, or answered but not yet
    # handed to the writer: how many depends on the machine's load) is asked again on the
    # resume, once: nothing is asked a third time, and every indicator was asked.
    assert set(after) == set(DOMAINS)
    assert max(after.values()) <= 2


async def test_a_job_of_nothing_is_the_engines_no_indicators_error(
    make_engine: Callable[..., Engine], sim: SimulatorServer
) -> None:
    """Input without an indicator stops the job with NoIndicators listing what was skipped,
    the error the engine's stream gives, so every door that runs jobs reports it alike."""
    runner = JobRunner(make_engine(cache_ttl=0), MemoryJobStore())
    job = await runner.create("iocs.txt")
    with pytest.raises(NoIndicators) as caught:
        await runner.process(job.id, ["nothing to see here\n", "999.1.1.1\n"])
    assert [r.candidate for r in caught.value.rejected] == ["999.1.1.1"]
    assert len(sim.log) == 0


@pytest.fixture(params=["sqlite", "redis"])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """The stores that outlive a process: the SQLite file, and the real Redis (skipped
    with a reason when none runs)."""
    if request.param == "sqlite":
        store: JobStore = SQLiteJobStore(tmp_path / "jobs.sqlite3")
        yield store
        await store.aclose()
        return
    from threatintel.jobs.redis import RedisJobStore

    async with redis_key_prefix() as prefix:
        store = RedisJobStore(REDIS_URL, prefix=prefix)
        yield store
        await store.aclose()


async def test_a_spent_daily_quota_leaves_gaps_that_a_later_run_fills(
    make_engine: Callable[..., Engine], sim: SimulatorServer, shared_store: JobStore
) -> None:
    """VirusTotal's daily quota runs out mid-batch: the others go on, the job records which
    indicators miss VirusTotal and when it resets, and filling asks VirusTotal alone for them."""
    store = shared_store
    engine = make_engine(batch_size=6, cache_ttl=0, virustotal_daily_limit=5)
    runner = JobRunner(engine, store)
    job = await runner.create("iocs.txt", providers=["virustotal", "otx"])
    job = await runner.process(job.id, lines_of(DOMAINS))
    assert job.state is JobState.DONE and job.done == 23
    assert job.gaps == 18
    assert sim.log.count(vendor="virustotal") == 5
    assert sim.log.count(vendor="otx") == 23  # the others went on at their own pace
    (summary,) = await gap_summary(store, job.id)
    assert (summary.provider, summary.count) == ("virustotal", 18)
    assert summary.reset_at is not None and summary.reset_at > engine.clock.time()
    gaps = {g.key async for g in store.gaps(job.id)}

    sim.log.clear()  # a new day, or a paid key: the quota allows the rest
    later = JobRunner(make_engine(cache_ttl=0, virustotal_daily_limit=1_000), store)
    job = await later.fill_gaps(job.id)
    assert job.gaps == 0 and job.done == 23
    assert sim.log.count(vendor="otx") == 0  # only the missing source was asked
    asked = {f"domain:{r.indicator}" for r in sim.log.filter(vendor="virustotal")}
    assert asked == gaps
    analysis = await job_analysis(store, job.id)
    for enrichment in analysis.enrichments:
        assert enrichment.sources["virustotal"].status.answered
        assert enrichment.sources["otx"].status.answered


def slow_virustotal(sim: SimulatorServer, clock: LockstepClock, **extra: Any) -> Engine:
    """An engine whose VirusTotal allows 4 lookups a minute on both sides, waiting for its
    slots in the virtual time of ``clock`` (shared with the simulator)."""
    sim.config.clock = clock
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_minute(4),))
    settings = sim_settings(
        sim, virustotal_rate_limit=4, max_quota_wait=None, cache_backend="memory", **extra
    )
    return Engine(settings, clock=clock, quota_store=MemoryQuotaStore())


async def test_a_job_running_longer_than_its_lease_is_not_taken_over(sim: SimulatorServer) -> None:
    """Twelve lookups at 4 a minute take minutes of (virtual) time against a 30 s lease: the
    runner renews it meanwhile, so another runner asking at 45 s and 100 s gets no chunk."""
    clock = LockstepClock(START)
    store = MemoryJobStore()
    async with slow_virustotal(sim, clock, batch_size=100) as engine:
        runner = JobRunner(engine, store, lease=30)
        job = await runner.create("iocs.txt", providers=["virustotal"])
        rival: list[tuple[float, int | None, int]] = []

        async def other_runner() -> None:
            for at in (45.0, 100.0):
                await clock.sleep(START + at - clock.time())
                seq = await store.claim(job.id, "rival", now=clock.time(), lease=30)
                rival.append((at, seq, (await store.get(job.id)).done))

        watchers: list[asyncio.Task[None]] = []

        # Started once lookups wait on the clock for VirusTotal's next minute (a sleeper on its
        # own would move a lockstep clock at once).
        def start_the_rival(_: Enrichment) -> None:
            if not watchers:
                watchers.append(asyncio.create_task(other_runner()))

        runner.on_result = start_the_rival
        done = await runner.process(job.id, [f"45.10.{i}.9\n" for i in range(1, 13)])
        for watcher in watchers:  # done by now, unless the job ended early (then it fails)
            watcher.cancel()
    assert [(at, seq) for at, seq, _ in rival] == [(45.0, None), (100.0, None)]
    assert done.state is JobState.DONE and done.done == 12
    assert clock.time() - START > 100  # it did run past the lease, several times over
    assert all(answered < 12 for _, _, answered in rival)  # the job was still running


async def test_a_dead_runners_job_is_taken_over_once_its_lease_ends(sim: SimulatorServer) -> None:
    """A runner killed mid-job stops renewing: another process's runner (no takeover) gets its
    chunk once the lease has run out, not before, and finishes the job."""
    store = MemoryJobStore()
    lines = [f"45.11.{i}.9\n" for i in range(1, 7)]
    async with slow_virustotal(sim, LockstepClock(START), batch_size=100) as engine:
        runner = JobRunner(engine, store, lease=30)
        job = await runner.create("iocs.txt", providers=["virustotal"])
        task = asyncio.ensure_future(runner.process(job.id, lines))

        def die(_: Enrichment) -> None:
            task.cancel()

        runner.on_result = die
        with pytest.raises(asyncio.CancelledError):
            await task
        died = engine.clock.time()
    assert await store.claim(job.id, "early", now=died + 29, lease=30) is None
    clock = LockstepClock(died + 31)
    async with slow_virustotal(sim, clock, batch_size=100) as engine:
        later = JobRunner(engine, store, lease=30, worker="later")
        finished = await later.process(job.id, lines)
    assert finished.state is JobState.DONE and finished.done == 6
