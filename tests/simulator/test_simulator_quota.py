from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from threatintel.simulator import ManualClock, Simulator, Window
from threatintel.simulator.bodies import sample
from threatintel.simulator.quota import QuotaTracker

VT_IP = "/virustotal/api/v3/ip_addresses/8.8.8.8"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def test_sliding_minute_allows_four_in_any_sixty_seconds() -> None:
    """At most 4 requests in any 60 s span; room returns when the oldest leaves the span."""
    clock = ManualClock(1_000.0)
    quotas = QuotaTracker(clock)
    window = (Window.per_minute(4),)
    for offset in (0, 10, 20, 30):
        clock.now = 1_000.0 + offset
        assert quotas.acquire("vt", "k", window).allowed
    clock.now = 1_059.0
    refused = quotas.acquire("vt", "k", window)
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
    clock.now = 1_060.0
    assert quotas.acquire("vt", "k", window).allowed
    assert not quotas.acquire("vt", "k", window).allowed  # 10, 20, 30, 60 fill the span again


def test_fixed_day_resets_at_midnight_utc() -> None:
    """A day window is aligned to 00:00 UTC, not to the first request."""
    clock = ManualClock(utc(2024, 3, 5, 23, 59))
    quotas = QuotaTracker(clock)
    window = (Window.per_day(1),)
    assert quotas.acquire("abuse", "k", window).allowed
    refused = quotas.acquire("abuse", "k", window)
    assert refused.blocking is not None
    assert refused.blocking.reset_at == utc(2024, 3, 6)
    assert refused.retry_after == pytest.approx(60.0)
    clock.now = utc(2024, 3, 6)
    assert quotas.acquire("abuse", "k", window).allowed


def test_calendar_month_resets_on_the_first() -> None:
    """A month window runs from the 1st to the 1st, across a year end too."""
    clock = ManualClock(utc(2024, 12, 31, 12))
    quotas = QuotaTracker(clock)
    window = (Window.per_month(1),)
    assert quotas.acquire("ipinfo", "k", window).allowed
    refused = quotas.acquire("ipinfo", "k", window)
    assert refused.blocking is not None and refused.blocking.reset_at == utc(2025, 1, 1)
    clock.now = utc(2025, 1, 1)
    assert quotas.acquire("ipinfo", "k", window).allowed


def test_scaled_windows_align_to_their_length() -> None:
    """A scaled-down day is a fixed window aligned to multiples of its length since the epoch."""
    clock = ManualClock(101.5)
    quotas = QuotaTracker(clock)
    window = (Window.per_day(1).scaled(1 / 43_200),)  # a two-second "day"
    assert window[0].seconds == pytest.approx(2.0) and window[0].kind == "fixed"
    assert quotas.acquire("x", "k", window).allowed
    clock.now = 101.9
    assert not quotas.acquire("x", "k", window).allowed
    clock.now = 102.0
    assert quotas.acquire("x", "k", window).allowed
    assert Window.per_month(5).scaled(0.5).kind == "fixed"


def test_refusals_consume_nothing_and_windows_are_all_or_nothing() -> None:
    """A refused request charges no window, so the day counter only counts granted requests."""
    clock = ManualClock(0.0)
    quotas = QuotaTracker(clock)
    minute, day = Window.per_minute(1), Window.per_day(5)
    assert quotas.acquire("vt", "k", (minute, day)).allowed
    for _ in range(3):
        assert not quotas.acquire("vt", "k", (minute, day)).allowed
    assert quotas.usage("vt", "k", day).used == 1


def test_tightening_a_limit_keeps_the_count() -> None:
    """Changing a window's limit mid-run keeps the requests already counted."""
    quotas = QuotaTracker(ManualClock(0.0))
    for _ in range(3):
        assert quotas.acquire("vt", "k", (Window.per_day(10),)).allowed
    assert not quotas.acquire("vt", "k", (Window.per_day(3),)).allowed


async def test_vt_quota_is_per_key_and_429_has_no_retry_after(
    client: httpx.AsyncClient, simulator: Simulator, clock: ManualClock
) -> None:
    """The fifth VT request in a minute is a 429 QuotaExceededError for that key only."""
    for _ in range(4):
        assert (await client.get(VT_IP, headers={"x-apikey": "a"})).status_code == 200
    refused = await client.get(VT_IP, headers={"x-apikey": "a"})
    other = await client.get(VT_IP, headers={"x-apikey": "b"})
    assert refused.status_code == 429
    assert refused.json() == sample("vt_quota.json")
    assert "retry-after" not in refused.headers
    assert other.status_code == 200
    clock.advance(60)
    assert (await client.get(VT_IP, headers={"x-apikey": "a"})).status_code == 200


async def test_vt_retry_after_is_an_option(
    client: httpx.AsyncClient, simulator: Simulator, clock: ManualClock
) -> None:
    """With retry_after on, the VT 429 says when the minute window frees a slot."""
    simulator.config.virustotal.retry_after = True
    simulator.config.virustotal.windows = (Window.per_minute(1),)
    await client.get(VT_IP, headers={"x-apikey": "a"})
    clock.advance(15)
    refused = await client.get(VT_IP, headers={"x-apikey": "a"})
    assert refused.headers["retry-after"] == "45"


async def test_auth_failures_and_429s_are_not_charged(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """Requests refused for auth or quota do not consume the daily quota."""
    simulator.config.virustotal.keys = {"good"}
    simulator.config.virustotal.windows = (Window.per_minute(1), Window.per_day(100))
    await client.get(VT_IP, headers={"x-apikey": "bad"})
    await client.get(VT_IP)
    await client.get(VT_IP, headers={"x-apikey": "good"})
    await client.get(VT_IP, headers={"x-apikey": "good"})  # 429 on the minute window
    assert simulator.quotas.usage("virustotal", "good", Window.per_day(100)).used == 1
    assert [r.status for r in simulator.log] == [401, 401, 200, 429]
