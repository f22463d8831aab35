"""Vendor quotas, spent exactly once: per provider, per API key, every window at once.

    limiter = RateLimiter(
        "virustotal",
        keys=["k1", "k2"],
        windows=[Window.per_minute(4), Window.per_day(500), Window.per_month(15_500)],
        store=MemoryQuotaStore(),        # or RedisQuotaStore(url): one budget for every instance
        clock=SystemClock(),
    )
    key = await limiter.acquire()        # waits for minute/hour slots; a spent day/month raises
    ...                                  # call the vendor with `key`
    await limiter.penalize(key, retry_after=30.0, long_window=False)   # a 429 arrived anyway

A grant counts in every window of the key or in none (the store decides atomically), so the
vendor never sees a request we could have predicted it would refuse. Short windows (sliding:
any ``seconds`` span holds at most ``limit`` grants) are waited out; a spent long window (fixed:
day from 00:00 UTC, month from the 1st) fails fast with QuotaExhausted and its reset time, unless
``wait_for_reset``. Keys appear only as ``fingerprint(key)``: in store keys, logs, errors, reprs.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from threatintel.clock import Clock
from threatintel.errors import QuotaExhausted, RateLimited, ThreatIntelError
from threatintel.settings import fingerprint

logger = logging.getLogger(__name__)

MINUTE = 60.0
HOUR = 3_600.0
DAY = 86_400.0
#: A calendar month's nominal length; its real boundaries are the 1st, 00:00 UTC.
MONTH = 30 * DAY

#: ``Grant.exhausted`` for a bucket blocked by ``QuotaStore.block`` (a 429 correction).
BLOCKED = "blocked"
#: Label of the bucket used without an API key (OTX and IPinfo accept anonymous calls).
ANONYMOUS = "anonymous"
#: A block ending within this many seconds (or the longest short window, if longer) is waited
#: out like a full short window; a longer one is treated as a spent long window and fails fast.
MAX_BLOCK_WAIT = 300.0
#: How long a 429 without Retry-After blocks a key when the limiter has no short window.
DEFAULT_PENALTY = MINUTE
#: While the shared store is down, how often to try it again.
STORE_RETRY_AFTER = 30.0
#: Floor for a computed wait, so a rounding slip can never spin the acquire loop.
MIN_WAIT = 0.001

T = TypeVar("T")


class QuotaStoreUnavailable(ThreatIntelError):
    """The shared quota store cannot be reached; RateLimiter falls back to a local budget."""


@dataclass(frozen=True, slots=True)
class Window:
    """One limit a vendor enforces, e.g. ``Window.per_minute(4)`` or ``Window.per_day(500)``.

    Sliding windows (minute, hour) allow ``limit`` grants in any span of ``seconds``. Fixed
    windows count from a boundary: a ``calendar`` day starts at 00:00 UTC and a calendar month at
    00:00 UTC on the 1st (real month lengths); other fixed windows start at multiples of
    ``seconds`` since the epoch, which is what ``scaled`` produces for tests and benchmarks.
    """

    name: str
    limit: int
    seconds: float
    sliding: bool = True
    calendar: bool = False

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"window {self.name!r}: limit must be at least 1")
        if not 0 < self.seconds < math.inf:
            raise ValueError(f"window {self.name!r}: seconds must be positive and finite")
        if self.calendar and (self.sliding or self.name not in ("day", "month")):
            raise ValueError("calendar windows are fixed windows named 'day' or 'month'")
        if self.calendar and self.name == "day" and self.seconds != DAY:
            raise ValueError("a calendar day lasts 86400 seconds")

    @classmethod
    def per_minute(cls, limit: int, seconds: float = MINUTE) -> Window:
        return cls("minute", limit, seconds, sliding=True)

    @classmethod
    def per_hour(cls, limit: int, seconds: float = HOUR) -> Window:
        return cls("hour", limit, seconds, sliding=True)

    @classmethod
    def per_day(cls, limit: int, seconds: float | None = None) -> Window:
        return cls("day", limit, DAY if seconds is None else seconds, False, seconds is None)

    @classmethod
    def per_month(cls, limit: int, seconds: float | None = None) -> Window:
        return cls("month", limit, MONTH if seconds is None else seconds, False, seconds is None)

    def scaled(self, factor: float) -> Window:
        """The same limit over ``seconds * factor``, aligned to epoch multiples (not calendars)."""
        if not 0 < factor < math.inf:
            raise ValueError("factor must be positive and finite")
        return Window(self.name, self.limit, self.seconds * factor, self.sliding, calendar=False)

    @property
    def long(self) -> bool:
        """Exhausting this window fails fast instead of waiting."""
        return not self.sliding

    def window_id(self, now: float) -> int:
        """Which fixed window ``now`` falls in (months count from year 0)."""
        if self.sliding:
            raise ValueError(f"window {self.name!r} is sliding and has no fixed id")
        if self.calendar and self.name == "month":
            day = datetime.fromtimestamp(now, UTC)
            return day.year * 12 + day.month - 1
        index = math.floor(now / self.seconds)
        # The division can land an ulp off an integer; never report a window that has not
        # started yet or has already ended, or reset_at would disagree with the counter.
        if index * self.seconds > now:
            index -= 1
        elif (index + 1) * self.seconds <= now:
            index += 1
        return index

    def reset_at(self, now: float) -> float:
        """Fixed windows: the start of the next window. Sliding: when a grant made now expires."""
        if self.sliding:
            return now + self.seconds
        index = self.window_id(now)
        if self.calendar and self.name == "month":
            year, month = divmod(index + 1, 12)
            return datetime(year, month + 1, 1, tzinfo=UTC).timestamp()
        return (index + 1) * self.seconds


@dataclass(frozen=True, slots=True)
class Grant:
    """A store's answer to one acquire.

    Not granted: ``wait`` is the earliest time worth asking again; ``exhausted`` names the spent
    long window (or ``BLOCKED``) and ``reset_at`` is when it ends; ``exhausted`` is None when
    only short windows are full.
    """

    granted: bool
    wait: float = 0.0
    exhausted: str | None = None
    reset_at: float | None = None


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """One window of one key: ``reset_at`` is the next fixed boundary, or for a sliding window
    the moment its oldest live grant stops counting (None when it holds none)."""

    window: str
    limit: int
    used: int
    remaining: int
    reset_at: float | None


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """The budget left on one key, named by its fingerprint (or ``"anonymous"``)."""

    key: str
    windows: tuple[WindowUsage, ...]
    blocked_until: float | None


class QuotaStore(Protocol):
    """Where grants are counted; the arbiter between every coroutine and instance.

    ``acquire`` is atomic: a grant counts in all ``windows`` or nothing is counted. Times are the
    caller's clock (never the store's), so virtual clocks work and instances agree.
    """

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant: ...

    async def block(self, bucket: str, until: float) -> None: ...

    async def usage(
        self, bucket: str, windows: Sequence[Window], now: float
    ) -> list[WindowUsage]: ...

    async def blocked_until(self, bucket: str, now: float) -> float | None: ...

    async def aclose(self) -> None: ...


class MemoryQuotaStore:
    """A per-process store: the test store, and the fallback when the shared one is down.

    Sliding windows keep a sorted list of the instants their grants expire; fixed windows keep
    ``(window_id, count)``.
    """

    __slots__ = ("_blocks", "_fixed", "_seen", "_sliding")

    def __init__(self) -> None:
        self._sliding: dict[tuple[str, str], list[float]] = {}
        self._fixed: dict[tuple[str, str], tuple[int, int]] = {}
        self._blocks: dict[str, float] = {}
        self._seen: dict[str, float] = {}

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant:
        # Nothing in here awaits, so within one event loop no other acquire can interleave
        # between the check and the record: atomic without a lock.
        # Time never runs backwards for a bucket: a caller holding an older instant is judged
        # at the newest one seen, so it cannot reuse a slot that has been given out since.
        now = max(now, self._seen.get(bucket, now))
        until = self._blocks.get(bucket)
        if until is not None:
            if until > now:
                return Grant(False, wait=until - now, exhausted=BLOCKED, reset_at=until)
            del self._blocks[bucket]
        spent: tuple[float, str] | None = None
        frees_at = now
        for window in windows:
            if window.sliding:
                expiries = self._live(bucket, window, now)
                if len(expiries) >= window.limit:
                    frees_at = max(frees_at, expiries[len(expiries) - window.limit])
            elif self._count(bucket, window, now) >= window.limit:
                reset = window.reset_at(now)
                if spent is None or reset > spent[0]:
                    spent = (reset, window.name)
        if spent is not None:
            return Grant(False, wait=spent[0] - now, exhausted=spent[1], reset_at=spent[0])
        if frees_at > now:
            return Grant(False, wait=frees_at - now)
        for window in windows:
            if window.sliding:
                bisect.insort(self._sliding[(bucket, window.name)], now + window.seconds)
            else:
                count = self._count(bucket, window, now)
                self._fixed[(bucket, window.name)] = (window.window_id(now), count + 1)
        self._seen[bucket] = now
        return Grant(True)

    async def block(self, bucket: str, until: float) -> None:
        # A block only ever grows: a later, shorter 429 must not lift a longer one.
        self._blocks[bucket] = max(until, self._blocks.get(bucket, until))

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        result = []
        for window in windows:
            if window.sliding:
                expiries = self._live(bucket, window, now)
                used = len(expiries)
                reset: float | None = expiries[0] if expiries else None
            else:
                used = self._count(bucket, window, now)
                reset = window.reset_at(now)
            remaining = max(0, window.limit - used)
            result.append(WindowUsage(window.name, window.limit, used, remaining, reset))
        return result

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        until = self._blocks.get(bucket)
        return until if until is not None and until > now else None

    async def aclose(self) -> None:
        return None

    def _live(self, bucket: str, window: Window, now: float) -> list[float]:
        """The window's grant expiries still in force, with the expired ones dropped."""
        expiries = self._sliding.setdefault((bucket, window.name), [])
        # A grant stops counting at exactly its expiry: the instant a sleeper wakes up to.
        del expiries[: bisect.bisect_right(expiries, now)]
        return expiries

    def _count(self, bucket: str, window: Window, now: float) -> int:
        window_id, count = self._fixed.get((bucket, window.name), (None, 0))
        return count if window_id == window.window_id(now) else 0


