"""The shared Redis quota store: the limiter's behaviours across instances, on a virtual clock.

Needs a Redis at 127.0.0.1:6379 (skipped otherwise); each test works under its own key prefix
and deletes it afterwards.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from test_quota import MIDNIGHT, NOON, SECRET, most_in_any_span
from threatintel._redaction import fingerprint
from threatintel.clock import VirtualClock
from threatintel.errors import QuotaExhausted
from threatintel.quota import Grant, RateLimiter, Window
from threatintel.quota.redis import RedisQuotaStore

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_URL = "redis://127.0.0.1:1/0"

MakeStore = Callable[[], RedisQuotaStore]


class LockstepClock(VirtualClock):
    """A virtual clock that moves only when every participant is asleep on it.

    VirtualClock jumps as soon as one sleeper has yielded once; that models CPU-only work, but
    here other participants are still waiting on Redis, and real time would not pass them by.
    A task still holds the clock until it sleeps or calls ``done``.
    """

    def __init__(self, start: float, participants: int) -> None:
        super().__init__(start)
        self.awake = participants
        self.sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self.sleepers, (self.now + max(0.0, seconds), id(woken), woken))
        self.awake -= 1
        self._advance()
        await woken

    def done(self) -> None:
        self.awake -= 1
        self._advance()

    def _advance(self) -> None:
        if self.awake or not self.sleepers:
            return
        self.now = max(self.now, self.sleepers[0][0])
        while self.sleepers and self.sleepers[0][0] <= self.now:
            heapq.heappop(self.sleepers)[2].set_result(None)
            self.awake += 1


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """A fresh key prefix on the local Redis, deleted after the test (see conftest)."""
    return redis_prefix


@pytest.fixture
async def make_store(prefix: str) -> AsyncIterator[MakeStore]:
    """Build stores on the test's prefix, each with its own client like a separate instance."""
    made: list[RedisQuotaStore] = []

    def make() -> RedisQuotaStore:
        made.append(RedisQuotaStore(REDIS_URL, prefix=prefix))
        return made[-1]

    yield make
    for store in made:
        await store.aclose()


async def test_fifth_grant_waits_until_the_first_ages_out(make_store: MakeStore) -> None:
    """With 4 per minute in Redis, the 5th request is told the exact wait for the first slot."""
    store = make_store()
    minute = [Window.per_minute(4)]
    for offset in (0, 10, 20, 30):
        assert await store.acquire("vt:a", minute, NOON + offset) == Grant(True)
    assert await store.acquire("vt:a", minute, NOON + 45) == Grant(False, wait=15.0)
    assert await store.acquire("vt:a", minute, NOON + 60) == Grant(True)


async def test_a_refused_grant_counts_in_no_window(make_store: MakeStore) -> None:
    """The script records a grant in every window or in none, and usage reads the counts back."""
    store = make_store()
    windows = [Window.per_minute(4), Window.per_day(10)]
    for _ in range(5):
        await store.acquire("vt:a", windows, NOON)
    usage = await store.usage("vt:a", windows, NOON)
    assert [(u.window, u.used, u.remaining) for u in usage] == [("minute", 4, 0), ("day", 4, 6)]
    assert (usage[0].reset_at, usage[1].reset_at) == (NOON + 60, MIDNIGHT)


async def test_a_lagging_clock_cannot_reuse_a_slot(make_store: MakeStore) -> None:
    """A request stamped before the bucket's newest grant is judged at that newer time."""
    store = make_store()
    minute = [Window.per_minute(4)]
    for now in (NOON,) * 4 + (NOON + 60,) * 4:
        assert (await store.acquire("vt:a", minute, now)).granted
    assert await store.acquire("vt:a", minute, NOON + 30) == Grant(False, wait=60.0)


async def test_spent_day_fails_fast_then_waits_for_reset_when_asked(make_store: MakeStore) -> None:
    """A spent shared day raises at once with 00:00 UTC; with wait_for_reset it resumes then."""
    clock = VirtualClock(NOON)
    windows = [Window.per_minute(4), Window.per_day(10)]
    fast = RateLimiter("virustotal", ["k"], windows, make_store(), clock)
    patient = RateLimiter("virustotal", ["k"], windows, make_store(), clock, wait_for_reset=True)
    for _ in range(10):
        await fast.acquire()
    with pytest.raises(QuotaExhausted) as caught:
        await fast.acquire()
    assert caught.value.reset_at == datetime(2024, 3, 11, tzinfo=UTC)
    assert clock.time() == NOON + 120
    assert await patient.acquire() == "k"
    assert clock.time() == MIDNIGHT


