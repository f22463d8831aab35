"""Engine.stream: completion order without a chunk barrier, lanes per provider, deadlines.

The engine runs against the simulator on a LockstepClock shared with it, so VirusTotal's free
tier (4 lookups a minute) passes in virtual time and no test sleeps.
"""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from support import sim_settings
from threatintel._keyguard import KeyGuard
from threatintel.cache import MemoryCache
from threatintel.clock import LockstepClock
from threatintel.engine import Engine, LookupEvent
from threatintel.intake import Intake
from threatintel.models import Enrichment, SourceStatus
from threatintel.quota import MemoryQuotaStore
from threatintel.reports import FORMATS, render
from threatintel.settings import Settings
from threatintel.simulator import SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

START = 1_700_000_000.0
OTHERS = ("otx", "abuseipdb", "ipinfo")


def ips(n: int, *, offset: int = 0) -> list[str]:
    return [f"45.{(i + offset) // 250 + 10}.{(i + offset) % 250 + 1}.9" for i in range(n)]


def vt_at(sim: SimulatorServer, clock: LockstepClock, per_minute: int, **extra: Any) -> Settings:
    """VirusTotal limited to ``per_minute`` on both sides, waiting for its slots."""
    sim.config.clock = clock
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_minute(per_minute),))
    values: dict[str, Any] = {
        "virustotal_rate_limit": per_minute,
        "max_quota_wait": None,
        "cache_backend": "memory",
    }
    return sim_settings(sim, **(values | extra))


async def warm(sim: SimulatorServer, cache: MemoryCache, values: list[str]) -> None:
    """Answer ``values`` into ``cache`` with no limits in the way."""
    async with Engine(sim_settings(sim), cache=cache, quota_store=MemoryQuotaStore()) as engine:
        await engine.analyze(values)


async def test_stream_yields_in_completion_order_without_a_chunk_barrier(
    sim: SimulatorServer,
) -> None:
    """Cached indicators listed after one that waits a minute for VirusTotal come out first,
    at once, although BATCH_SIZE=2 would have put them in a later chunk."""
    clock = LockstepClock(START)
    cache = MemoryCache(clock=clock)
    cached = ips(3, offset=100)
    await warm(sim, cache, cached)
    settings = vt_at(sim, clock, 1, batch_size=2)
    order: list[tuple[str, float]] = []
    async with Engine(settings, clock=clock, cache=cache, quota_store=MemoryQuotaStore()) as e:
        async for enrichment in e.stream([*ips(2), *cached]):
            order.append((enrichment.indicator.value, clock.time()))
    values = [value for value, _ in order]
    # The second new one waits for VirusTotal's next minute; everything else is ready before.
    assert values[-1] == ips(2)[1]
    assert set(values[:3]) <= {*cached, ips(2)[0]}
    assert all(at == START for value, at in order if value in cached)
    assert order[-1][1] >= START + 60


async def test_free_virustotal_does_not_slow_the_other_providers(sim: SimulatorServer) -> None:
    """With VirusTotal at 4/min, OTX, AbuseIPDB and IPinfo answer all of a 100-indicator batch
    before the first minute is out, cache hits come back at once, and VirusTotal sees no 429."""
    clock = LockstepClock(START)
    cache = MemoryCache(clock=clock)
    cached = ips(20, offset=500)
    await warm(sim, cache, cached)
    sim.log.clear()
    events: list[tuple[LookupEvent, float]] = []
    settings = vt_at(sim, clock, 4, virustotal_daily_limit=1_000)
    yielded: dict[str, float] = {}
    async with Engine(
        settings,
        clock=clock,
        cache=cache,
        quota_store=MemoryQuotaStore(),
        on_lookup=lambda event: events.append((event, clock.time())),
    ) as engine:
        async for enrichment in engine.stream([*ips(80), *cached]):
            yielded[enrichment.indicator.value] = clock.time()
    assert len(yielded) == 100
    others = [(event, at) for event, at in events if event.provider in OTHERS]
    assert len(others) == 300
    assert all(event.status.answered for event, _ in others)
    # The other providers never waited for VirusTotal's minutes.
    assert max(at for _, at in others) < START + 60
    # VirusTotal took its 20 minutes for the 80 new ones, and was never overrun.
    vt_times = [at for event, at in events if event.provider == "virustotal" and not event.cached]
    assert len(vt_times) == 80 and max(vt_times) >= START + 19 * 60
    assert sim.log.count(vendor="virustotal", status=429) == 0
    # Cache hits did not queue behind the quota waits.
    assert all(yielded[value] == START for value in cached)