class RateLimiter:
    """One per provider: hands out a key with budget left, waiting for short windows.

        limiter = RateLimiter("virustotal", keys=["k1", "k2"],
                              windows=[Window.per_minute(4), Window.per_day(500)],
                              store=MemoryQuotaStore(), clock=SystemClock())
        key = await limiter.acquire()    # QuotaExhausted when every key's long window is spent
        await limiter.penalize(key, retry_after=None, long_window=True)   # after a 429

    Keys are tried round-robin, each limited on its own. A ``None`` key is the anonymous bucket.
    ``wait_for_reset`` sleeps until a spent long window resets instead of raising;
    ``max_wait`` bounds the total wait of one acquire (RateLimited, or QuotaExhausted for a
    long window, beyond it). When ``store`` is unreachable the limiter logs one warning and uses
    ``fallback`` (a process-local MemoryQuotaStore by default) until the store answers again:
    a lookup never fails because the shared store is down.
    """

    __slots__ = (
        "_block_horizon",
        "_clock",
        "_degraded_until",
        "_fallback",
        "_keys",
        "_store",
        "_turn",
        "max_wait",
        "provider",
        "wait_for_reset",
        "windows",
    )

    def __init__(
        self,
        provider: str,
        keys: Sequence[str | None],
        windows: Sequence[Window],
        store: QuotaStore,
        clock: Clock,
        *,
        wait_for_reset: bool = False,
        max_wait: float | None = None,
        fallback: QuotaStore | None = None,
    ) -> None:
        if not keys:
            raise ValueError(f"{provider}: at least one key is needed (None for anonymous use)")
        names = [window.name for window in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"{provider}: window names must be unique, got {names}")
        if max_wait is not None and max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.provider = provider
        self.windows = tuple(windows)
        self.wait_for_reset = wait_for_reset
        self.max_wait = max_wait
        # The same key twice would only share one bucket; keep the first occurrence.
        unique = dict.fromkeys(keys)
        self._keys = tuple((key, self._bucket(key)) for key in unique)
        self._store = store
        self._fallback: QuotaStore = fallback if fallback is not None else MemoryQuotaStore()
        self._clock = clock
        self._turn = 0
        self._degraded_until: float | None = None
        short = [window.seconds for window in self.windows if window.sliding]
        self._block_horizon = max([MAX_BLOCK_WAIT, *short])

    def __repr__(self) -> str:
        labels = [_label(key) for key, _ in self._keys]
        windows = ", ".join(f"{w.limit}/{w.name}" for w in self.windows)
        return f"RateLimiter({self.provider!r}, keys={labels}, windows=[{windows}])"

    async def acquire(self) -> str | None:
        """A key with budget in every window, counted; waits for short windows to free up."""
        deadline = None if self.max_wait is None else self._clock.time() + self.max_wait
        while True:
            waits: list[float] = []
            resets: list[tuple[float, str]] = []
            for key, bucket in self._rotation():
                now = self._clock.time()
                grant = await self._acquire_on(bucket, now)
                if grant.granted:
                    return key
                reset = grant.reset_at if grant.reset_at is not None else now + grant.wait
                if grant.exhausted is None or (
                    grant.exhausted == BLOCKED and reset - now <= self._block_horizon
                ):
                    waits.append(grant.wait)
                else:
                    resets.append((reset, grant.exhausted))
            now = self._clock.time()
            if waits:
                wait = max(min(waits), MIN_WAIT)
                if deadline is not None and now + wait > deadline:
                    raise RateLimited(
                        self.provider,
                        f"{self.provider} rate limit: the next slot is {wait:.1f}s away, "
                        f"beyond the {self.max_wait:g}s this lookup may wait",
                        retry_after=wait,
                    )
            else:
                reset, what = min(resets)
                if not self.wait_for_reset or (deadline is not None and reset > deadline):
                    raise self._exhausted(what, reset, now)
                wait = max(reset - now, MIN_WAIT)
            await self._clock.sleep(wait)

    async def penalize(
        self, key: str | None, *, retry_after: float | None, long_window: bool
    ) -> None:
        """Honour a 429 that arrived anyway: no grant on ``key`` until it should be over.

        ``retry_after`` wins when the vendor sent one; otherwise a long-window 429 blocks until
        the earliest long window resets (the next 00:00 UTC without one), and a short one blocks
        for the shortest short window.
        """
        now = self._clock.time()
        if retry_after is not None:
            until = now + max(0.0, retry_after)
        elif long_window:
            resets = [window.reset_at(now) for window in self.windows if window.long]
            until = min(resets) if resets else Window.per_day(1).reset_at(now)
        else:
            short = [window.seconds for window in self.windows if window.sliding]
            until = now + (min(short) if short else DEFAULT_PENALTY)
        bucket = self._bucket(key)
        logger.info("%s %s: blocked for %.0fs after a 429", self.provider, _label(key), until - now)
        await self._call(lambda store: store.block(bucket, until))

    async def usage(self) -> list[KeyUsage]:
        """The budget left per key, keys shown as fingerprints."""
        return [await self._key_usage(key, bucket) for key, bucket in self._keys]

    async def _acquire_on(self, bucket: str, now: float) -> Grant:
        return await self._call(lambda store: store.acquire(bucket, self.windows, now))

    async def _key_usage(self, key: str | None, bucket: str) -> KeyUsage:
        now = self._clock.time()
        windows = await self._call(lambda store: store.usage(bucket, self.windows, now))
        blocked = await self._call(lambda store: store.blocked_until(bucket, now))
        return KeyUsage(_label(key), tuple(windows), blocked)

    def _bucket(self, key: str | None) -> str:
        return f"{self.provider}:{_label(key)}"

    def _rotation(self) -> list[tuple[str | None, str]]:
        """Every key once, starting one further each time, so the load spreads evenly."""
        start = self._turn % len(self._keys)
        self._turn = start + 1
        return [*self._keys[start:], *self._keys[:start]]

    async def _call(self, operation: Callable[[QuotaStore], Awaitable[T]]) -> T:
        """Run ``operation`` on the shared store, or on the fallback while it is unreachable."""
        now = self._clock.time()
        if self._degraded_until is None or now >= self._degraded_until:
            try:
                result = await operation(self._store)
            except QuotaStoreUnavailable:
                if self._degraded_until is None:
                    logger.warning(
                        "%s: the shared quota store is unreachable; counting this instance's "
                        "requests locally until it is back",
                        self.provider,
                    )
                self._degraded_until = now + STORE_RETRY_AFTER
            else:
                if self._degraded_until is not None:
                    logger.info("%s: the shared quota store is back", self.provider)
                    self._degraded_until = None
                return result
        return await operation(self._fallback)

    def _exhausted(self, what: str, reset: float, now: float) -> QuotaExhausted:
        when = datetime.fromtimestamp(reset, UTC)
        shown = when.strftime("%Y-%m-%d %H:%M:%S UTC")
        scope = "every key" if len(self._keys) > 1 else "its key"
        if what == BLOCKED:
            message = f"{self.provider} refused {scope} (429) until {shown}"
        else:
            message = f"{self.provider} {what} quota exhausted on {scope}; resets at {shown}"
        return QuotaExhausted(self.provider, message, retry_after=reset - now, reset_at=when)


