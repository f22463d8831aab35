"""Quota-aware resilience end to end: the engine against the simulator over HTTP.

Time is a LockstepClock shared by the engine and the simulator: it jumps to the next wake-up
only when no lookup is still talking HTTP, so a 25-minute VirusTotal batch runs in seconds and
no test sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from support import TEST_KEYS, sim_settings
from threatintel.cache import MemoryCache
from threatintel.clock import LockstepClock, VirtualClock
from threatintel.engine import Engine
from threatintel.models import SourceStatus
from threatintel.quota import MemoryQuotaStore
from threatintel.quota.redis import RedisQuotaStore
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

REDIS_URL = "redis://127.0.0.1:6379/0"
START = 1_700_000_000.0  # 22:13:20 UTC: a batch of 25 minutes stays inside one UTC day

S = SourceStatus


def ips(n: int, *, offset: int = 0) -> list[str]:
    """Distinct public-looking addresses (the simulator answers any of them)."""
    return [f"45.{(i + offset) // 250 + 10}.{(i + offset) % 250 + 1}.7" for i in range(n)]


def free_tier(sim: SimulatorServer, clock: LockstepClock) -> None:
    """The simulator enforces the free tiers' windows, on the shared virtual clock."""
    sim.config.clock = clock
    sim.config.virustotal = VendorConfig(
        windows=(SimWindow.per_minute(4), SimWindow.per_day(500), SimWindow.per_month(15_500))
    )
    sim.config.abuseipdb = VendorConfig(windows=(SimWindow.per_day(1_000),))
    sim.config.ipinfo = VendorConfig(windows=(SimWindow.per_month(50_000),))


FREE_TIER_SETTINGS: dict[str, Any] = {
    "virustotal_rate_limit": 4,
    "virustotal_daily_limit": 500,
    "virustotal_monthly_limit": 15_500,
    "abuseipdb_rate_limit": 1_000,
    "ipinfo_rate_limit": 50_000,
    "max_quota_wait": None,
    "max_retries": 3,
    "cache_backend": "memory",
}


def budget_use(times: Sequence[float], limit: int, window: float) -> float:
    """Requests made / the most a `limit per window` sliding quota allows over their span."""
    span = max(times) - min(times)
    allowed = limit * (math.floor(span / window + 1e-9) + 1)
    return len(times) / allowed


def max_in_any_window(times: Sequence[float], window: float) -> int:
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def vt_times(sim: SimulatorServer, key: str | None = None) -> list[float]:
    records = sim.log.filter(vendor="virustotal")
    return [r.timestamp for r in records if key is None or r.key == key]


@pytest.fixture
def clock() -> LockstepClock:
    return LockstepClock(START)


# --- coalescing ---------------------------------------------------------------------------


async def test_sixty_concurrent_lookups_make_one_call_per_provider(
    sim: SimulatorServer,
) -> None:
    """Sixty concurrent analyses of one indicator share one upstream call per provider."""
    async with Engine(sim_settings(sim, cache_backend="memory")) as engine:
        results = await asyncio.gather(*(engine.analyze(["45.142.212.61"]) for _ in range(60)))
        stats = engine.stats
    for vendor in ("virustotal", "otx", "abuseipdb", "ipinfo"):
        assert sim.log.count(vendor=vendor) == 1, vendor
        assert stats[vendor].upstream_calls == 1
        assert stats[vendor].coalesced + stats[vendor].cache_hits == 59
    labels = {r.enrichments[0].verdict.label for r in results}
    assert len(labels) == 1


# --- rate limits: one key, three keys, three instances ------------------------------------