async def test_a_deadline_gives_pending_and_the_answer_is_cached_afterwards(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Sources still waiting for quota at the caller's deadline come back pending, not failed
    (and the "completed in" line counts them); the lookup goes on, and the next call gets its
    answer from the cache without a request."""
    caplog.set_level(logging.INFO, logger="threatintel.engine")
    clock = LockstepClock(START)
    cache = MemoryCache(clock=clock)
    settings = vt_at(sim, clock, 4)
    values = ips(6)
    async with Engine(settings, clock=clock, cache=cache, quota_store=MemoryQuotaStore()) as e:
        first = await e.analyze(values, deadline=30)
        statuses = [en.sources["virustotal"].status for en in first.enrichments]
        assert statuses.count(SourceStatus.PENDING) == 2
        done = [r.getMessage() for r in caplog.records if "completed in" in r.getMessage()]
        assert len(done) == 1 and done[0].endswith("; 2 source answers pending)"), done
        for enrichment in first.enrichments:
            assert all(enrichment.sources[name].status.answered for name in OTHERS)
        pending = [
            en for en in first.enrichments if en.sources["virustotal"].status.value == "pending"
        ]
        for enrichment in pending:
            result = enrichment.sources["virustotal"]
            assert not result.status.answered and not result.status.failed
            assert result.message is not None and "cached" in result.message
            assert any("pending" in reason for reason in enrichment.verdict.reasons)
        await e.drain()
        asked = sim.log.count(vendor="virustotal")
        second = await e.analyze([en.indicator.value for en in pending])
    assert asked == 6
    assert sim.log.count(vendor="virustotal") == 6  # no second request for the pending ones
    for enrichment in second.enrichments:
        assert enrichment.sources["virustotal"].status.answered
        assert enrichment.sources["virustotal"].cached


async def test_analyze_is_the_stream_collected_in_input_order(sim: SimulatorServer) -> None:
    """analyze() returns what stream() yields (same indicators, spellings, verdicts), in input
    order, with values and text combined and deduplicated in the engine."""
    values = ["hxxp://cdn-update-check[.]net/a", "45.142.212.61", "CDN-UPDATE-CHECK.NET."]
    text = ["seen 185.220.101[.]4 and 45.142.212.61\n", "then cdn-update-check.net again"]

    def shape(enrichment: Enrichment) -> tuple[Any, ...]:
        statuses = {n: r.status for n, r in enrichment.sources.items()}
        return enrichment.indicator, enrichment.inputs, statuses, enrichment.verdict

    async with Engine(sim_settings(sim, cache_backend="memory")) as engine:
        analysis = await engine.analyze(values, text=text)
    async with Engine(sim_settings(sim, cache_backend="memory")) as engine:
        streamed = [e async for e in engine.stream(values, text=iter(text))]
    assert sorted(map(repr, map(shape, streamed))) == sorted(
        map(repr, map(shape, analysis.enrichments))
    )
    assert [e.indicator.value for e in analysis.enrichments] == [
        "http://cdn-update-check.net/a",
        "45.142.212.61",
        "cdn-update-check.net",
        "185.220.101.4",
    ]


async def test_every_spelling_of_an_indicator_is_listed(engine: Engine) -> None:
    """http://host:80/x and hxxp://host/x come back as one URL listing both spellings; an
    upper-case hash and a trailing-dot domain list theirs too."""
    digest = "44d88612fea8a8f36de82e1278abb02f"
    analysis = await engine.analyze(
        [
            "http://parcel-notice.com:80/x",
            "hxxp://parcel-notice[.]com/x",
            digest.upper(),
            digest,
            "Parcel-Notice.com.",
        ]
    )
    by_value = {e.indicator.value: e.inputs for e in analysis.enrichments}
    assert by_value["http://parcel-notice.com/x"] == [
        "http://parcel-notice.com:80/x",
        "hxxp://parcel-notice[.]com/x",
    ]
    assert by_value[digest] == [digest.upper(), digest]
    assert by_value["parcel-notice.com"] == ["Parcel-Notice.com."]


async def test_a_file_of_one_indicator_per_line_keeps_each_lines_spelling(engine: Engine) -> None:
    """Text read line by line keeps a line's spelling when the line is one indicator."""
    lines = ["http://parcel-notice.com:80/x\n", "hxxp://parcel-notice[.]com/x\r\n", "noise line\n"]
    (enrichment,) = [e async for e in engine.stream(text=lines)]
    assert enrichment.inputs == ["http://parcel-notice.com:80/x", "hxxp://parcel-notice[.]com/x"]


def cve_lines(count: int, distinct: int) -> Iterator[str]:
    for i in range(count):
        yield f"CVE-2024-{i % distinct:06d}\n"


@pytest.mark.timeout(180)
async def test_a_hundred_thousand_lines_stream_in_bounded_memory(engine: Engine) -> None:
    """100,000 lines naming 20,000 distinct indicators stream through with a small peak of
    traced memory: neither the input, nor the results, nor the seen-set is held whole."""
    intake = Intake(KeyGuard(engine.settings), seen_in_memory=5_000)
    count = 0
    tracemalloc.start()
    try:
        async for enrichment in engine.stream(text=cve_lines(100_000, 20_000), intake=intake):
            assert enrichment.sources["virustotal"].status is SourceStatus.NOT_APPLICABLE
            count += 1
        _, peak = tracemalloc.get_traced_memory()
        assert intake.spilled  # the seen-set outgrew its 5,000 in memory
    finally:
        tracemalloc.stop()
        intake.close()
    assert count == 20_000
    assert intake.counts.lines == 100_000 and intake.counts.duplicates == 80_000
    # Holding the 20,000 enrichments alone would take about 180 MB.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_every_report_renders_a_pending_source(engine: Engine, fmt: str) -> None:
    """An analysis cut by its deadline renders in every format, pending shown, nothing failed."""
    analysis = await engine.analyze(["45.142.212.61", "evil-update.com"], deadline=0)
    statuses = {r.status for e in analysis.enrichments for r in e.sources.values()}
    assert statuses == {SourceStatus.PENDING, SourceStatus.NOT_APPLICABLE}
    output = render(analysis, fmt)
    if fmt in ("table", "json", "jsonl", "markdown", "csv"):
        assert "pending" in output
