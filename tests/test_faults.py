"""Fault tolerance end to end: the engine against a faulty simulator over HTTP.

A flaky upstream (30% of calls failing with 5xx, resets and hangs) must cost retries, not
verdicts; a dead one must open its breaker within a handful of calls and cost the run seconds;
a blip must leave no circuit_open behind. Time is virtual: backoffs and cool-downs pass
instantly (a LockstepClock where the order of waits matters: it stands still while a lookup is
talking HTTP). The simulator draws each indicator's faults from its own seeded stream, so the
same requests fail in every run whatever order they arrive in.
"""

from __future__ import annotations

import hashlib

import pytest

from support import sim_settings
from threatintel.cache import MemoryCache
from threatintel.clock import LockstepClock, VirtualClock
from threatintel.engine import Engine
from threatintel.models import Analysis, SourceStatus
from threatintel.quota import MemoryQuotaStore
from threatintel.resilience import DEFAULT_MAX_RETRIES, BreakerState
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig

START = 1_700_000_000.0
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")
TRANSIENT = (FaultKind.SERVER_ERROR, FaultKind.RESET, FaultKind.HANG)
S = SourceStatus


def mixed_indicators(n: int) -> list[str]:
    """IPs, domains, URLs and hashes in turn; the simulator gives each a hashed truth."""
    values = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            values.append(f"45.{i // 250 + 20}.{i % 250 + 1}.9")
        elif kind == 1:
            values.append(f"host{i}.parcel-notice{i % 7}.com")
        elif kind == 2:
            values.append(f"http://files{i}.update-mirror{i % 5}.net/get/{i}.bin")
        else:
            values.append(hashlib.sha256(f"sample-{i}".encode()).hexdigest())
    return values


async def run(
    sim: SimulatorServer, values: list[str], clock: VirtualClock, **overrides: object
) -> tuple[Analysis, int]:
    """One run with default retry and breaker settings on a fresh engine and cache: the
    analysis, and how many VirusTotal lookups an open breaker refused on the way."""
    # A hang costs REQUEST_TIMEOUT of real time (virtual time does not see it), so keep it
    # short, but not so short that a healthy answer delayed by a busy machine (all four fake
    # vendors share one host and one connection pool here) times out too; ten calls in flight
    # per provider for the same reason. Every other setting is the default.
    settings = sim_settings(
        sim,
        **(
            {"request_timeout": 1.0, "max_retries": DEFAULT_MAX_RETRIES, "max_workers": 10}
            | overrides
        ),
    )
    async with Engine(
        settings, clock=clock, cache=MemoryCache(clock=clock), quota_store=MemoryQuotaStore()
    ) as engine:
        analysis = await engine.analyze(values)
        refused = engine.stats["virustotal"].statuses.get(S.CIRCUIT_OPEN.value, 0)
    return analysis, refused


def faulty(sim: SimulatorServer, rate: float, *vendors: str) -> None:
    for vendor in vendors or VENDORS:
        setattr(sim.config, vendor, VendorConfig(fault_rate=rate, fault_kinds=TRANSIENT))


async def test_thirty_percent_transient_faults_keep_98_verdicts_of_100(
    sim: SimulatorServer,
) -> None:
    """With 30% 5xx/resets/hangs on every service, at least 98 of 100 verdicts are unchanged."""
    values = mixed_indicators(100)
    # A plain VirtualClock: backoffs pass at once while other lookups' hangs run on (a
    # LockstepClock would hold every backoff until no hang is pending: the same answers, slower).
    clean, _ = await run(sim, values, VirtualClock(START))
    faulty(sim, 0.3)
    noisy, _ = await run(sim, values, VirtualClock(START))
    injected = [r.fault for r in sim.log.records() if r.fault is not None]
    assert set(injected) == set(TRANSIENT) and len(injected) > 50, "the faults must happen"
    equal = sum(
        a.verdict.label == b.verdict.label
        for a, b in zip(clean.enrichments, noisy.enrichments, strict=True)
    )
    opened = sum(r.status is S.CIRCUIT_OPEN for e in noisy.enrichments for r in e.sources.values())
    print(f"equal verdicts under 30% faults: {equal}/100 (circuit_open results: {opened})")
    assert equal >= 98
    assert opened == 0


