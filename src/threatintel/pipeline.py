"""The road every upstream lookup travels, one pipeline per provider:

    cache ─hit─▶ answer (cached=True, cache_age)
      │miss
    in-process single flight ─follower─▶ the leader's answer
      │leader
    cross-instance lock (Redis) ─held elsewhere─▶ wait for the peer's cached answer
      │                             (at most peer_wait seconds, then ask anyway)
    attempts: breaker ▶ rate limiter (waits for short windows) ▶ in-flight slot ▶ provider
              ▶ retry policy
      │
    cache the answer ("ok" for its TTL, "not found" for the negative TTL, failures never),
    keyed by the provider's endpoint and parameters, the vendor's body kept beside it

Providers know nothing of this; the engine owns one SourcePipeline per provider and asks it
``await pipeline.lookup(indicator)``. Failures come back as a SourceResult with a status.

Concurrency is bounded per provider and only around the HTTP call: a lookup takes one of the
provider's ``max_inflight`` slots after the limiter has granted it a quota slot and gives it
back when the call returns. A cache hit, a follower of another caller's flight and a lookup
waiting for quota hold nothing, so VirusTotal's free tier (4 a minute) never delays OTX.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from dataclasses import dataclass, field

from threatintel._redaction import fingerprint
from threatintel.cache import (
    Cache,
    CacheEntry,
    FlightLock,
    HitCounter,
    as_flight_lock,
    as_hit_counter,
    cache_key,
)
from threatintel.cache.admin import count_lookup
from threatintel.cache.answers import decode_answer, encode_answer
from threatintel.clock import Clock
from threatintel.errors import (
    CacheError,
    ProviderError,
    ProviderTimeout,
    QuotaExhausted,
    RateLimited,
)
from threatintel.lookups import CallHook, UpstreamCall
from threatintel.models import Indicator, SourceResult, SourceStatus
from threatintel.providers.base import Provider
from threatintel.quota import ANONYMOUS, RateLimiter
from threatintel.resilience import CircuitBreaker, RetryPolicy

logger = logging.getLogger("threatintel.pipeline")
#: The API_CALL lines' own logger: the CLI silences it unless LOG_LEVEL is set (logs.py).
api_logger = logging.getLogger("threatintel.api")

#: How often an instance waiting for a peer's answer looks in the shared cache (doubling).
PEER_POLL_INTERVAL = 0.25
PEER_POLL_MAX = 2.0
#: The longest a lookup believes a lock service that says a peer holds the lock.
DEFAULT_PEER_WAIT = 600.0
#: HTTP calls in flight to one provider at once (the engine passes MAX_WORKERS).
DEFAULT_MAX_INFLIGHT = 10

#: A cache read made ahead of a lookup: the key, and the answer cached under it (``answer``
#: decoded the live entry) or None, a miss.
CacheRead = tuple[str, SourceResult | None]


@dataclass(slots=True)
class _Flight:
    """One upstream lookup in progress and how many callers wait for it."""

    task: asyncio.Task[SourceResult]
    callers: int = 0


@dataclass(slots=True)
class SourceStats:
    """Counters per provider (they feed `threatintel quota` now and /metrics later)."""

    cache_hits: int = 0
    cache_misses: int = 0
    coalesced: int = 0
    peer_waits: int = 0
    peer_timeouts: int = 0  # waits for a peer's lock that ran out: we asked anyway
    upstream_calls: int = 0
    retries: int = 0
    throttled: int = 0  # 429s that still arrived
    statuses: dict[str, int] = field(default_factory=dict)

    def count(self, status: SourceStatus) -> None:
        self.statuses[status.value] = self.statuses.get(status.value, 0) + 1


def failure_result(provider: str, exc: ProviderError) -> SourceResult:
    """A ProviderError as data: its status, its safe message, and when to come back."""
    return SourceResult(
        source=provider,
        status=exc.status,
        message=exc.message,
        retry_after=exc.retry_after,
        reset_at=exc.reset_at if isinstance(exc, RateLimited) else None,
    )


class SourcePipeline:
    """Cache-through, coalesced, rate-limited, retried, circuit-broken calls to one provider."""

    def __init__(
        self,
        provider: Provider,
        *,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        clock: Clock,
        cache: Cache | None = None,
        include_raw: bool = False,
        ttl: float = 86_400,
        negative_ttl: float = 3_600,
        lookup_timeout: float = 60.0,
        lock_ttl: float = 30.0,
        peer_wait: float | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        on_call: CallHook | None = None,
    ) -> None:
        """``peer_wait`` bounds the wait for a peer that holds the lock; then the lookup asks
        upstream itself. The lock service already hands over a lock whose holder stopped
        renewing it or that has no expiry (RedisCache does), so a live holder, however long
        it waits for quota, keeps its peers waiting and spends the call once. The bound is for
        a service that says "held" forever: long, because a peer still waiting for quota
        after it costs one duplicate call. ``on_call`` hears of every request sent upstream."""
        self.provider = provider
        self.name = provider.name
        self.limiter = limiter
        self.breaker = breaker
        self.retry = retry
        self.clock = clock
        self.cache = cache if ttl > 0 else None
        self.include_raw = include_raw
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.lookup_timeout = lookup_timeout
        self.lock_ttl = lock_ttl
        self.peer_wait = DEFAULT_PEER_WAIT if peer_wait is None else peer_wait
        self.stats = SourceStats()
        self.on_call = on_call
        self._labels: dict[str, str] = {}
        self._peer_wait_reported = False
        self._flights: dict[str, _Flight] = {}
        self._inflight = asyncio.Semaphore(max(1, max_inflight))
        self._lock: FlightLock | None = as_flight_lock(cache) if cache is not None else None
        #: Hits and misses kept by the store across processes, for `threatintel cache stats`.
        self._counter: HitCounter | None = as_hit_counter(self.cache)

    def cache_key(self, indicator: Indicator) -> str:
        """Where this provider's answer about ``indicator`` is cached (endpoint included)."""
        return cache_key(
            self.name, indicator.type.value, indicator.value, scope=self.provider.cache_scope
        )

    async def lookup(self, indicator: Indicator, *, read: CacheRead | None = None) -> SourceResult:
        """This provider's answer about ``indicator``.

        ``read`` is the cache read for this lookup, ``(key, cached answer or None)``, when the
        caller already made it (the engine reads all of an indicator's sources in one go and
        decodes them with ``answer``); None: read the cache here.
        """
        if read is None:
            key = self.cache_key(indicator)
            cached = await self._from_cache(key)
        else:
            key, cached = read
        if self._counter is not None:
            count_lookup(self._counter, self.name, hit=cached is not None)
        if cached is not None:
            self.stats.cache_hits += 1
            if api_logger.isEnabledFor(logging.DEBUG):
                # DEBUG, not INFO: a warm run of 10,000 indicators would log 40,000 of these.
                api_logger.debug(
                    "API_CALL provider=%s key=- status=%s cache=hit age=%.0fs",
                    self.name,
                    cached.status.value,
                    cached.cache_age or 0.0,
                    extra={
                        "event": "API_CALL",
                        "provider": self.name,
                        "status": cached.status.value,
                        "cache": "hit",
                    },
                )
            return cached
        self.stats.cache_misses += 1
        flight = self._flights.get(key)
        if flight is None:
            # The upstream work runs as its own task, so one caller giving up (a cancelled
            # HTTP request, a closed MCP session) does not cancel it for the others.
            task = asyncio.create_task(self._shared_fetch(key, indicator))
            flight = self._flights[key] = _Flight(task)
            task.add_done_callback(functools.partial(self._forget, key, flight))
        else:
            # Someone in this process is already asking: share their answer, spend nothing.
            self.stats.coalesced += 1
        flight.callers += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            flight.callers -= 1
            if flight.callers == 0:
                flight.task.cancel()
            raise

    def _forget(self, key: str, flight: _Flight, _task: object = None) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def _shared_fetch(self, key: str, indicator: Indicator) -> SourceResult:
        result = await self._locked_fetch(key, indicator)
        self.stats.count(result.status)
        if not self.include_raw and result.raw is not None:
            # Providers always hand over the body so the cache can answer --raw later.
            result = result.model_copy(update={"raw": None})
        return result

    async def _locked_fetch(self, key: str, indicator: Indicator) -> SourceResult:
        """Across instances: whoever holds the lock asks; the others wait for its answer."""
        lock = self._lock
        token: str | None = None
        if lock is not None:
            try:
                token = await lock.acquire_lock(key, self.lock_ttl)
            except CacheError as exc:
                self._lock_failed(exc)
                lock = None
            else:
                if token is None:
                    self.stats.peer_waits += 1
                    waited = await self._wait_for_peer(key, lock)
                    if isinstance(waited, SourceResult):
                        return waited
                    # The peer finished without a cacheable answer (our turn), or the wait ran
                    # out (None: ask without the lock).
                    token = waited
        if lock is None or token is None:
            # No lock service, or a lock that outlived any live peer: ask without it.
            result = await self._fetch(indicator)
            await self._store(key, result)
            return result
        try:
            # A peer may have finished between our cache miss and our taking the lock.
            cached = await self._from_cache(key)
            if cached is not None:
                return cached
            keepalive = asyncio.create_task(
                self._keep_lock(lock, key, token), context=contextvars.Context()
            )
            try:
                result = await self._fetch(indicator)
            finally:
                keepalive.cancel()
            await self._store(key, result)
            return result
        finally:
            try:
                await lock.release_lock(key, token)
            except CacheError as exc:  # a bare backend; its TTL frees the lock
                logger.debug("%s: lock release failed: %s", self.name, exc)

    def _lock_failed(self, exc: CacheError) -> None:
        # Only a bare backend raises (the layered cache hands out a local token instead): it
        # failed or answered oddly, and waiting on it could last forever.
        logger.debug("%s: lock unavailable, asking without it: %s", self.name, exc)

    async def _keep_lock(self, lock: FlightLock, key: str, token: str) -> None:
        """Renew the lock while the lookup lasts, however long the rate limiter makes it wait,
        so peers keep waiting for our answer instead of spending quota on the same call."""
        while True:
            await self.clock.sleep(self.lock_ttl / 3)
            # False (or CacheError) after a Redis blip: keep trying, the lookup holds the work.
            with contextlib.suppress(CacheError):
                await lock.extend_lock(key, token, self.lock_ttl)

    async def _wait_for_peer(self, key: str, lock: FlightLock) -> SourceResult | str | None:
        """Wait while a peer holds the lock: its cached answer, or the lock once it is free;
        None once ``peer_wait`` has passed (or the lock service failed): ask without it."""
        delay = PEER_POLL_INTERVAL
        deadline = self.clock.time() + self.peer_wait
        with self.clock.participant():
            while (left := deadline - self.clock.time()) > 0:
                await self.clock.sleep(min(delay, left))
                delay = min(delay * 2, PEER_POLL_MAX)
                cached = await self._from_cache(key)
                if cached is not None:
                    return cached
                try:
                    token = await lock.acquire_lock(key, self.lock_ttl)
                except CacheError as exc:
                    self._lock_failed(exc)
                    return None
                if token is not None:
                    return token
        self.stats.peer_timeouts += 1
        # Once per pipeline: a stuck lock would otherwise warn on every lookup it touches.
        log = logger.debug if self._peer_wait_reported else logger.warning
        self._peer_wait_reported = True
        log(
            "%s: a peer held the shared lookup lock for over %g s; asking upstream anyway "
            "(does the shared cache answer oddly?)",
            self.name,
            self.peer_wait,
        )
        return None

    async def _fetch(self, indicator: Indicator) -> SourceResult:
        """Attempts with retries inside the lookup deadline (time waiting for quota excluded)."""
        with self.clock.participant():
            spent = 0.0
            attempt = 0
            while True:
                api_key: str | None = None
                granted = called = reported = False
                took = 0.0
                try:
                    async with self.breaker:
                        api_key = await self.limiter.acquire()
                        granted = True
                        # Only now an in-flight slot: waiting for quota holds none.
                        async with self._inflight:
                            # The waits may have outlasted the provider's health.
                            self.breaker.check()
                            remaining = self.lookup_timeout - spent
                            called = True
                            self.stats.upstream_calls += 1
                            started = self.clock.time()
                            wall = time.perf_counter()
                            try:
                                # On the engine's clock, like `spent`: a virtual budget must
                                # not become a real timer that fires at an arbitrary moment.
                                async with self.clock.timeout(remaining):
                                    result = await self.provider.lookup(indicator, api_key)
                            except TimeoutError:
                                raise ProviderTimeout(
                                    self.name, f"{self.provider.title}: lookup deadline reached"
                                ) from None
                            finally:
                                spent += self.clock.time() - started
                                took = time.perf_counter() - wall
                    reported = True
                    self._called(api_key, result.status, took, attempt)
                    await self.limiter.record_success(api_key)
                    return result
                except ProviderError as exc:
                    if granted and not (called and exc.sent):
                        # Never left the machine (the circuit opened while we waited for the
                        # slot, DNS failed, the connection was refused): nothing was counted.
                        await self.limiter.refund(api_key)
                    wait = await self._after_failure(exc, api_key, attempt, upstream=called)
                    final = wait is None or spent + wait > self.lookup_timeout
                    if called:
                        reported = True
                        self._called(api_key, exc.status, took, attempt, exc=exc, final=final)
                    if wait is None or final:
                        return failure_result(self.name, exc)
                    self.stats.retries += 1
                    attempt += 1
                    if wait > 0:
                        await self.clock.sleep(wait)
                        spent += wait
                except Exception:
                    # A bug parsing the answer: the call still gets its line (and the
                    # engine logs the bug at ERROR).
                    if called and not reported:
                        self._called(api_key, SourceStatus.ERROR, took, attempt)
                    raise

    def _called(
        self,
        api_key: str | None,
        status: SourceStatus,
        seconds: float,
        attempt: int,
        *,
        exc: ProviderError | None = None,
        final: bool = True,
    ) -> None:
        """One upstream call done: its API_CALL log line and its UpstreamCall event.

        The line is INFO for an answer, WARNING for a failure that is retried or a 429 (an
        operating condition, found by `grep "rate limit"`), ERROR for any other failure that
        ends the lookup (`grep ERROR`)."""
        key = self._key_label(api_key)
        http_status = exc.status_code if exc is not None else None
        if exc is None:
            level = logging.INFO
        elif isinstance(exc, RateLimited) or not final:
            level = logging.WARNING
        else:
            level = logging.ERROR
        if api_logger.isEnabledFor(level):
            note = ""
            if isinstance(exc, RateLimited):
                note = " rate limit (429)" if http_status == 429 else " rate limit"
            if not final:
                note += " retrying"
            api_logger.log(
                level,
                "API_CALL provider=%s key=%s status=%s%s latency=%.3fs cache=miss attempt=%d%s",
                self.name,
                key,
                status.value,
                f" http={http_status}" if http_status is not None else "",
                seconds,
                attempt + 1,
                note,
                extra={
                    "event": "API_CALL",
                    "provider": self.name,
                    "key": key,
                    "status": status.value,
                    "http_status": http_status,
                    "latency": round(seconds, 6),
                    "cache": "miss",
                    "attempt": attempt + 1,
                },
            )
        if self.on_call is not None:
            self.on_call(UpstreamCall(self.name, key, status, seconds, http_status, final))

    def _key_label(self, api_key: str | None) -> str:
        """The key's fingerprint (computed once per key), never the key."""
        if api_key is None:
            return ANONYMOUS
        label = self._labels.get(api_key)
        if label is None:
            label = self._labels[api_key] = fingerprint(api_key)
        return label

    async def _after_failure(
        self, exc: ProviderError, api_key: str | None, attempt: int, *, upstream: bool
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        throttled = upstream and isinstance(exc, RateLimited)
        if throttled and isinstance(exc, RateLimited):
            # A 429 arrived although the limiter allowed the call (another tool used the
            # key): correct the limiter's view of this key, then let it schedule the retry.
            self.stats.throttled += 1
            await self.limiter.penalize(
                api_key,
                retry_after=exc.retry_after,
                long_window=isinstance(exc, QuotaExhausted),
            )
        wait = self.retry.wait(exc, attempt)
        if wait is not None and throttled:
            return 0.0  # the limiter's block makes the next acquire wait exactly long enough
        return wait

    async def _from_cache(self, key: str) -> SourceResult | None:
        if self.cache is None:
            return None
        try:
            entry = await self.cache.get(key)
        except CacheError as exc:  # a bare backend; the layered cache never raises
            logger.debug("%s: cache read failed: %s", self.name, exc)
            return None
        if entry is None:
            return None
        return self.answer(entry)

    def answer(self, entry: CacheEntry) -> SourceResult | None:
        """A cached answer as this lookup's result, or None (a miss) if it is unreadable."""
        age = round(entry.age(self.clock.time()), 3)
        try:
            return decode_answer(entry.value, with_raw=self.include_raw, age=age)
        except ValueError:
            logger.warning("%s: ignoring an unreadable cache entry", self.name)
            return None

    async def _store(self, key: str, result: SourceResult) -> None:
        if self.cache is None:
            return
        if result.status is SourceStatus.OK:
            ttl = self.ttl
        elif result.status is SourceStatus.NOT_FOUND:
            ttl = self.negative_ttl
        else:
            return  # failures are never cached: the next lookup must ask again
        if ttl > 0:
            try:
                await self.cache.set(key, encode_answer(result), ttl=ttl)
            except CacheError as exc:
                logger.debug("%s: cache write failed: %s", self.name, exc)