async def test_free_tier_batch_has_no_429_and_uses_the_budget(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """100 IPs at VirusTotal's 4/minute: zero 429s and at least 95% of the budget used."""
    free_tier(sim, clock)
    async with Engine(sim_settings(sim, **FREE_TIER_SETTINGS), clock=clock) as engine:
        analysis = await engine.analyze(ips(100))
    assert len(analysis.enrichments) == 100
    assert sim.log.count(status=429) == 0
    times = vt_times(sim)
    assert len(times) == 100
    assert max_in_any_window(times, 60) <= 4
    assert budget_use(times, 4, 60) >= 0.95
    statuses = {e.sources["virustotal"].status for e in analysis.enrichments}
    assert statuses <= {S.OK, S.NOT_FOUND}


async def test_three_keys_give_three_times_the_rate(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """Requests spread over three keys, each limited on its own: three times the rate."""
    free_tier(sim, clock)
    keys = [f"vt-key-{i}-" + "x" * 40 for i in range(3)]
    settings = sim_settings(sim, **FREE_TIER_SETTINGS, virustotal_api_key=",".join(keys))
    async with Engine(settings, clock=clock) as engine:
        await engine.analyze(ips(96))
    assert sim.log.count(status=429) == 0
    for key in keys:
        times = vt_times(sim, key)
        assert len(times) == 32
        assert max_in_any_window(times, 60) <= 4
    all_times = vt_times(sim)
    minutes = (max(all_times) - min(all_times)) / 60 + 1
    assert len(all_times) / minutes >= 0.95 * 12  # 3 keys x 4 per minute


async def test_three_instances_share_one_key_through_redis(
    sim: SimulatorServer, clock: LockstepClock, redis_prefix: str
) -> None:
    """Three engines sharing Redis and one key make at most 4 VirusTotal calls a minute."""
    free_tier(sim, clock)
    engines = [
        Engine(
            sim_settings(sim, **FREE_TIER_SETTINGS),
            clock=clock,
            quota_store=RedisQuotaStore(REDIS_URL, prefix=redis_prefix),
        )
        for _ in range(3)
    ]
    try:
        batches = [ips(33, offset=33 * i) for i in range(3)]
        await asyncio.gather(*(e.analyze(b) for e, b in zip(engines, batches, strict=True)))
    finally:
        for engine in engines:
            await engine.aclose()
            await engine.quota_store.aclose()
    assert sim.log.count(status=429) == 0
    times = vt_times(sim)
    assert len(times) == 99
    assert max_in_any_window(times, 60) <= 4
    assert budget_use(times, 4, 60) >= 0.95


# --- long windows, 429s that still arrive -------------------------------------------------


async def test_daily_exhaustion_fails_fast_and_others_go_on(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """A spent daily quota is quota_exhausted with the reset time; other sources still answer."""
    free_tier(sim, clock)
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_day(5),))
    settings = sim_settings(
        sim, **(FREE_TIER_SETTINGS | {"virustotal_daily_limit": 5, "virustotal_rate_limit": 1000})
    )
    async with Engine(settings, clock=clock) as engine:
        analysis = await engine.analyze(ips(8))
    vt = [e.sources["virustotal"] for e in analysis.enrichments]
    assert sum(r.status is S.QUOTA_EXHAUSTED for r in vt) == 3
    midnight = datetime.fromtimestamp((START // 86_400 + 1) * 86_400, UTC)
    for result in vt:
        if result.status is S.QUOTA_EXHAUSTED:
            assert result.reset_at == midnight
    assert clock.now - START < 60, "it must not sleep until the reset"
    assert sim.log.count(vendor="virustotal", status=429) == 0
    for enrichment in analysis.enrichments:
        for vendor in ("otx", "abuseipdb", "ipinfo"):
            assert enrichment.sources[vendor].status in (S.OK, S.NOT_FOUND), vendor


async def test_an_unexpected_429_is_honoured_and_retried(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """Another tool spent the minute: the 429 blocks the key, and the retry then succeeds."""
    free_tier(sim, clock)
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_minute(1),))
    import httpx

    async with httpx.AsyncClient() as other_tool:
        response = await other_tool.get(
            sim.base_urls["virustotal"] + "/ip_addresses/8.8.8.8",
            headers={"x-apikey": TEST_KEYS["virustotal"]},
        )
        assert response.status_code == 200
    async with Engine(sim_settings(sim, **FREE_TIER_SETTINGS), clock=clock) as engine:
        analysis = await engine.analyze(["45.142.212.61"])
        stats = engine.stats["virustotal"]
    assert analysis.enrichments[0].sources["virustotal"].status is S.OK
    assert sim.log.count(vendor="virustotal", status=429) == 1
    assert stats.throttled == 1 and stats.retries == 1
    ok_at = [r.timestamp for r in sim.log.filter(vendor="virustotal", status=200)]
    assert ok_at[-1] - START >= 60  # waited for the window, it did not hammer


# --- faults, retries, no cached failures --------------------------------------------------


async def test_faulty_upstream_batch_completes_without_caching_failures(
    sim: SimulatorServer,
) -> None:
    """30% faults: every indicator and source has a status, retries stay within MAX_RETRIES."""
    # No quotas here, so a plain VirtualClock: backoff sleeps pass at once, while hangs still
    # cost their real REQUEST_TIMEOUT.
    clock = VirtualClock(START)
    kinds = (FaultKind.SERVER_ERROR, FaultKind.RESET, FaultKind.HANG)
    for vendor in ("virustotal", "otx", "abuseipdb", "ipinfo"):
        setattr(sim.config, vendor, VendorConfig(fault_rate=0.3, fault_kinds=kinds))
    cache = MemoryCache(100_000, clock=clock)
    settings = sim_settings(sim, max_retries=2, request_timeout=0.3, circuit_failure_threshold=1000)
    values = ips(150) + [f"host{i}.cdn-update-check.net" for i in range(50)]
    async with Engine(settings, clock=clock, cache=cache) as engine:
        analysis = await engine.analyze(values)
        stats = engine.stats
    assert [e.indicator.value for e in analysis.enrichments] == values
    per_lookup: dict[tuple[str, str], int] = {}
    for record in sim.log.records():
        assert record.indicator is not None
        per_lookup[(record.vendor, record.indicator)] = (
            per_lookup.get((record.vendor, record.indicator), 0) + 1
        )
    assert max(per_lookup.values()) <= 3  # 1 + MAX_RETRIES
    assert sum(s.retries for s in stats.values()) > 0
    failed = ok = 0
    for enrichment in analysis.enrichments:
        indicator = enrichment.indicator
        assert len(enrichment.sources) == 4
        for name, result in enrichment.sources.items():
            entry = await cache.get(engine.pipelines[name].cache_key(indicator))
            if result.status.failed:
                failed += 1
                assert entry is None, (name, indicator.value, result.status)
            elif result.status in (S.OK, S.NOT_FOUND):
                ok += 1
                assert entry is not None
    assert ok > failed


# --- the cache survives the process -------------------------------------------------------


async def test_restart_serves_from_the_sqlite_cache(sim: SimulatorServer, tmp_path: Any) -> None:
    """A new engine on the same cache directory answers from disk, with no upstream call."""
    settings = sim_settings(sim, cache_backend="sqlite", cache_dir=tmp_path / "cache")
    async with Engine(settings) as first:
        before = await first.analyze(["45.142.212.61", "cdn-update-check.net"])
    calls = len(sim.log)
    async with Engine(settings) as second:
        after = await second.analyze(["45.142.212.61", "cdn-update-check.net"])
        hits = sum(s.cache_hits for s in second.stats.values())
    assert len(sim.log) == calls
    assert hits == 6  # 4 sources for the IP, 2 for the domain
    for old, new in zip(before.enrichments, after.enrichments, strict=True):
        assert new.verdict == old.verdict
        for result in new.sources.values():
            if result.status in (S.OK, S.NOT_FOUND):
                assert result.cached and result.cache_age is not None


async def test_second_instance_serves_from_redis(sim: SimulatorServer, redis_prefix: str) -> None:
    """An instance sharing Redis answers from the other's cache, with no upstream call."""
    from threatintel.cache import LayeredCache, RedisCache

    def shared() -> LayeredCache:
        return LayeredCache(MemoryCache(), RedisCache(REDIS_URL, prefix=redis_prefix))

    settings = sim_settings(sim)
    async with Engine(settings, cache=shared()) as first:
        await first.analyze(["45.142.212.61"])
        await first.cache.aclose()
    calls = len(sim.log)
    async with Engine(settings, cache=shared()) as second:
        analysis = await second.analyze(["45.142.212.61"])
        await second.cache.aclose()
    assert len(sim.log) == calls
    assert all(r.cached for r in analysis.enrichments[0].sources.values())


async def test_concurrent_instances_coalesce_through_redis(
    sim: SimulatorServer, redis_prefix: str
) -> None:
    """Two instances asking at once spend one upstream call: the second waits for the first."""
    from threatintel.cache import LayeredCache, RedisCache

    sim.config.virustotal = VendorConfig(latency=0.3)
    engines = [
        Engine(
            sim_settings(sim),
            cache=LayeredCache(MemoryCache(), RedisCache(REDIS_URL, prefix=redis_prefix)),
        )
        for _ in range(2)
    ]
    try:
        await asyncio.gather(*(e.analyze(["45.142.212.61"]) for e in engines))
    finally:
        for engine in engines:
            await engine.aclose()
            await engine.cache.aclose()
    assert sim.log.count(vendor="virustotal") == 1
    assert sum(e.stats["virustotal"].peer_waits for e in engines) == 1


async def test_unreachable_redis_degrades_to_local(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, lookups still work on the local layers and the log says so once."""
    settings = sim_settings(sim, redis_url="redis://127.0.0.1:1/0", cache_backend="redis")
    async with Engine(settings) as engine:
        first = await engine.analyze(["45.142.212.61"])
        second = await engine.analyze(["45.142.212.61", "185.220.101.4"])
    assert first.enrichments[0].sources["virustotal"].status is S.OK
    assert second.enrichments[0].sources["virustotal"].cached
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # Once for the cache and once for the quota store, however many lookups and providers.
    assert len(warnings) == 2, warnings
    assert any("cache" in w for w in warnings) and any("quota" in w for w in warnings)


# --- TTLs ---------------------------------------------------------------------------------


async def test_ttls_per_provider_and_for_not_found(sim: SimulatorServer) -> None:
    """Answers live CACHE_TTL (or the provider's own TTL); 'not found' lives NEGATIVE_CACHE_TTL."""
    clock = LockstepClock(START)
    settings = sim_settings(
        sim, cache_ttl=1000, otx_cache_ttl=100, negative_cache_ttl=10, cache_backend="memory"
    )
    values = ["45.142.212.61", "fresh-domain-2024.xyz"]  # the second is unknown everywhere
    async with Engine(settings, clock=clock, quota_store=MemoryQuotaStore()) as engine:
        await engine.analyze(values)
        calls = _counts(sim)
        clock.advance(11)  # past the negative TTL only
        await engine.analyze(values)
        after_negative = _counts(sim)
        clock.advance(100)  # past OTX's own TTL
        await engine.analyze(values)
        after_otx = _counts(sim)
    assert after_negative["virustotal"] == calls["virustotal"] + 1  # the not-found domain
    assert after_negative["abuseipdb"] == calls["abuseipdb"]
    assert after_otx["otx"] == after_negative["otx"] + 2
    assert after_otx["abuseipdb"] == calls["abuseipdb"]


def _counts(sim: SimulatorServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in sim.log.records():
        counts[record.vendor] = counts.get(record.vendor, 0) + 1
    return counts


async def test_waiting_for_the_daily_reset_on_request(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """With QUOTA_WAIT_FOR_RESET the batch waits for midnight UTC instead of failing."""
    free_tier(sim, clock)
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_day(2),))
    settings = sim_settings(
        sim,
        **(
            FREE_TIER_SETTINGS
            | {"virustotal_daily_limit": 2, "quota_wait_for_reset": True, "lookup_timeout": 60}
        ),
    )
    async with Engine(settings, clock=clock) as engine:
        analysis = await engine.analyze(ips(3))
    assert {e.sources["virustotal"].status for e in analysis.enrichments} <= {S.OK, S.NOT_FOUND}
    assert sim.log.count(vendor="virustotal", status=429) == 0
    midnight = (START // 86_400 + 1) * 86_400
    assert max(vt_times(sim)) >= midnight


async def test_lookup_deadline_bounds_the_retries(sim: SimulatorServer) -> None:
    """Retries stop when the next backoff would pass LOOKUP_TIMEOUT, before MAX_RETRIES."""
    clock = VirtualClock(START)
    sim.config.virustotal = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.SERVER_ERROR,))
    settings = sim_settings(
        sim,
        max_retries=20,
        retry_backoff_base=4,
        retry_backoff_cap=4,
        lookup_timeout=10,
        circuit_failure_threshold=1000,
    )
    async with Engine(settings, clock=clock) as engine:
        analysis = await engine.analyze(["45.142.212.61"])
    assert analysis.enrichments[0].sources["virustotal"].status is S.ERROR
    attempts = sim.log.count(vendor="virustotal")
    assert 1 < attempts < 21
    assert clock.now - START <= 10


# --- review scenarios: overlapping instances, breaker after a wait, cancellation ----------


async def test_instances_asking_the_same_indicators_spend_each_call_once(
    sim: SimulatorServer, clock: LockstepClock, redis_prefix: str
) -> None:
    """Three instances sharing Redis, all asking the same 12 IPs at 4/min: 12 calls, not 36."""
    from threatintel.cache import LayeredCache, RedisCache

    free_tier(sim, clock)
    engines = [
        Engine(
            sim_settings(sim, **FREE_TIER_SETTINGS),
            clock=clock,
            cache=LayeredCache(
                MemoryCache(clock=clock), RedisCache(REDIS_URL, prefix=redis_prefix, clock=clock)
            ),
            quota_store=RedisQuotaStore(REDIS_URL, prefix=redis_prefix + "q:"),
        )
        for _ in range(3)
    ]
    try:
        results = await asyncio.gather(*(e.analyze(ips(12)) for e in engines))
    finally:
        for engine in engines:
            await engine.aclose()
            await engine.cache.aclose()
            await engine.quota_store.aclose()
    assert sim.log.count(vendor="virustotal") == 12
    assert sim.log.count(status=429) == 0
    for analysis in results:
        assert {e.sources["virustotal"].status for e in analysis.enrichments} <= {S.OK, S.NOT_FOUND}


async def test_open_breaker_stops_lookups_that_were_waiting_for_quota(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """Lookups queued behind the rate limiter do not call a provider whose circuit opened."""
    free_tier(sim, clock)
    sim.config.virustotal = VendorConfig(
        windows=(SimWindow.per_minute(4),),
        fault_rate=1.0,
        fault_kinds=(FaultKind.SERVER_ERROR,),
    )
    settings = sim_settings(
        sim, **(FREE_TIER_SETTINGS | {"max_retries": 0, "circuit_failure_threshold": 3})
    )
    async with Engine(settings, clock=clock) as engine:
        analysis = await engine.analyze(ips(30))
        usage = (await engine.pipelines["virustotal"].limiter.usage())[0]
    times = [r.timestamp - START for r in sim.log.filter(vendor="virustotal")]
    # The day's count is what VirusTotal received, not what was queued behind the circuit.
    day = next(w for w in usage.windows if w.window == "day")
    assert day.used == len(times)
    # Three failures open it (a fourth call, in the first minute's slots, may already be on
    # its way, or be the first probe a second later).
    first_minute = [t for t in times if t < 60]
    assert times[:3] == [0, 0, 0] and len(first_minute) <= 4
    # The lookups queued behind the quota never call but as probes once the next minute's slots
    # free up: one at a time, each after a longer cool-down (1 s, 2 s, 4 s), and only while a
    # lookup still waits for one (CIRCUIT_PROBE_WAIT, 5 s).
    later = [t for t in times if t >= 60]
    assert 1 <= len(later) <= 3
    assert all(b - a >= 1 for a, b in itertools.pairwise(later))
    statuses = [e.sources["virustotal"].status for e in analysis.enrichments]
    assert statuses.count(S.CIRCUIT_OPEN) >= 30 - len(times)


async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup(sim: SimulatorServer) -> None:
    """When one of two callers sharing a lookup gives up, the other still gets its answer."""
    sim.config.virustotal = VendorConfig(latency=0.3)
    async with Engine(sim_settings(sim, cache_backend="memory")) as engine:
        first = asyncio.create_task(engine.analyze(["45.142.212.61"], providers=["virustotal"]))
        second = asyncio.create_task(engine.analyze(["45.142.212.61"], providers=["virustotal"]))
        for _ in range(50):  # let both reach the shared lookup; no time passes
            await asyncio.sleep(0)
        first.cancel()
        analysis = await second
        with pytest.raises(asyncio.CancelledError):
            await first
        coalesced = engine.stats["virustotal"].coalesced
    assert analysis.enrichments[0].sources["virustotal"].status is S.OK
    assert coalesced == 1
    assert sim.log.count(vendor="virustotal") == 1


async def test_a_hanging_attempt_is_cut_at_the_lookup_deadline(sim: SimulatorServer) -> None:
    """LOOKUP_TIMEOUT bounds an attempt too, not only the waits between attempts."""
    sim.config.virustotal = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.HANG,))
    settings = sim_settings(sim, request_timeout=20, lookup_timeout=0.5, max_retries=3)
    async with Engine(settings) as engine:
        analysis = await engine.analyze(["45.142.212.61"], providers=["virustotal"])
    result = analysis.enrichments[0].sources["virustotal"]
    assert result.status is S.TIMEOUT
    assert sim.log.count(vendor="virustotal") == 1


async def test_repeated_429s_from_another_tool_become_quota_exhausted(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """Another tool spent the day: after a second 429 the key is exhausted until midnight."""
    import httpx

    free_tier(sim, clock)
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_day(3),))
    async with httpx.AsyncClient() as other_tool:
        for _ in range(3):
            response = await other_tool.get(
                sim.base_urls["virustotal"] + "/ip_addresses/8.8.8.8",
                headers={"x-apikey": TEST_KEYS["virustotal"]},
            )
            assert response.status_code == 200
    async with Engine(sim_settings(sim, **FREE_TIER_SETTINGS), clock=clock) as engine:
        analysis = await engine.analyze(ips(20))
    vt = [e.sources["virustotal"] for e in analysis.enrichments]
    assert all(r.status is S.QUOTA_EXHAUSTED for r in vt)
    # The calls already in flight when the first 429 came back, plus one probe a minute later.
    assert sim.log.count(vendor="virustotal", status=429) <= 5
    midnight = datetime.fromtimestamp((START // 86_400 + 1) * 86_400, UTC)
    assert {r.reset_at for r in vt} == {midnight}