async def test_a_dead_service_opens_quickly_and_costs_seconds(sim: SimulatorServer) -> None:
    """A service failing every call opens after CIRCUIT_MIN_CALLS calls and costs seconds."""
    sim.config.virustotal = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.SERVER_ERROR,))
    clock = LockstepClock(START)
    # Ten in flight, as the bound below was drawn for: each worker slot admits one attempt.
    settings = sim_settings(sim, max_retries=DEFAULT_MAX_RETRIES, max_workers=10)
    async with Engine(
        settings, clock=clock, cache=MemoryCache(clock=clock), quota_store=MemoryQuotaStore()
    ) as engine:
        analysis = await engine.analyze(mixed_indicators(100))
        breaker = engine.breakers["virustotal"]
        assert breaker.state is not BreakerState.CLOSED
    calls = sim.log.count(vendor="virustotal")
    elapsed = clock.now - START
    print(f"dead VirusTotal: {calls} calls, run took {elapsed:.1f} virtual seconds")
    # min_calls (10) failures open it; the attempts already admitted (one per worker) and a
    # few probes (after 1 s, 2 s, 4 s) are all it ever sees.
    assert calls <= settings.circuit_min_calls + settings.max_workers + 3
    # The last lookup to meet the open breaker may do so after its whole backoff schedule
    # (0.5 + 1 + 2 + 4 s at most), then waits CIRCUIT_PROBE_WAIT for a probe: seconds, not the
    # minutes a breaker-less run would spend (typically about 6 virtual seconds).
    backoffs = sum(
        min(settings.retry_backoff_cap, settings.retry_backoff_base * 2**attempt)
        for attempt in range(settings.max_retries)
    )
    assert elapsed <= backoffs + settings.circuit_probe_wait
    statuses = {e.sources["virustotal"].status for e in analysis.enrichments}
    assert statuses <= {S.CIRCUIT_OPEN, S.ERROR}
    assert S.CIRCUIT_OPEN in statuses
    for enrichment in analysis.enrichments:
        for vendor in ("otx", "abuseipdb", "ipinfo"):
            assert enrichment.sources[vendor].status.failed is False, vendor


async def test_a_blip_leaves_no_circuit_open_behind(sim: SimulatorServer) -> None:
    """An outage of ten calls opens the breaker, and the lookups it refused succeed after."""
    sim.simulator.faults.fail_next("virustotal", FaultKind.RESET, n=10)
    # One worker: the ten failures come first, in order, and open the breaker.
    analysis, refused = await run(
        sim, mixed_indicators(40), LockstepClock(START), max_retries=0, max_workers=1
    )
    statuses = [e.sources["virustotal"].status for e in analysis.enrichments]
    assert refused > 0, "the breaker must have opened"
    assert S.CIRCUIT_OPEN not in statuses
    # Only the lookups that met the outage itself failed; all others got their answer.
    assert statuses.count(S.ERROR) == 10
    assert statuses.count(S.OK) + statuses.count(S.NOT_FOUND) == 30


async def test_without_probe_wait_refused_lookups_report_circuit_open(
    sim: SimulatorServer,
) -> None:
    """CIRCUIT_PROBE_WAIT=0 reports circuit_open at once, as before the wait existed."""
    sim.simulator.faults.fail_next("virustotal", FaultKind.RESET, n=10)
    analysis, refused = await run(
        sim,
        mixed_indicators(40),
        LockstepClock(START),
        max_retries=0,
        max_workers=1,
        circuit_probe_wait=0,
    )
    statuses = [e.sources["virustotal"].status for e in analysis.enrichments]
    assert statuses.count(S.CIRCUIT_OPEN) == refused > 0


# --- the lookup deadline runs on the engine's clock ----------------------------------------


async def test_an_attempt_with_a_sliver_of_budget_left_is_not_cut_by_real_time(
    sim: SimulatorServer,
) -> None:
    """Backoffs leaving 0.5 ms of LOOKUP_TIMEOUT do not turn the last 5xx into a timeout."""
    import httpx

    from threatintel.pipeline import SourcePipeline
    from threatintel.providers import PROVIDERS
    from threatintel.quota import RateLimiter
    from threatintel.resilience import CircuitBreaker, RetryPolicy
    from threatintel.simulator import FaultKind

    sim.config.virustotal = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.SERVER_ERROR,))
    clock = LockstepClock(START)
    wait = (10 - 0.0005) / 2  # two full backoffs leave half a millisecond of the deadline
    retry = RetryPolicy(20, backoff_base=wait, backoff_cap=wait, random=lambda: 1.0)
    async with httpx.AsyncClient() as client:
        pipeline = SourcePipeline(
            PROVIDERS["virustotal"](client, sim.base_urls["virustotal"]),
            limiter=RateLimiter("virustotal", ["key"], [], MemoryQuotaStore(), clock),
            breaker=CircuitBreaker("virustotal", min_calls=1000, clock=clock),
            retry=retry,
            clock=clock,
            lookup_timeout=10,
        )
        from threatintel.indicators import parse_indicator

        result = await pipeline.lookup(parse_indicator("45.142.212.61"))
    assert result.status is S.ERROR, result.message
    assert sim.log.count(vendor="virustotal") == 3


async def test_virtual_timeouts_follow_the_clock_not_real_time() -> None:
    """A virtual deadline never fires while time stands still, and fires when sleeps pass it."""
    import asyncio

    from threatintel.clock import VirtualClock

    clock = VirtualClock(START)
    io_done = asyncio.Event()

    async def slow_io() -> str:
        async with clock.timeout(0.001):
            await io_done.wait()  # real I/O: virtual time does not move meanwhile
        return "answered"

    task = asyncio.create_task(slow_io())
    for _ in range(20):
        await asyncio.sleep(0)
    io_done.set()
    assert await task == "answered"

    async def cut() -> None:
        async with clock.timeout(5):
            await asyncio.Event().wait()

    victim = asyncio.create_task(cut())
    await asyncio.sleep(0)
    await clock.sleep(6)  # another coroutine's sleep carries the clock past the deadline
    with pytest.raises(TimeoutError):
        await victim
