"""Vendor quotas, spent exactly once: per provider, per API key, every window at once.

    limiter = RateLimiter(
        "virustotal",
        keys=["k1", "k2"],
        windows=[Window.per_minute(4), Window.per_day(500), Window.per_month(15_500)],
        store=MemoryQuotaStore(),        # or RedisQuotaStore(url): one budget for every instance
        clock=SystemClock(),
        margin=1.0,                      # sliding windows 1 s longer: requests land late
    )
    key = await limiter.acquire()        # waits for minute/hour slots; a spent day/month raises
    ...                                  # call the vendor with `key`
    await limiter.record_success(key)    # it answered (anything but a 429)
    await limiter.penalize(key, retry_after=30.0, long_window=False)   # a 429 arrived anyway
    await limiter.refund(key)            # the request never left the machine (DNS, refused)

A lookup about to wait noticeably (``notice_after`` seconds or more) emits one ``QuotaWait``
event to ``on_wait`` per wait episode: from the first such wait until no acquire of this limiter
is waiting any more, however many lookups queue up meanwhile. The limiter knows nothing of who
listens (a CLI line, a log, a metric).

A grant counts in every window of the key or in none (the store decides atomically), so the
vendor never sees a request we could have predicted it would refuse. Short windows (sliding:
any ``seconds`` span holds at most ``limit`` grants) are waited out; a spent long window (fixed:
day from 00:00 UTC, month from the 1st) fails fast with QuotaExhausted and its reset time, unless
``wait_for_reset``. A 429 that does not say which window ran out blocks its key for one short
window; a second one in a row (no answer in between) means a long window is spent, e.g. by
another tool on the same key. Keys appear only as ``fingerprint(key)``: in store keys, logs,
errors, reprs.

Limits are learned, not guessed: ``learned(key, {"day": 3000})`` sets a key's limits from what
the vendor stated (a header on an answer), and ``learn`` (the vendor's account endpoint, asked
once per key, the first time a grant on that key is refused) does the same on demand. A window
the user set explicitly (``pinned``) keeps its limit: configured beats learned beats default,
and ``usage()`` says which one each window's limit is (``WindowUsage.source``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from threatintel._redaction import fingerprint
from threatintel.clock import Clock
from threatintel.errors import QuotaExhausted, RateLimited
from threatintel.quota.base import (
    ANONYMOUS,
    BLOCKED,
    CONFIGURED,
    DEFAULT,
    LEARNED,
    MAX_BLOCK,
    MINUTE,
    Grant,
    KeyUsage,
    QuotaStore,
    Window,
)
from threatintel.quota.fallback import FallbackQuotaStore

# The name every quota module logs under (it was one module before it became a package).
logger = logging.getLogger("threatintel.quota")

#: A block ending within this many seconds (or the longest short window, if longer) is waited
#: out like a full short window; a longer one is treated as a spent long window and fails fast.
MAX_BLOCK_WAIT = 300.0
#: How long a 429 without Retry-After blocks a key when the limiter has no short window.
DEFAULT_PENALTY = MINUTE
#: Floor for a computed wait, so a rounding slip can never spin the acquire loop.
MIN_WAIT = 0.001
#: Store operations one limiter runs at once. Lookups no longer queue for an engine-wide worker
#: before they ask for quota, so a thousand lookups waiting for one provider's next minute all
#: ask together when it comes; beyond this many they queue here for milliseconds instead of
#: opening as many Redis connections (and timing out on them).
STORE_CONCURRENCY = 8
#: After a 429's block ends, one request probes the key; the others wait this long between
#: looks until it is answered (or PROBE_HOLD has passed without a word from it).
PROBE_POLL = 1.0
PROBE_HOLD = 60.0
#: A wait at least this long is worth telling a person about; shorter ones are routine pacing.
NOTICE_AFTER = 2.0


@dataclass(frozen=True, slots=True)
class QuotaWait:
    """A lookup waits ``seconds`` for quota: the first noticeable wait of an episode.

    ``window`` is the full window ("minute", "day"...) with its ``limit`` and the variable that
    sets it (``setting_name``, None if unknown), or ``BLOCKED`` (limit None) when the vendor
    refused the key with a 429 and the limiter waits for that block to end.
    """

    provider: str
    key_fingerprint: str
    seconds: float
    window: str
    limit: int | None
    setting_name: str | None


#: Subscribers to QuotaWait events (the CLI prints a line; logs and metrics may follow).
QuotaWaitHook = Callable[[QuotaWait], None]
#: Asks the vendor for a key's limits per window name (``{"minute": 1000}``), or None.
LimitsProbe = Callable[[str], Awaitable[Mapping[str, int] | None]]
#: A learned limit above this is taken as this: VT documents allowances of 60 billion an hour
#: (meaning "no practical limit"), and a hostile answer must not put absurd numbers in stores.
MAX_LEARNED_LIMIT = 10**12
#: How long learned limits are kept in the store: a plan changes rarely, and the vendor restates
#: them (AbuseIPDB on every answer, VirusTotal when a key is first held back in a process).
LEARNED_TTL = 86_400.0


@dataclass(frozen=True, slots=True)
class _Taken:
    """The latest grant a task took from a limiter, kept for ``RateLimiter.refund``."""

    limiter: RateLimiter
    bucket: str
    grant: Grant


# Per asyncio task (each lookup runs in its own): which grant a refund gives back. The slot is
# told apart from the grants other lookups took on the same key at about the same time without
# changing what acquire() returns.
_TAKEN: ContextVar[_Taken | None] = ContextVar("threatintel_quota_taken", default=None)


@dataclass(frozen=True, slots=True)
class _Strike:
    """A 429 that named no window: its short block lasts to ``blocked_until``, and it counts
    towards escalation until ``expires`` (the earliest long window's reset at that time)."""

    blocked_until: float
    expires: float


class RateLimiter:
    """One per provider: hands out a key with budget left, waiting for short windows.

        limiter = RateLimiter("virustotal", keys=["k1", "k2"],
                              windows=[Window.per_minute(4), Window.per_day(500)],
                              store=MemoryQuotaStore(), clock=SystemClock())
        key = await limiter.acquire()    # QuotaExhausted when every key's long window is spent
        await limiter.record_success(key)                                 # after any other answer
        await limiter.penalize(key, retry_after=None, long_window=True)   # after a 429
        await limiter.refund(key)        # the request never reached the vendor

    Keys are tried round-robin, each limited on its own. A ``None`` key is the anonymous bucket.
    ``wait_for_reset`` sleeps until a spent long window resets instead of raising;
    ``max_wait`` bounds the total wait of one acquire (RateLimited, or QuotaExhausted for a
    long window, beyond it). ``margin`` lengthens every sliding window by that many seconds
    (fixed day and month windows keep their boundaries): a grant is timed when it is handed
    out, but the vendor counts the request when it arrives, so a slow connect followed by a fast
    one can land both inside the vendor's window. Set it to about REQUEST_TIMEOUT's typical
    connect time; the engine uses 1 s. When ``store`` is unreachable the limiter logs one
    warning and uses ``fallback`` (a process-local MemoryQuotaStore by default) until the store
    answers again: a lookup never fails because the shared store is down.
    """

    __slots__ = (
        "_acquiring",
        "_announced",
        "_ask_limits",
        "_block_horizon",
        "_clock",
        "_counted",
        "_dirty",
        "_kept",
        "_keys",
        "_learned",
        "_loaded",
        "_on_wait",
        "_pinned",
        "_probes",
        "_probing",
        "_setting_names",
        "_store",
        "_store_ops",
        "_strikes",
        "_turn",
        "margin",
        "max_wait",
        "notice_after",
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
        margin: float = 0.0,
        on_wait: QuotaWaitHook | None = None,
        setting_names: Mapping[str, str] | None = None,
        notice_after: float = NOTICE_AFTER,
        pinned: Collection[str] = (),
        learn: LimitsProbe | None = None,
    ) -> None:
        if not keys:
            raise ValueError(f"{provider}: at least one key is needed (None for anonymous use)")
        names = [window.name for window in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"{provider}: window names must be unique, got {names}")
        if max_wait is not None and max_wait < 0:
            raise ValueError("max_wait must not be negative")
        if not 0 <= margin < math.inf:
            raise ValueError("margin must be a finite number of seconds, not negative")
        self.provider = provider
        self.windows = tuple(windows)
        self.margin = margin
        # What the store counts in: the same windows under the same names (so usage() still
        # reports "minute"), the sliding ones lengthened by the margin.
        self._counted = tuple(
            replace(window, seconds=window.seconds + margin) if window.sliding else window
            for window in self.windows
        )
        self.wait_for_reset = wait_for_reset
        self.max_wait = max_wait
        # The same key twice would only share one bucket; keep the first occurrence.
        unique = dict.fromkeys(keys)
        self._keys = tuple((key, self._bucket(key)) for key in unique)
        # One fallback mechanism for limiters and engines alike: FallbackQuotaStore. An engine
        # hands every limiter the same one, so an outage is logged once, not once per provider.
        self._store: QuotaStore = (
            store
            if isinstance(store, FallbackQuotaStore)
            else FallbackQuotaStore(store, clock=clock, fallback=fallback)
        )
        self._clock = clock
        self._turn = 0
        # Per bucket, the last 429 that did not say which window ran out. Kept in this process,
        # not in the store: a second process sharing the store only makes one probe request of
        # its own (one more 429) before it escalates too, and the first process's long block,
        # which is in the store, stops every process anyway.
        self._strikes: dict[str, _Strike] = {}
        # Per struck bucket whose block is over: until when its one probe request may be out.
        self._probing: dict[str, float] = {}
        self._store_ops = asyncio.Semaphore(STORE_CONCURRENCY)
        short = [window.seconds for window in self._counted if window.sliding]
        self._block_horizon = max([MAX_BLOCK_WAIT, *short])
        self._on_wait = on_wait
        self._setting_names = dict(setting_names or {})
        self.notice_after = notice_after
        # A wait episode lasts while acquires are in progress (the waiting ones stay in); it
        # is announced once.
        self._acquiring = 0
        self._announced = False
        # Limits learned per bucket (window name → limit), and the probes asked per bucket.
        self._pinned = frozenset(pinned)
        self._learned: dict[str, dict[str, int]] = {}
        self._ask_limits = learn
        self._probes: dict[str, asyncio.Task[bool]] = {}
        self._loaded: set[str] = set()  # buckets whose kept limits were read from the store
        self._dirty: set[str] = set()  # buckets with limits to write to the store
        self._kept: set[str] = set()  # buckets written at least once by this process

    def __repr__(self) -> str:
        labels = [_label(key) for key, _ in self._keys]
        windows = ", ".join(f"{w.limit}/{w.name}" for w in self.windows)
        return f"RateLimiter({self.provider!r}, keys={labels}, windows=[{windows}])"

    async def acquire(self) -> str | None:
        """A key with budget in every window, counted; waits for short windows to free up."""
        self._acquiring += 1
        try:
            return await self._acquire()
        finally:
            self._acquiring -= 1
            if self._acquiring == 0:
                self._announced = False  # any wait episode is over: the next one is news

    async def _acquire(self) -> str | None:
        deadline = None if self.max_wait is None else self._clock.time() + self.max_wait
        asked: set[str] = set()  # buckets whose limits this acquire has asked the vendor for
        while True:
            # Per key that must wait: (seconds, BLOCKED or None if short windows are full, key)
            waits: list[tuple[float, str | None, str | None]] = []
            resets: list[tuple[float, str, str | None]] = []
            for key, bucket in self._rotation():
                now = self._clock.time()
                probe = self._probe_due(bucket, now)
                if probe is not None and probe > now:
                    # A probe after a 429 is out on this key: its answer says whether more may go.
                    waits.append((min(probe - now, PROBE_POLL), None, key))
                    continue
                grant = await self._acquire_on(bucket, now)
                if grant.granted:
                    if probe is not None:
                        self._probing[bucket] = now + PROBE_HOLD
                    _TAKEN.set(_Taken(self, bucket, grant))
                    return key
                reset = grant.reset_at if grant.reset_at is not None else now + grant.wait
                if grant.exhausted is None or (
                    grant.exhausted == BLOCKED and reset - now <= self._block_horizon
                ):
                    waits.append((grant.wait, grant.exhausted, key))
                else:
                    resets.append((reset, grant.exhausted, key))
            if await self._learn_limits(asked):
                continue  # the vendor's own limits may have room: ask the store again
            now = self._clock.time()
            if waits:
                wait, what, key = min(waits, key=lambda item: item[0])
                wait = max(wait, MIN_WAIT)
                if deadline is not None and now + wait > deadline:
                    raise RateLimited(
                        self.provider,
                        f"{self.provider} rate limit: the next slot is {wait:.1f}s away, "
                        f"beyond the {self.max_wait:g}s this lookup may wait",
                        retry_after=wait,
                    )
            else:
                reset, exhausted, key = min(resets, key=lambda item: item[:2])
                if not self.wait_for_reset or (deadline is not None and reset > deadline):
                    raise self._exhausted(exhausted, reset, now)
                wait, what = max(reset - now, MIN_WAIT), exhausted
            if wait >= self.notice_after and not self._announced:
                self._announced = True
                if self._on_wait is not None:
                    self._on_wait(await self._wait_event(key, wait, what))
            await self._clock.sleep(wait)

    async def penalize(
        self, key: str | None, *, retry_after: float | None, long_window: bool
    ) -> None:
        """Honour a 429 that arrived anyway: no grant on ``key`` until it should be over.

        ``retry_after`` wins when the vendor sent one, exactly, and is never escalated. Else a
        long-window 429 blocks until the earliest long window resets (the next 00:00 UTC
        without one). A 429 that names no window (VirusTotal's) blocks for the shortest short
        window, unless it is a second strike: an earlier one's block has ended, no
        ``record_success`` came since, and no long window has reset since. Waiting a minute did
        not help, so a long window is spent (another tool may share the key) and the key is
        blocked as for a long-window 429; the next ``acquire`` fails fast with the reset time
        instead of collecting a 429 every minute. 429s arriving while the block lasts are
        requests that were already in flight: they extend the strike, they do not escalate it.
        """
        now = self._clock.time()
        bucket = self._bucket(key)
        self._probing.pop(bucket, None)
        if retry_after is not None:
            # The vendor said when; what it says nothing about is which window, so strikes
            # are left as they are.
            # Bounded again here: a RateLimited may come from anywhere, not only the seam.
            wait = retry_after if math.isfinite(retry_after) else MAX_BLOCK
            until = now + min(MAX_BLOCK, max(0.0, wait))
            reason = "a 429 with Retry-After"
        elif long_window or self._second_strike(bucket, now):
            until = self._long_reset(now)
            reason = "a 429" if long_window else "a second 429 in a row (a long window is spent)"
            # The block now outlasts any strike; after it, a 429 is news again.
            self._strikes.pop(bucket, None)
        else:
            # The vendor's own window, without the margin: that covers our requests' travel
            # time, and the vendor's block started before this 429 reached us anyway.
            short = [window.seconds for window in self.windows if window.sliding]
            until = now + (min(short) if short else DEFAULT_PENALTY)
            reason = "a 429"
            self._strikes[bucket] = _Strike(until, self._long_reset(now))
        logger.info(
            "%s %s: blocked for %.0fs after %s", self.provider, _label(key), until - now, reason
        )
        await self._store.block(bucket, until)
        await self._keep()

    async def record_success(self, key: str | None) -> None:
        """Note that the vendor answered on ``key`` with anything but a 429: its strikes end.

        Limits an answer stated (``learned``) are written to the store here, once per change
        and once per process; otherwise it touches only this process's memory.
        """
        self._strikes.pop(self._bucket(key), None)
        self._probing.pop(self._bucket(key), None)
        await self._keep()

    async def refund(self, key: str | None) -> bool:
        """Give back the slot this task's latest ``acquire`` took on ``key``, because the
        request provably never reached the vendor (the name did not resolve, the connection
        was refused): charge what the vendor could have counted, not what was never sent.

        It is uncounted in every window that still holds it (a fixed window that has reset
        since holds it no longer). True when a slot was given back; False when this task holds
        none on ``key`` (already refunded, or taken by another task). Never refund a request
        that may have been sent: a timeout waiting for the answer, a reset, a 5xx all count.
        """
        taken = _TAKEN.get()
        if taken is None or taken.limiter is not self or taken.bucket != self._bucket(key):
            return False
        _TAKEN.set(None)
        self._probing.pop(taken.bucket, None)  # a probe that never went out: the next one may
        await self._store.refund(taken.bucket, self._counted_for(taken.bucket), taken.grant)
        return True

    async def usage(self) -> list[KeyUsage]:
        """The budget left per key, keys shown as fingerprints."""
        return [await self._key_usage(key, bucket) for key, bucket in self._keys]

    def learned(self, key: str | None, limits: Mapping[str, int]) -> bool:
        """Take the limits the vendor stated for ``key`` (window name → limit): each window it
        names that the user did not set explicitly gets that limit from now on, for this key
        only. Unknown names and unbelievable values are ignored. True if a limit changed.

        Kept in the store (for LEARNED_TTL) by the next ``record_success``, ``penalize`` or
        probe: on change, and once per process to refresh them."""
        bucket = self._bucket(key)
        changed = self._apply(bucket, limits)
        if changed or (bucket in self._learned and bucket not in self._kept):
            self._dirty.add(bucket)
        if changed:
            shown = ", ".join(f"{w.limit}/{w.name}" for w in self._windows_for(bucket))
            logger.info(
                "%s %s: limits learned from the vendor: %s", self.provider, _label(key), shown
            )
        return changed

    def _apply(self, bucket: str, limits: Mapping[str, int]) -> bool:
        names = {window.name for window in self.windows} - self._pinned
        stated = {
            name: min(limit, MAX_LEARNED_LIMIT)
            for name, limit in limits.items()
            if name in names and _believable(limit)
        }
        if not stated:
            return False
        before = self._windows_for(bucket)
        self._learned[bucket] = {**self._learned.get(bucket, {}), **stated}
        return self._windows_for(bucket) != before

    async def _load(self, bucket: str) -> None:
        """Once per bucket and process: the limits an earlier process learned and kept."""
        if bucket in self._loaded:
            return
        self._loaded.add(bucket)
        self._apply(bucket, await self._store.learned_limits(bucket, self._clock.time()))

    async def _keep(self) -> None:
        """Write the limits learned since the last write, so the next process starts there."""
        while self._dirty:
            bucket = self._dirty.pop()
            self._kept.add(bucket)
            until = self._clock.time() + LEARNED_TTL
            await self._store.keep_limits(bucket, self._learned.get(bucket, {}), until)

    async def learn(self) -> None:
        """Ask the vendor now for the limits of every key whose limits are not known yet (not
        kept in the store, not stated this run): once per key, as ``acquire`` would."""
        for _, bucket in self._keys:
            await self._load(bucket)
        await self._learn_limits(set())

    async def _learn_limits(self, asked: set[str]) -> bool:
        """Ask the vendor, once per key and process, for the limits of every key not yet asked
        by this acquire; True if any limit changed (waiters share the one request per key)."""
        if self._ask_limits is None or {w.name for w in self.windows} <= self._pinned:
            return False  # nothing to ask for, or nothing the answer could change
        changed = False
        for key, bucket in self._keys:
            if key is None or bucket in asked or bucket in self._learned:
                continue  # anonymous, asked already, or known (kept, stated or asked)
            asked.add(bucket)
            probe = self._probes.get(bucket)
            if probe is None:
                probe = asyncio.ensure_future(self._ask(key))
                self._probes[bucket] = probe
                changed |= await asyncio.shield(probe)
            elif not probe.done():
                changed |= await asyncio.shield(probe)
        return changed

    async def _ask(self, key: str) -> bool:
        assert self._ask_limits is not None
        try:
            limits = await self._ask_limits(key)
        except Exception as exc:  # a probe is a bonus: defaults stay, the lookup goes on
            logger.debug(
                "%s %s: limits unknown (%s)", self.provider, _label(key), type(exc).__name__
            )
            return False
        changed = bool(limits) and self.learned(key, limits or {})
        await self._keep()
        return changed

    def _windows_for(self, bucket: str) -> tuple[Window, ...]:
        """A bucket's windows: the limiter's, with the limits learned for that key."""
        learned = self._learned.get(bucket)
        if not learned:
            return self.windows
        return tuple(replace(w, limit=learned.get(w.name, w.limit)) for w in self.windows)

    def _counted_for(self, bucket: str) -> tuple[Window, ...]:
        """What the store counts a bucket in: its windows, the sliding ones lengthened by the
        margin (see ``_counted``)."""
        if not self._learned.get(bucket):
            return self._counted
        return tuple(
            replace(window, seconds=window.seconds + self.margin) if window.sliding else window
            for window in self._windows_for(bucket)
        )

    def _source(self, bucket: str, window: str) -> str:
        if window in self._pinned:
            return CONFIGURED
        return LEARNED if window in self._learned.get(bucket, {}) else DEFAULT

    async def _acquire_on(self, bucket: str, now: float) -> Grant:
        await self._load(bucket)
        async with self._store_ops:
            return await self._store.acquire(bucket, self._counted_for(bucket), now)

    def _probe_due(self, bucket: str, now: float) -> float | None:
        """For a key struck by a 429 whose block is over: until when the probe request now out
        holds the others back (``now`` or earlier: none is out, this one probes). Else None."""
        strike = self._strikes.get(bucket)
        if strike is None or now < strike.blocked_until:
            return None
        return self._probing.get(bucket, now)

    async def _key_usage(self, key: str | None, bucket: str) -> KeyUsage:
        await self._load(bucket)
        now = self._clock.time()
        windows = await self._store.usage(bucket, self._counted_for(bucket), now)
        blocked = await self._store.blocked_until(bucket, now)
        sourced = tuple(replace(u, source=self._source(bucket, u.window)) for u in windows)
        return KeyUsage(_label(key), sourced, blocked)

    def _bucket(self, key: str | None) -> str:
        return f"{self.provider}:{_label(key)}"

    async def _wait_event(self, key: str | None, seconds: float, what: str | None) -> QuotaWait:
        """Describe a wait: which window is full (``what`` names it unless only short ones are)."""
        window: Window | None = None
        bucket = self._bucket(key)
        windows = self._windows_for(bucket)  # the limits as learned for this key
        if what is None:
            sliding = [w for w in windows if w.sliding]
            if len(sliding) > 1:  # which of them is full is the store's to say
                now = self._clock.time()
                usage = await self._store.usage(bucket, self._counted_for(bucket), now)
                full = {u.window for u in usage if u.remaining == 0}
                sliding = [w for w in sliding if w.name in full] or sliding
            window = max(sliding, key=lambda w: w.seconds, default=None)
        elif what != BLOCKED:
            window = next((w for w in windows if w.name == what), None)
        return QuotaWait(
            provider=self.provider,
            key_fingerprint=_label(key),
            seconds=seconds,
            window=window.name if window is not None else BLOCKED,
            limit=window.limit if window is not None else None,
            setting_name=self._setting_names.get(window.name) if window is not None else None,
        )

    def _long_reset(self, now: float) -> float:
        """When the earliest long window resets: the next 00:00 UTC if there is none."""
        resets = [window.reset_at(now) for window in self.windows if window.long]
        return min(resets) if resets else Window.per_day(1).reset_at(now)

    def _second_strike(self, bucket: str, now: float) -> bool:
        """Whether a 429 now follows an unanswered one whose block is over, in the same long
        window (a strike from before a daily reset says nothing about today's quota)."""
        strike = self._strikes.get(bucket)
        return strike is not None and strike.blocked_until <= now < strike.expires

    def _rotation(self) -> list[tuple[str | None, str]]:
        """Every key once, starting one further each time, so the load spreads evenly."""
        start = self._turn % len(self._keys)
        self._turn = start + 1
        return [*self._keys[start:], *self._keys[:start]]

    def _exhausted(self, what: str, reset: float, now: float) -> QuotaExhausted:
        when = datetime.fromtimestamp(reset, UTC)
        shown = when.strftime("%Y-%m-%d %H:%M:%S UTC")
        scope = "every key" if len(self._keys) > 1 else "its key"
        if what == BLOCKED:
            message = f"{self.provider} refused {scope} (429) until {shown}"
        else:
            message = f"{self.provider} {what} quota exhausted on {scope}; resets at {shown}"
        return QuotaExhausted(self.provider, message, retry_after=reset - now, reset_at=when)


def _believable(limit: object) -> bool:
    """A whole number of requests, at least one (larger than MAX_LEARNED_LIMIT is clamped)."""
    return isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1


def _label(key: str | None) -> str:
    return ANONYMOUS if key is None else fingerprint(key)
