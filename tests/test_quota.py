"""Quota windows, the rate limiter and the fallback store, on a virtual clock (no test sleeps)."""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from threatintel._redaction import fingerprint
from threatintel.clock import VirtualClock
from threatintel.errors import QuotaExhausted, RateLimited
from threatintel.quota import (
    STORE_RETRY_AFTER,
    FallbackQuotaStore,
    Grant,
    MemoryQuotaStore,
    QuotaStore,
    QuotaStoreUnavailable,
    RateLimiter,
    Window,
    WindowUsage,
)
from threatintel.quota.sqlite import SQLiteQuotaStore

SECRET = "VT-SECRET-KEY-0123456789abcdef0123456789abcdef"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


NOON = utc(2024, 3, 10, 12, 0, 0)
MIDNIGHT = utc(2024, 3, 11)


def most_in_any_span(times: Sequence[float], span: float) -> int:
    """The largest number of grants in any half-open span [t, t + span)."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + span) - i for i, t in enumerate(ordered)), default=0
    )


def limiter(
    clock: VirtualClock,
    windows: Sequence[Window],
    keys: Sequence[str | None] = ("k1",),
    store: QuotaStore | None = None,
    *,
    wait_for_reset: bool = False,
    max_wait: float | None = None,
    margin: float = 0.0,
) -> RateLimiter:
    store = store if store is not None else MemoryQuotaStore()
    return RateLimiter(
        "virustotal",
        keys,
        windows,
        store,
        clock,
        wait_for_reset=wait_for_reset,
        max_wait=max_wait,
        margin=margin,
    )


# --- windows -------------------------------------------------------------------------------


def test_calendar_day_resets_at_utc_midnight() -> None:
    """A calendar day ends exactly at 00:00 UTC, and midnight itself starts the next day."""
    day = Window.per_day(500)
    assert day.calendar and day.long
    assert day.reset_at(utc(2024, 3, 10, 23, 59, 59)) == MIDNIGHT
    assert day.reset_at(NOON) == MIDNIGHT
    assert day.reset_at(MIDNIGHT) == utc(2024, 3, 12)
    assert day.window_id(MIDNIGHT - 0.001) + 1 == day.window_id(MIDNIGHT)


@pytest.mark.parametrize(
    ("now", "reset"),
    [
        (utc(2024, 2, 10, 8), utc(2024, 3, 1)),
        (utc(2024, 2, 29, 23, 59, 59), utc(2024, 3, 1)),
        (utc(2023, 2, 28, 23, 59, 59), utc(2023, 3, 1)),
        (utc(2024, 1, 31, 12), utc(2024, 2, 1)),
        (utc(2024, 12, 31, 23, 59, 59), utc(2025, 1, 1)),
        (utc(2024, 3, 1), utc(2024, 4, 1)),
    ],
)
def test_calendar_month_resets_on_the_first(now: float, reset: float) -> None:
    """A calendar month ends at 00:00 UTC on the 1st, in leap Februaries and across New Year."""
    assert Window.per_month(15_500).reset_at(now) == reset


def test_scaled_windows_align_to_epoch_multiples() -> None:
    """A scaled fixed window drops the calendar and resets at multiples of its length."""
    day = Window.per_day(10).scaled(60 / 86_400)
    assert (day.seconds, day.calendar, day.sliding) == (60.0, False, False)
    assert day.reset_at(1_000.5) == 1_020.0
    assert day.reset_at(1_020.0) == 1_080.0
    assert Window.per_month(5, seconds=30.0).reset_at(NOON + 7) == NOON + 30
    minute = Window.per_minute(4).scaled(0.5)
    assert (minute.seconds, minute.sliding) == (30.0, True)


def test_bad_windows_are_refused() -> None:
    """A window without room, without length, or a sliding calendar window is a config error."""
    with pytest.raises(ValueError):
        Window.per_minute(0)
    with pytest.raises(ValueError):
        Window("minute", 4, 0.0)
    with pytest.raises(ValueError):
        Window("day", 4, 86_400.0, sliding=True, calendar=True)


# --- the memory store ----------------------------------------------------------------------


async def test_fifth_grant_waits_until_the_first_ages_out() -> None:
    """With 4 per minute, the 5th request is told to wait until the first grant is 60 s old."""
    store = MemoryQuotaStore()
    minute = [Window.per_minute(4)]
    for offset in (0, 10, 20, 30):
        assert await store.acquire("vt:a", minute, NOON + offset) == Grant(True)
    assert await store.acquire("vt:a", minute, NOON + 45) == Grant(False, wait=15.0)
    assert await store.acquire("vt:a", minute, NOON + 60) == Grant(True)
    assert await store.acquire("vt:a", minute, NOON + 60) == Grant(False, wait=10.0)


async def test_a_refused_grant_counts_in_no_window() -> None:
    """A request refused by the minute window is not counted against the day either."""
    store = MemoryQuotaStore()
    windows = [Window.per_minute(4), Window.per_day(10)]
    for _ in range(5):
        await store.acquire("vt:a", windows, NOON)
    usage = await store.usage("vt:a", windows, NOON)
    assert [(u.window, u.used, u.remaining) for u in usage] == [("minute", 4, 0), ("day", 4, 6)]
    assert usage[0].reset_at == NOON + 60
    assert usage[1].reset_at == MIDNIGHT


async def test_a_lagging_clock_cannot_reuse_a_slot() -> None:
    """A request stamped before the bucket's newest grant is judged at that newer time."""
    store = MemoryQuotaStore()
    minute = [Window.per_minute(4)]
    for now in (NOON,) * 4 + (NOON + 60,) * 4:
        assert (await store.acquire("vt:a", minute, now)).granted
    assert await store.acquire("vt:a", minute, NOON + 30) == Grant(False, wait=60.0)


