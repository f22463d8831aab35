"""QuotaWait events: a lookup that waits noticeably for quota says so, once per wait episode.

The engine runs against the simulator on a LockstepClock shared with it, so a two-minute
VirusTotal queue passes in virtual time and no test sleeps.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from support import TEST_KEYS, sim_settings
from threatintel._redaction import fingerprint
from threatintel.clock import LockstepClock, VirtualClock
from threatintel.engine import Engine
from threatintel.quota import (
    BLOCKED,
    NOTICE_AFTER,
    MemoryQuotaStore,
    QuotaWait,
    RateLimiter,
    Window,
)
from threatintel.settings import Settings
from threatintel.simulator import SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow
from threatintel.wiring import QUOTA_SETTINGS, quota_windows

START = 1_700_000_000.0
VT_KEY = fingerprint(TEST_KEYS["virustotal"])


def ips(n: int, *, offset: int = 0) -> list[str]:
    return [f"45.{(i + offset) // 250 + 10}.{(i + offset) % 250 + 1}.9" for i in range(n)]


def free_vt(sim: SimulatorServer, clock: LockstepClock, **overrides: Any) -> Settings:
    """VirusTotal's free tier on both sides, on the shared virtual clock."""
    sim.config.clock = clock
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_minute(4),))
    values: dict[str, Any] = {
        "virustotal_rate_limit": 4,
        "max_quota_wait": None,
        "cache_backend": "memory",
    }
    return sim_settings(sim, **(values | overrides))


async def test_a_queue_for_virustotal_is_announced_once_with_its_numbers(
    sim: SimulatorServer,
) -> None:
    """Ten lookups at 4/min wait two minutes: one event, 61 s on the key, naming the setting."""
    clock = LockstepClock(START)
    events: list[QuotaWait] = []
    async with Engine(free_vt(sim, clock), clock=clock, on_quota_wait=events.append) as engine:
        analysis = await engine.analyze(ips(10), providers=["virustotal"])
    assert {e.sources["virustotal"].status.value for e in analysis.enrichments} <= {
        "ok",
        "not_found",
    }
    assert clock.time() - START == pytest.approx(122.0)  # three minute-windows were used
    assert events == [
        QuotaWait(
            provider="virustotal",
            key_fingerprint=VT_KEY,
            # The minute plus RATE_LIMIT_MARGIN's 1 s (approx compares equal to a float).
            seconds=cast(float, pytest.approx(61.0)),
            window="minute",
            limit=4,
            setting_name="VIRUSTOTAL_RATE_LIMIT",
        )
    ]


async def test_a_later_queue_is_a_new_episode(sim: SimulatorServer) -> None:
    """Once nothing waits any more, the next wait is announced again."""
    clock = LockstepClock(START)
    events: list[QuotaWait] = []
    async with Engine(free_vt(sim, clock), clock=clock, on_quota_wait=events.append) as engine:
        await engine.analyze(ips(6), providers=["virustotal"])
        await engine.analyze(ips(6, offset=6), providers=["virustotal"])
    assert [(e.provider, e.window) for e in events] == [("virustotal", "minute")] * 2
    assert sim.log.count(status=429) == 0


async def test_short_pacing_is_not_announced(sim: SimulatorServer) -> None:
    """Waits shorter than NOTICE_AFTER (here 1 s windows) emit no event."""
    clock = LockstepClock(START)
    events: list[QuotaWait] = []
    settings = sim_settings(sim, cache_backend="memory", rate_limit_margin=0, max_quota_wait=None)
    windows = {"virustotal": [Window.per_minute(4, seconds=NOTICE_AFTER / 2)]}
    async with Engine(
        settings, clock=clock, windows=windows, on_quota_wait=events.append
    ) as engine:
        await engine.analyze(ips(10), providers=["virustotal"])
    assert clock.time() > START  # it did wait, briefly
    assert events == []


@pytest.mark.parametrize("keyed", [True, False])
def test_every_quota_window_names_the_setting_that_sets_it(keyed: bool) -> None:
    """QUOTA_SETTINGS names, per provider and window, the variable holding that window's limit."""
    settings = Settings.load(
        virustotal_rate_limit=11,
        virustotal_daily_limit=12,
        virustotal_monthly_limit=13,
        otx_rate_limit=14,
        abuseipdb_rate_limit=15,
        ipinfo_rate_limit=16,
        ipinfo_anonymous_daily_limit=17,
    )
    for provider in ("virustotal", "otx", "abuseipdb", "ipinfo"):
        for window in quota_windows(settings, provider, keyed=keyed):
            name = QUOTA_SETTINGS[provider][window.name]
            assert getattr(settings, name.lower()) == window.limit, (provider, window.name)


# --- the limiter on its own -----------------------------------------------------------------


async def test_a_429_block_is_announced_as_blocked() -> None:
    """A wait for a 429's block names the key and no window or setting."""
    clock = VirtualClock(START)
    events: list[QuotaWait] = []
    limiter = RateLimiter(
        "virustotal",
        ["k1"],
        [Window.per_minute(4)],
        MemoryQuotaStore(),
        clock,
        on_wait=events.append,
    )
    await limiter.penalize("k1", retry_after=30.0, long_window=False)
    assert await limiter.acquire() == "k1"
    assert events == [QuotaWait("virustotal", fingerprint("k1"), 30.0, BLOCKED, None, None)]


async def test_waiting_for_a_daily_reset_names_the_day_window() -> None:
    """With wait_for_reset, a spent day is waited out and announced with its setting."""
    clock = VirtualClock(START)  # 22:13:20 UTC: the day resets in 6,400 s
    events: list[QuotaWait] = []
    limiter = RateLimiter(
        "abuseipdb",
        ["k"],
        [Window.per_day(1)],
        MemoryQuotaStore(),
        clock,
        wait_for_reset=True,
        on_wait=events.append,
        setting_names={"day": "ABUSEIPDB_RATE_LIMIT"},
    )
    await limiter.acquire()
    await limiter.acquire()
    assert events == [
        QuotaWait("abuseipdb", fingerprint("k"), 6_400.0, "day", 1, "ABUSEIPDB_RATE_LIMIT")
    ]


async def test_the_full_window_and_the_soonest_key_are_named() -> None:
    """Of two keys the one free sooner is named; of two short windows, the full one."""
    clock = VirtualClock(START)
    events: list[QuotaWait] = []
    windows = [Window.per_minute(10), Window.per_hour(1)]
    limiter = RateLimiter(
        "otx", ["a", "b"], windows, MemoryQuotaStore(), clock, on_wait=events.append
    )
    assert await limiter.acquire() == "a"
    clock.advance(100)
    assert await limiter.acquire() == "b"
    await limiter.acquire()
    (event,) = events
    assert (event.key_fingerprint, event.window, event.limit) == (fingerprint("a"), "hour", 1)
    assert event.seconds == pytest.approx(3_500.0)
