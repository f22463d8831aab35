"""The cross-instance lock misbehaving: a lookup waits for a peer's lock a bounded time, and a
lock service that answers oddly is bypassed at once; either way the lookup asks and answers.

Time is a LockstepClock, so waiting out a lock costs no real time and no test sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis.asyncio

from fake_redis import EMPTY, GARBAGE, OK, ZERO, GarbageRedis
from support import sim_settings
from threatintel.cache import Cache, LayeredCache, MemoryCache, RedisCache
from threatintel.clock import LockstepClock
from threatintel.engine import Engine
from threatintel.indicators import parse_indicator
from threatintel.models import SourceStatus
from threatintel.quota import MemoryQuotaStore
from threatintel.simulator import SimulatorServer

REDIS_URL = "redis://127.0.0.1:6379/0"
START = 1_700_000_000.0
IP = "45.142.212.61"
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")


def never_frees(command: str) -> bytes:
    """A Redis whose every lock is held by someone who never lets go, and whose cache misses."""
    if command in {"EVALSHA", "EVAL"}:
        return ZERO  # the lock script: held (and the release/extend scripts: not ours)
    if command == "GETRANGE":
        return EMPTY
    return ZERO if command == "DEL" else OK


def odd_lock(command: str) -> bytes:
    """A Redis that answers the lock script with a status no script of ours returns."""
    return GARBAGE["status"] if command in {"EVALSHA", "EVAL"} else never_frees(command)


def peer_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "threatintel.pipeline" and r.levelno == logging.WARNING
    ]


async def test_a_lock_left_without_expiry_in_redis_does_not_stall_a_lookup(
    sim: SimulatorServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock key set by hand without a TTL: the lookup takes it over and fetches once."""
    clock = LockstepClock(START)
    back = RedisCache(REDIS_URL, prefix=redis_prefix, clock=clock)
    cache = LayeredCache(MemoryCache(clock=clock), back)
    settings = sim_settings(sim, cache_backend="memory")
    raw = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        async with Engine(
            settings, clock=clock, cache=cache, quota_store=MemoryQuotaStore()
        ) as engine:
            pipeline = engine.pipelines["virustotal"]
            lock_key = back.lock_key(pipeline.cache_key(parse_indicator(IP)))
            await raw.set(lock_key, "left-behind")  # no EX/PX: it would never expire
            analysis = await engine.analyze([IP])
            stats = pipeline.stats
        left = await raw.exists(lock_key)
    finally:
        await cache.aclose()
        await raw.aclose()
    assert analysis.enrichments[0].sources["virustotal"].status is SourceStatus.OK
    assert sim.log.count(vendor="virustotal") == 1
    assert (stats.peer_waits, stats.peer_timeouts, stats.upstream_calls) == (0, 0, 1)
    assert left == 0  # taken over, then released like any lock of ours
    assert any("took over" in r.getMessage() for r in caplog.records)


async def test_a_crashed_peers_lock_is_taken_over_once_its_time_passes(
    sim: SimulatorServer, redis_prefix: str
) -> None:
    """A peer took the lock and vanished: the lookup waits out the lock's time, then fetches."""
    clock = LockstepClock(START)
    back = RedisCache(REDIS_URL, prefix=redis_prefix, clock=clock)
    cache = LayeredCache(MemoryCache(clock=clock), back)
    settings = sim_settings(sim, cache_backend="memory")
    try:
        async with Engine(
            settings, clock=clock, cache=cache, quota_store=MemoryQuotaStore()
        ) as engine:
            pipeline = engine.pipelines["virustotal"]
            key = pipeline.cache_key(parse_indicator(IP))
            crashed = RedisCache(REDIS_URL, prefix=redis_prefix, clock=clock)
            assert await crashed.acquire_lock(key, pipeline.lock_ttl) is not None
            await crashed.aclose()  # never released, never renewed
            analysis = await engine.analyze([IP])
            stats = pipeline.stats
    finally:
        await cache.aclose()
    assert analysis.enrichments[0].sources["virustotal"].status is SourceStatus.OK
    assert sim.log.count(vendor="virustotal") == 1
    assert (stats.peer_waits, stats.peer_timeouts) == (1, 0)
    assert pipeline.lock_ttl <= clock.now - START < pipeline.peer_wait


async def test_a_store_whose_locks_never_free_warns_once_per_source(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every lock held forever: each lookup waits its bound and asks; one warning per source."""
    clock = LockstepClock(START)
    async with GarbageRedis(never_frees) as server:
        cache = LayeredCache(MemoryCache(clock=clock), RedisCache(server.url, clock=clock))
        settings = sim_settings(sim, cache_backend="memory")
        async with Engine(
            settings, clock=clock, cache=cache, quota_store=MemoryQuotaStore()
        ) as engine:
            first = await engine.analyze([IP, "185.220.101.4"])
            stats = engine.stats
        await cache.aclose()
    for enrichment in first.enrichments:
        assert {r.status for r in enrichment.sources.values()} <= {
            SourceStatus.OK,
            SourceStatus.NOT_FOUND,
        }
    for vendor in VENDORS:
        assert sim.log.count(vendor=vendor) == 2, vendor
        assert stats[vendor].peer_timeouts == 2
    warnings = peer_warnings(caplog)
    assert len(warnings) == len(VENDORS), warnings


@pytest.mark.parametrize("layered", [True, False], ids=["layered", "bare"])
async def test_an_odd_lock_reply_means_asking_without_the_lock(
    sim: SimulatorServer, layered: bool
) -> None:
    """A lock answer that is neither taken nor held: the lookup asks at once, never waits."""
    clock = LockstepClock(START)
    async with GarbageRedis(odd_lock) as server:
        back = RedisCache(server.url, clock=clock)
        make: Callable[[], Cache] = (
            (lambda: LayeredCache(MemoryCache(clock=clock), back)) if layered else (lambda: back)
        )
        cache = make()
        settings = sim_settings(sim, cache_backend="memory")
        async with Engine(
            settings, clock=clock, cache=cache, quota_store=MemoryQuotaStore()
        ) as engine:
            analysis = await engine.analyze([IP])
            stats = engine.stats
        await cache.aclose()
    assert analysis.enrichments[0].sources["virustotal"].status is SourceStatus.OK
    for vendor in VENDORS:
        assert sim.log.count(vendor=vendor) == 1, vendor
        assert (stats[vendor].peer_waits, stats[vendor].peer_timeouts) == (0, 0)