# --- the limiter ---------------------------------------------------------------------------


async def test_concurrent_acquirers_never_exceed_the_window() -> None:
    """Forty coroutines at once all get a key, never more than 4 in any 60 s, with no idle slot."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4)])
    granted: list[float] = []

    async def one() -> None:
        await rl.acquire()
        granted.append(clock.time())

    await asyncio.gather(*(one() for _ in range(40)))
    assert len(granted) == 40
    assert most_in_any_span(granted, 60.0) == 4
    assert max(granted) == NOON + 9 * 60


async def test_spent_day_fails_fast_with_the_midnight_reset() -> None:
    """After 10 grants on a 10/day key the 11th raises at once, carrying next 00:00 UTC."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4), Window.per_day(10)])
    for _ in range(10):
        await rl.acquire()
    with pytest.raises(QuotaExhausted) as caught:
        await rl.acquire()
    error = caught.value
    assert error.reset_at == datetime(2024, 3, 11, tzinfo=UTC)
    assert error.provider == "virustotal"
    assert error.retry_after == pytest.approx(MIDNIGHT - clock.time())
    assert "2024-03-11 00:00:00 UTC" in str(error)
    assert clock.time() == NOON + 120  # three minutes' worth of grants, not hours of sleep


async def test_wait_for_reset_sleeps_until_midnight_and_goes_on() -> None:
    """With wait_for_reset a spent day is slept through and the batch goes on at midnight."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4), Window.per_day(10)], wait_for_reset=True)
    for _ in range(10):
        await rl.acquire()
    assert await rl.acquire() == "k1"
    assert clock.time() == MIDNIGHT


async def test_grants_spread_evenly_over_keys() -> None:
    """Three keys at 4/min give 12 grants in a minute, a third each; the 13th waits a minute."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4)], keys=["a", "b", "c"])
    used = Counter([await rl.acquire() for _ in range(12)])
    assert used == {"a": 4, "b": 4, "c": 4}
    assert clock.time() == NOON
    await rl.acquire()
    assert clock.time() == NOON + 60


async def test_many_keys_under_load_stay_within_each_window() -> None:
    """Sixty concurrent acquirers over three keys: each key keeps its own 4/min and all share."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4)], keys=["a", "b", "c"])
    granted: dict[str | None, list[float]] = {"a": [], "b": [], "c": []}

    async def one() -> None:
        key = await rl.acquire()
        granted[key].append(clock.time())

    await asyncio.gather(*(one() for _ in range(60)))
    assert [len(times) for times in granted.values()] == [20, 20, 20]
    assert all(most_in_any_span(times, 60.0) == 4 for times in granted.values())
    assert clock.time() == NOON + 4 * 60


async def test_a_blocked_key_is_skipped_while_others_have_budget() -> None:
    """After a 429 on one key the others serve the requests without waiting."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4)], keys=["a", "b", "c"])
    await rl.penalize("a", retry_after=600.0, long_window=False)
    used = Counter([await rl.acquire() for _ in range(8)])
    assert used == {"b": 4, "c": 4}
    assert clock.time() == NOON