def _label(key: str | None) -> str:
    return ANONYMOUS if key is None else fingerprint(key)


class FallbackQuotaStore:
    """A shared store with a process-local stand-in, for every limiter of one engine.

        store = FallbackQuotaStore(RedisQuotaStore(url), clock=clock)

    While the shared store is unreachable, calls go to a MemoryQuotaStore and ONE warning is
    logged for the whole engine (not one per provider); it is tried again every
    ``STORE_RETRY_AFTER`` seconds and one info line says when it is back.
    """

    __slots__ = ("_clock", "_degraded_until", "fallback", "primary")

    def __init__(
        self, primary: QuotaStore, *, clock: Clock, fallback: QuotaStore | None = None
    ) -> None:
        self.primary = primary
        self.fallback: QuotaStore = fallback if fallback is not None else MemoryQuotaStore()
        self._clock = clock
        self._degraded_until: float | None = None

    async def _call(self, operation: Callable[[QuotaStore], Awaitable[T]]) -> T:
        now = self._clock.time()
        if self._degraded_until is None or now >= self._degraded_until:
            try:
                result = await operation(self.primary)
            except QuotaStoreUnavailable as exc:
                if self._degraded_until is None:
                    logger.warning(
                        "shared quota store unreachable; counting this instance's requests "
                        "locally until it is back: %s",
                        exc,
                    )
                self._degraded_until = now + STORE_RETRY_AFTER
            else:
                if self._degraded_until is not None:
                    logger.info("shared quota store reachable again")
                    self._degraded_until = None
                return result
        return await operation(self.fallback)

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant:
        return await self._call(lambda store: store.acquire(bucket, windows, now))

    async def block(self, bucket: str, until: float) -> None:
        await self._call(lambda store: store.block(bucket, until))

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        return await self._call(lambda store: store.usage(bucket, windows, now))

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        return await self._call(lambda store: store.blocked_until(bucket, now))

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            await self.fallback.aclose()
