"""The job runner against the simulator: input streamed into chunks, resume without asking twice,
daily quotas that run out become gaps that a later run fills, asking only the missing source."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from support import REDIS_URL, redis_key_prefix
from threatintel.engine import Engine
from threatintel.errors import NoIndicators
from threatintel.jobs import JobState, JobStore, MemoryJobStore, SQLiteJobStore
from threatintel.jobs.runner import JobRunner, gap_summary, job_analysis
from threatintel.models import Enrichment
from threatintel.simulator import SimulatorServer

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
    assert stopped.done == 10
    before = requests_per_indicator(sim)

    again = JobRunner(make_engine(batch_size=4, cache_ttl=0), store)
    done = await again.process(job.id, lines_of(DOMAINS), takeover=True)
    assert done.state is JobState.DONE and done.done == 23
    after = requests_per_indicator(sim)
    for value in answered:
        assert after[value] == before[value] == 1, value
    # Only lookups in flight at the stop can have been asked twice (the cache is off here).
    assert sum(after.values()) - len(DOMAINS) <= 2


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