async def test_penalty_honours_retry_after_exactly() -> None:
    """A 429 with Retry-After: 30 blocks the key for exactly 30 s, then it is granted again."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4)])
    await rl.penalize("k1", retry_after=30.0, long_window=False)
    assert (await rl.usage())[0].blocked_until == NOON + 30
    assert await rl.acquire() == "k1"
    assert clock.time() == NOON + 30


async def test_long_window_penalty_blocks_until_the_reset() -> None:
    """A daily-quota 429 without Retry-After blocks to 00:00 UTC and fails fast meanwhile."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4), Window.per_day(500), Window.per_month(15_500)])
    await rl.penalize("k1", retry_after=None, long_window=True)
    assert (await rl.usage())[0].blocked_until == MIDNIGHT
    with pytest.raises(QuotaExhausted) as caught:
        await rl.acquire()
    assert caught.value.reset_at == datetime(2024, 3, 11, tzinfo=UTC)
    assert "429" in str(caught.value)
    assert clock.time() == NOON


async def test_short_penalty_blocks_one_short_window() -> None:
    """A minute-quota 429 without Retry-After blocks the key for one minute."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4), Window.per_day(500)])
    await rl.penalize("k1", retry_after=None, long_window=False)
    assert (await rl.usage())[0].blocked_until == NOON + 60
    await rl.acquire()
    assert clock.time() == NOON + 60


VT_WINDOWS = [Window.per_minute(4), Window.per_day(500), Window.per_month(15_500)]


@pytest.mark.parametrize("windows", [VT_WINDOWS, [Window.per_minute(4)]])
async def test_a_second_429_in_a_row_blocks_until_midnight(windows: list[Window]) -> None:
    """A 429 without Retry-After after a minute's block means a spent day: fail fast to 00:00."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, windows)
    await rl.penalize("k1", retry_after=None, long_window=False)
    assert (await rl.usage())[0].blocked_until == NOON + 60
    await rl.acquire()
    assert clock.time() == NOON + 60
    await rl.penalize("k1", retry_after=None, long_window=False)
    with pytest.raises(QuotaExhausted) as caught:
        await rl.acquire()
    assert caught.value.reset_at == datetime(2024, 3, 11, tzinfo=UTC)
    assert clock.time() == NOON + 60


async def test_a_success_between_two_429s_starts_the_count_again() -> None:
    """An answer after the first 429 means the day is not spent: the next 429 blocks a minute."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, VT_WINDOWS)
    await rl.penalize("k1", retry_after=None, long_window=False)
    await rl.acquire()
    await rl.record_success("k1")
    await rl.penalize("k1", retry_after=None, long_window=False)
    assert (await rl.usage())[0].blocked_until == NOON + 120
    await rl.acquire()
    assert clock.time() == NOON + 120


async def test_a_retry_after_is_honoured_exactly_and_never_escalated() -> None:
    """A 429 with Retry-After blocks for exactly that long, even after an unanswered 429."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, VT_WINDOWS)
    await rl.penalize("k1", retry_after=None, long_window=False)
    await rl.acquire()
    for expected in (NOON + 90, NOON + 120):
        await rl.penalize("k1", retry_after=30.0, long_window=False)
        assert (await rl.usage())[0].blocked_until == expected
        await rl.acquire()
        assert clock.time() == expected


async def test_429s_still_in_flight_during_the_block_do_not_escalate() -> None:
    """Three 429s at once (requests sent before the first came back) block one minute only."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, VT_WINDOWS)
    for _ in range(3):
        await rl.penalize("k1", retry_after=None, long_window=False)
    await rl.acquire()
    assert clock.time() == NOON + 60


async def test_a_strike_does_not_outlive_the_daily_reset() -> None:
    """A 429 before midnight and one after it are two days' first strikes: a minute each."""
    clock = VirtualClock(MIDNIGHT - 30)
    rl = limiter(clock, VT_WINDOWS)
    await rl.penalize("k1", retry_after=None, long_window=False)
    await rl.acquire()
    await rl.penalize("k1", retry_after=None, long_window=False)
    assert (await rl.usage())[0].blocked_until == MIDNIGHT + 90


