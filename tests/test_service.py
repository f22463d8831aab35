"""The Service every server door uses: analyses, one lookup, extraction, jobs, status."""

from __future__ import annotations

import pytest

from support import TEST_KEYS, sim_settings
from threatintel.errors import NoIndicators, UnknownProvider
from threatintel.jobs import JobState, MemoryJobStore, UnknownJob
from threatintel.models import SourceStatus
from threatintel.service import Service
from threatintel.simulator import SimulatorServer


async def test_analyze_and_lookup_answer_from_every_source(sim: SimulatorServer) -> None:
    """analyze() and lookup() give each indicator an answer from all four sources."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        analysis = await service.analyze(["8.8.8.8"], text="and hxxp://evil[.]com/x")
        assert [e.indicator.value for e in analysis.enrichments] == ["8.8.8.8", "http://evil.com/x"]
        one = await service.lookup("8[.]8[.]8[.]8")
        assert one.indicator.value == "8.8.8.8"
        assert set(one.sources) == {"virustotal", "otx", "abuseipdb", "ipinfo"}


async def test_request_errors_come_from_the_engine(sim: SimulatorServer) -> None:
    """A value that is no indicator and an unknown provider are RequestErrors naming why."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        with pytest.raises(NoIndicators):
            await service.lookup("not an indicator")
        with pytest.raises(UnknownProvider):
            await service.analyze(["8.8.8.8"], providers=["shodan"])


async def test_extract_screens_our_own_keys(sim: SimulatorServer) -> None:
    """extract() returns indicators and never one of the configured keys."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        found = service.extract(f"1.2.3.4 {TEST_KEYS['virustotal']} evil[.]com")
        values = [i.value for i in found.indicators]
        assert "1.2.3.4" in values and "evil.com" in values
        assert all(TEST_KEYS["virustotal"] not in v for v in values)


async def test_a_submitted_job_runs_to_done_and_reports(sim: SimulatorServer) -> None:
    """submit() runs the job here; wait() sees progress and the end; report() renders it."""
    seen: list[int] = []
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        job = await service.submit(["8.8.8.8", "1.1.1.1"], text="evil.com\n")
        job = await service.wait(job.id, timeout=30, on_progress=lambda j: seen.append(j.done))
        assert job.state is JobState.DONE and job.total == 3 and job.done == 3
        assert seen[-1] == 3
        body = await service.report(job.id, "csv")
        assert "8.8.8.8" in body and "evil.com" in body
        with pytest.raises(ValueError, match="unknown format"):
            await service.report(job.id, "pdf")
        with pytest.raises(UnknownJob):
            await service.job("20000101-000000-abcdef")


async def test_a_job_without_indicators_fails_saying_why(sim: SimulatorServer) -> None:
    """A job whose text holds no indicator ends failed with the reason as its message."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        job = await service.submit(text="nothing to see here\n")
        job = await service.wait(job.id, timeout=30)
        assert job.state is JobState.FAILED
        assert job.message and "no indicator" in job.message.lower()


async def test_status_and_readiness(sim: SimulatorServer) -> None:
    """status() lists each source with key fingerprints only; ready() is empty when usable."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        await service.lookup("8.8.8.8")
        status = await service.status()
        assert [p.provider for p in status.providers] == [
            "virustotal",
            "otx",
            "abuseipdb",
            "ipinfo",
        ]
        dumped = status.model_dump_json()
        assert all(key not in dumped for key in TEST_KEYS.values())
        vt = status.providers[0]
        assert vt.configured and vt.circuit == "closed" and vt.keys
        assert await service.ready() == []


async def test_keyless_sources_keep_it_ready(sim: SimulatorServer) -> None:
    """With no key at all, OTX and IPinfo (they answer without one) keep the instance ready."""
    settings = sim_settings(
        sim, virustotal_api_key="", otx_api_key="", abuseipdb_api_key="", ipinfo_api_key=""
    )
    async with Service(settings, store=MemoryJobStore()) as service:
        assert await service.ready() == []
        configured = [p.provider for p in (await service.status()).providers if p.configured]
        assert configured == ["otx", "ipinfo"]


async def test_not_ready_when_the_job_store_is_unreachable(sim: SimulatorServer) -> None:
    """A Redis that does not answer makes ready() name the job store (never the URL)."""
    settings = sim_settings(sim, cache_backend="redis", redis_url="redis://:pw@127.0.0.1:1/0")
    async with Service(settings) as service:
        problems = await service.ready()
    assert any("job store unreachable" in p for p in problems)
    assert all("pw" not in p for p in problems)


def test_pending_status_exists() -> None:
    """PENDING is the status a deadline gives (the doors render it)."""
    assert SourceStatus.PENDING.value == "pending"


async def test_status_answers_with_the_shared_store_down(sim: SimulatorServer) -> None:
    """status() still lists the sources when Redis does not answer, saying the cache is
    unreachable and the quota numbers local."""
    settings = sim_settings(sim, cache_backend="redis", redis_url="redis://:pw@127.0.0.1:1/0")
    async with Service(settings, store=MemoryJobStore()) as service:
        status = await service.status()
    assert status.cache == "unreachable"
    assert len(status.providers) == 4
    assert not any(p.shared_store_reachable for p in status.providers)


async def test_lookup_matches_the_stream(sim: SimulatorServer) -> None:
    """Engine.lookup gives what the stream gives for one value: the same indicator, spellings,
    sources and verdict; a value holding a key, or none, is NoIndicators."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        one = await service.lookup("hxxps://login-verify[.]com/a")
        streamed = [e async for e in service.engine.stream(["hxxps://login-verify[.]com/a"])]
        assert one.indicator == streamed[0].indicator
        assert one.inputs == streamed[0].inputs == ["hxxps://login-verify[.]com/a"]
        assert one.verdict == streamed[0].verdict
        assert set(one.sources) == set(streamed[0].sources)
        for bad in (TEST_KEYS["abuseipdb"], "   ", "☃"):
            with pytest.raises(NoIndicators):
                await service.lookup(bad)
