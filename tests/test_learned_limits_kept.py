"""Learned limits are kept in the quota store, so the next process starts from them.

Short CLI runs would otherwise start every time from the free-tier defaults: a paid AbuseIPDB
key whose day had passed 1,000 lookups would be refused locally before any answer could restate
its real limit, and VirusTotal's account endpoint would be asked by every run. Each store keeps
them for LEARNED_TTL and ignores what it cannot read.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from support import TEST_KEYS
from test_learned_limits import (
    FREE_VT,
    PAID_VT,
    START,
    VT_KEY,
    ips,
    learning_settings,
    overall_quota_calls,
    windows,
)
from threatintel.clock import LockstepClock
from threatintel.engine import Engine
from threatintel.quota import (
    DEFAULT,
    LEARNED,
    LEARNED_TTL,
    MemoryQuotaStore,
    QuotaStore,
    SQLiteQuotaStore,
)
from threatintel.simulator import SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

NOW = START


async def test_stores_keep_learned_limits_until_they_expire(
    each_quota_store: QuotaStore,
) -> None:
    """Kept limits read back while they last, replaced by the next keep, gone after `until`."""
    store = each_quota_store
    assert await store.learned_limits("vt:k", NOW) == {}
    await store.keep_limits("vt:k", {"minute": 1000, "day": 300_000}, NOW + 100)
    assert await store.learned_limits("vt:k", NOW + 99) == {"minute": 1000, "day": 300_000}
    assert await store.learned_limits("other:k", NOW) == {}
    await store.keep_limits("vt:k", {"day": 5}, NOW + 200)
    assert await store.learned_limits("vt:k", NOW + 150) == {"day": 5}
    assert await store.learned_limits("vt:k", NOW + 200) == {}


async def test_sqlite_ignores_a_garbled_row(tmp_path: Path) -> None:
    """A hand-edited or corrupt kept row reads as nothing learned, never as an error."""
    path = tmp_path / "quota.sqlite3"
    store = SQLiteQuotaStore(path)
    await store.keep_limits("vt:k", {"day": 7}, NOW + 100)
    await store.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute('UPDATE limits SET value = \'{"until": 1e999, "limits": [1]}\'')
    store = SQLiteQuotaStore(path)
    try:
        assert await store.learned_limits("vt:k", NOW) == {}
    finally:
        await store.aclose()


@pytest.fixture
def clock(sim: SimulatorServer) -> LockstepClock:
    """Virtual time shared by the engines and the simulator."""
    clock = LockstepClock(START)
    sim.config.clock = clock
    return clock


def engine_on(sim: SimulatorServer, clock: LockstepClock, store: QuotaStore) -> Engine:
    """One run: an engine with default limits on the store every run shares."""
    return Engine(learning_settings(sim), clock=clock, quota_store=store)


async def test_the_next_engine_starts_from_the_kept_virustotal_limits(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """A second engine on the same store uses the paid key's limits at once, without asking."""
    sim.config.virustotal = VendorConfig(windows=FREE_VT, key_windows={VT_KEY: PAID_VT})
    store = MemoryQuotaStore()
    async with engine_on(sim, clock, store) as first:
        await first.analyze(ips(6), providers=["virustotal"])
    async with engine_on(sim, clock, store) as second:
        shown = windows(await second.pipelines["virustotal"].limiter.usage())
        await second.analyze(ips(30)[6:], providers=["virustotal"])
    assert shown["minute"] == (1_000, LEARNED)
    assert overall_quota_calls(sim) == 1
    assert clock.now - START < 60


async def test_a_kept_free_tier_is_not_asked_for_again(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """A free key's kept 4/min paces the next engine without a second overall_quotas call."""
    sim.config.virustotal = VendorConfig(windows=FREE_VT)
    store = MemoryQuotaStore()
    for batch in (ips(6), ips(12)[6:]):
        async with engine_on(sim, clock, store) as engine:
            await engine.analyze(batch, providers=["virustotal"])
    assert overall_quota_calls(sim) == 1
    assert sim.log.count(vendor="virustotal", status=429) == 0


async def test_kept_abuseipdb_limits_expire_back_to_the_default(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """AbuseIPDB's stated 5,000/day is the next engine's limit, until LEARNED_TTL has passed."""
    key = TEST_KEYS["abuseipdb"]
    sim.config.abuseipdb = VendorConfig(
        windows=(SimWindow.per_day(1_000),), key_windows={key: (SimWindow.per_day(5_000),)}
    )
    store = MemoryQuotaStore()
    async with engine_on(sim, clock, store) as first:
        await first.analyze(ips(1), providers=["abuseipdb"])
    async with engine_on(sim, clock, store) as second:
        kept = windows(await second.pipelines["abuseipdb"].limiter.usage())
    await clock.sleep(LEARNED_TTL + 1)
    async with engine_on(sim, clock, store) as third:
        expired = windows(await third.pipelines["abuseipdb"].limiter.usage())
    assert kept == {"day": (5_000, LEARNED)}
    assert expired == {"day": (1_000, DEFAULT)}