async def test_an_escalation_stops_every_limiter_sharing_the_store() -> None:
    """The long block is in the store, so another process's limiter fails fast at once."""
    clock = VirtualClock(NOON)
    store = MemoryQuotaStore()
    one, two = limiter(clock, VT_WINDOWS, store=store), limiter(clock, VT_WINDOWS, store=store)
    await one.penalize("k1", retry_after=None, long_window=False)
    await one.acquire()
    await one.penalize("k1", retry_after=None, long_window=False)
    with pytest.raises(QuotaExhausted) as caught:
        await two.acquire()
    assert caught.value.reset_at == datetime(2024, 3, 11, tzinfo=UTC)


async def test_margin_lengthens_sliding_windows_only() -> None:
    """With a 1 s margin and 4/min the 5th grant waits 61 s; the day and the names are unchanged."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4), Window.per_day(10)], margin=1.0)
    for _ in range(5):
        await rl.acquire()
    assert clock.time() == NOON + 61
    assert (await rl.usage())[0].windows == (
        WindowUsage("minute", 4, 1, 3, NOON + 122),
        WindowUsage("day", 10, 5, 5, MIDNIGHT),
    )


async def test_a_long_retry_after_fails_fast() -> None:
    """An AbuseIPDB 429 whose Retry-After is hours away is reported, not slept through."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_day(1_000)])
    await rl.penalize("k1", retry_after=5 * 3600.0, long_window=True)
    with pytest.raises(QuotaExhausted) as caught:
        await rl.acquire()
    assert caught.value.retry_after == 5 * 3600.0


async def test_max_wait_turns_a_long_wait_into_rate_limited() -> None:
    """A lookup allowed to wait 10 s gets RateLimited with retry_after instead of a 60 s wait."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4)], max_wait=10.0)
    for _ in range(4):
        await rl.acquire()
    with pytest.raises(RateLimited) as caught:
        await rl.acquire()
    assert type(caught.value) is RateLimited
    assert caught.value.retry_after == 60.0
    assert clock.time() == NOON


async def test_usage_reports_remaining_budget_per_fingerprint() -> None:
    """usage() names keys by fingerprint and counts what each has left in every window."""
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(4), Window.per_day(10)], keys=["a", "b"])
    for _ in range(3):
        await rl.acquire()
    usage = await rl.usage()
    assert [u.key for u in usage] == [fingerprint("a"), fingerprint("b")]
    assert usage[0].windows == (
        WindowUsage("minute", 4, 2, 2, NOON + 60),
        WindowUsage("day", 10, 2, 8, MIDNIGHT),
    )
    assert [w.remaining for w in usage[1].windows] == [3, 9]
    assert usage[0].blocked_until is None


async def test_anonymous_use_has_its_own_bucket() -> None:
    """A None key (OTX or IPinfo without a key) is limited as the 'anonymous' bucket."""
    clock = VirtualClock(NOON)
    rl = RateLimiter("ipinfo", [None], [Window.per_month(2)], MemoryQuotaStore(), clock)
    assert await rl.acquire() is None
    assert [u.key for u in await rl.usage()] == ["anonymous"]


async def test_the_raw_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    """A recognisable key appears in no repr, usage, exception or log line; its fingerprint does."""
    caplog.set_level(logging.DEBUG)
    clock = VirtualClock(NOON)
    rl = limiter(clock, [Window.per_minute(1), Window.per_day(2)], keys=[SECRET], max_wait=1.0)
    shown = [repr(rl), str(rl)]
    await rl.acquire()
    with pytest.raises(RateLimited) as limited:
        await rl.acquire()
    await rl.penalize(SECRET, retry_after=None, long_window=True)
    with pytest.raises(QuotaExhausted) as exhausted:
        await rl.acquire()
    usage = await rl.usage()
    shown += [repr(usage), str(usage), repr(limited.value), str(limited.value)]
    shown += [repr(exhausted.value), str(exhausted.value), caplog.text]
    for text in shown:
        assert SECRET not in text
        assert SECRET[:12] not in text
    assert fingerprint(SECRET) in repr(usage) and fingerprint(SECRET) in repr(rl)


class FlakyStore:
    """A store that can be switched off, as a Redis outage looks to the limiter."""

    def __init__(self) -> None:
        self.up = False
        self.inner = MemoryQuotaStore()

    def _check(self) -> None:
        if not self.up:
            raise QuotaStoreUnavailable("down")

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant:
        self._check()
        return await self.inner.acquire(bucket, windows, now)

    async def block(self, bucket: str, until: float) -> None:
        self._check()
        await self.inner.block(bucket, until)

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        self._check()
        return await self.inner.usage(bucket, windows, now)

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        self._check()
        return await self.inner.blocked_until(bucket, now)

    async def refund(self, bucket: str, windows: Sequence[Window], grant: Grant) -> None:
        self._check()
        await self.inner.refund(bucket, windows, grant)

    async def learned_limits(self, bucket: str, now: float) -> dict[str, int]:
        self._check()
        return await self.inner.learned_limits(bucket, now)

    async def keep_limits(self, bucket: str, limits: Mapping[str, int], until: float) -> None:
        self._check()
        await self.inner.keep_limits(bucket, limits, until)

    async def aclose(self) -> None:
        return None


async def test_an_unreachable_store_falls_back_to_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the shared store down the limiter warns once, counts locally, and returns to it."""
    clock = VirtualClock(NOON)
    store = FlakyStore()
    rl = limiter(clock, [Window.per_minute(4)], store=store)
    granted = [await rl.acquire() for _ in range(12)]
    assert granted == ["k1"] * 12
    assert clock.time() == NOON + 120  # the local budget still keeps 4/min
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    store.up = True
    clock.advance(60)
    await rl.acquire()
    bucket = "virustotal:" + fingerprint("k1")
    assert (await store.inner.usage(bucket, rl.windows, clock.time()))[0].used == 1