async def test_keys_are_limited_each_on_their_own(make_store: MakeStore) -> None:
    """Three keys at 4/min give 12 grants in the first minute, four on each."""
    clock = VirtualClock(NOON)
    rl = RateLimiter("virustotal", ["a", "b", "c"], [Window.per_minute(4)], make_store(), clock)
    used = Counter([await rl.acquire() for _ in range(12)])
    assert used == {"a": 4, "b": 4, "c": 4}
    assert clock.time() == NOON
    assert [u.windows[0].remaining for u in await rl.usage()] == [0, 0, 0]


async def test_a_penalty_is_shared_and_only_grows(make_store: MakeStore) -> None:
    """A 429 seen by one instance blocks the key for all; a shorter later block does not lift it."""
    clock = VirtualClock(NOON)
    windows = [Window.per_minute(4), Window.per_day(500)]
    one = RateLimiter("virustotal", ["k"], windows, make_store(), clock)
    two = RateLimiter("virustotal", ["k"], windows, make_store(), clock)
    await one.penalize("k", retry_after=30.0, long_window=False)
    await one.penalize("k", retry_after=5.0, long_window=False)
    assert (await two.usage())[0].blocked_until == NOON + 30
    await two.acquire()
    assert clock.time() == NOON + 30
    await one.penalize("k", retry_after=None, long_window=True)
    with pytest.raises(QuotaExhausted) as caught:
        await two.acquire()
    assert caught.value.reset_at == datetime(2024, 3, 11, tzinfo=UTC)


async def test_three_instances_share_one_key_budget(make_store: MakeStore) -> None:
    """Three instances with one key never exceed 4 grants in any 60 s and use ≥ 95% of slots."""
    clock = LockstepClock(NOON, participants=60)
    instances = [
        RateLimiter("virustotal", ["shared"], [Window.per_minute(4)], make_store(), clock)
        for _ in range(3)
    ]
    granted: list[float] = []

    async def one(rl: RateLimiter) -> None:
        try:
            await rl.acquire()
            granted.append(clock.time())
        finally:
            clock.done()

    await asyncio.gather(*(one(rl) for rl in instances for _ in range(20)))
    assert len(granted) == 60
    assert most_in_any_span(granted, 60.0) <= 4
    in_five_minutes = sum(1 for t in granted if t < NOON + 300)
    assert in_five_minutes >= 0.95 * 20  # 4 slots at each of 5 minute marks
    slots_until_done = 4 * ((max(granted) - NOON) // 60 + 1)
    assert len(granted) >= 0.95 * slots_until_done


async def test_redis_keys_carry_fingerprints_never_the_key(make_store: MakeStore) -> None:
    """Every key the store writes names the API key by fingerprint only."""
    store = make_store()
    clock = VirtualClock(NOON)
    windows = [Window.per_minute(4), Window.per_day(500), Window.per_month(15_500)]
    rl = RateLimiter("virustotal", [SECRET], windows, store, clock)
    await rl.acquire()
    await rl.penalize(SECRET, retry_after=1.0, long_window=False)
    client = Redis.from_url(REDIS_URL)
    names = [key.decode() async for key in client.scan_iter(match=store.prefix + "*")]
    await client.aclose()
    assert len(names) == 5
    assert all(fingerprint(SECRET) in name and SECRET[:12] not in name for name in names)
    assert SECRET not in repr(store)


async def test_unreachable_redis_falls_back_to_memory(caplog: pytest.LogCaptureFixture) -> None:
    """With Redis down the limiter logs one warning and keeps granting from a local budget."""
    clock = VirtualClock(NOON)
    store = RedisQuotaStore(UNREACHABLE_URL, socket_timeout=0.5)
    rl = RateLimiter("virustotal", ["k"], [Window.per_minute(4)], store, clock)
    try:
        assert [await rl.acquire() for _ in range(8)] == ["k"] * 8
        assert clock.time() == NOON + 60
        assert [u.windows[0].used for u in await rl.usage()] == [4]
    finally:
        await store.aclose()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage()