def test_limiter_needs_a_key_and_distinct_windows() -> None:
    """An empty key list, two windows with one name or a negative margin is refused."""
    clock = VirtualClock(NOON)
    with pytest.raises(ValueError):
        limiter(clock, [Window.per_minute(4)], margin=-1.0)
    with pytest.raises(ValueError):
        limiter(clock, [Window.per_minute(4)], keys=[])
    with pytest.raises(ValueError):
        limiter(clock, [Window.per_minute(4), Window.per_minute(10, seconds=1.0)])


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_the_fallback_store_counts_while_the_primary_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Grants go to the given fallback while degraded, with one warning, and back after."""
    clock = VirtualClock(NOON)
    primary, fallback = FlakyStore(), FlakyStore()
    fallback.up = True
    store = FallbackQuotaStore(primary, clock=clock, fallback=fallback)
    rl = limiter(clock, [Window.per_minute(4)], store=store)
    assert not store.degraded
    for _ in range(8):
        await rl.acquire()
    assert store.degraded
    bucket = "virustotal:" + fingerprint("k1")
    assert (await fallback.inner.usage(bucket, rl.windows, clock.time()))[0].used == 4
    assert len(warnings_in(caplog)) == 1
    primary.up = True
    clock.advance(STORE_RETRY_AFTER)
    await rl.acquire()
    assert not store.degraded
    assert (await primary.inner.usage(bucket, rl.windows, clock.time()))[0].used == 1


async def test_a_failing_fallback_gives_way_to_memory(caplog: pytest.LogCaptureFixture) -> None:
    """With the fallback down too, memory keeps 4/min and the outage still logs one warning."""
    clock = VirtualClock(NOON)
    store = FallbackQuotaStore(FlakyStore(), clock=clock, fallback=FlakyStore())
    rl = limiter(clock, [Window.per_minute(4)], store=store)
    for _ in range(12):
        await rl.acquire()
    assert clock.time() == NOON + 120
    assert store.degraded
    (warning,) = warnings_in(caplog)
    assert "in this process's memory" in warning and "fallback store failed too" in warning


async def test_a_fallback_failing_later_in_an_outage_is_told_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fallback going down mid-outage adds one warning, however many calls follow."""
    clock = VirtualClock(NOON)
    fallback = FlakyStore()
    fallback.up = True
    store = FallbackQuotaStore(FlakyStore(), clock=clock, fallback=fallback)
    rl = limiter(clock, [Window.per_minute(4)], store=store)
    await rl.acquire()
    fallback.up = False
    for _ in range(8):
        await rl.acquire()
    assert len(warnings_in(caplog)) == 2


async def test_a_sqlite_fallback_outlives_the_process(tmp_path: Path) -> None:
    """Two runs in a row with the primary down spend one budget kept in the SQLite fallback."""
    clock = VirtualClock(NOON)
    for run in range(2):
        store = FallbackQuotaStore(
            FlakyStore(), clock=clock, fallback=SQLiteQuotaStore(tmp_path / "quota.sqlite3")
        )
        rl = limiter(clock, [Window.per_minute(4)], store=store)
        try:
            for _ in range(2):
                await rl.acquire()
            assert [w.used for w in (await rl.usage())[0].windows] == [2 * run + 2]
        finally:
            await store.aclose()
