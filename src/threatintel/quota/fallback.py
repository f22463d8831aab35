"""A shared quota store with a local stand-in: a lookup never fails for want of a store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from threatintel.clock import Clock
from threatintel.quota.base import Grant, QuotaStore, QuotaStoreUnavailable, Window, WindowUsage
from threatintel.quota.memory import MemoryQuotaStore

# The name every quota module logs under (it was one module before it became a package).
logger = logging.getLogger("threatintel.quota")

#: While the shared store is down, how often to try it again.
STORE_RETRY_AFTER = 30.0

T = TypeVar("T")


class FallbackQuotaStore:
    """A shared store with a local stand-in, for every limiter of one engine.

        store = FallbackQuotaStore(RedisQuotaStore(url), clock=clock,
                                   fallback=SQLiteQuotaStore(path))   # default: memory

    While ``primary`` is unreachable (``degraded``), calls go to ``fallback``; a persistent one
    keeps the budget across short CLI runs even while Redis is down. If the fallback raises
    QuotaStoreUnavailable too, a MemoryQuotaStore takes over until the primary is back, so a
    lookup never fails for want of a store. Each outage logs ONE warning for the whole engine
    (not one per provider or call), naming where requests are counted meanwhile (should the
    fallback fail later in the outage, one more warning says so); the primary is tried again
    every ``STORE_RETRY_AFTER`` seconds and one info line says when it is back.
    """

    __slots__ = ("_clock", "_degraded_until", "_last_resort", "_local", "fallback", "primary")

    def __init__(
        self, primary: QuotaStore, *, clock: Clock, fallback: QuotaStore | None = None
    ) -> None:
        self.primary = primary
        self.fallback: QuotaStore = fallback if fallback is not None else MemoryQuotaStore()
        self._clock = clock
        self._degraded_until: float | None = None
        self._last_resort = MemoryQuotaStore()
        # Where calls go while the primary is bypassed. Once the fallback has failed it is not
        # tried again until the primary is back: switching to and fro would split the counts.
        self._local: QuotaStore = self.fallback

    @property
    def degraded(self) -> bool:
        """True while the primary is bypassed: the numbers are this machine's or process's,
        not the ones every instance shares."""
        return self._degraded_until is not None

    async def _call(self, operation: Callable[[QuotaStore], Awaitable[T]]) -> T:
        now = self._clock.time()
        outage: QuotaStoreUnavailable | None = None
        if self._degraded_until is None or now >= self._degraded_until:
            try:
                result = await operation(self.primary)
            except QuotaStoreUnavailable as exc:
                if self._degraded_until is None:
                    outage = exc
                self._degraded_until = now + STORE_RETRY_AFTER
            else:
                if self._degraded_until is not None:
                    logger.info("shared quota store reachable again")
                    self._degraded_until = None
                    self._local = self.fallback
                return result
        fallback_error: QuotaStoreUnavailable | None = None
        try:
            result = await operation(self._local)
        except QuotaStoreUnavailable as exc:
            # Only the fallback raises this: the last resort is memory.
            fallback_error = exc
            self._local = self._last_resort
            result = await operation(self._last_resort)
        if outage is not None:
            where = (
                "in the fallback store"
                if fallback_error is None
                else f"in this process's memory (the fallback store failed too: {fallback_error})"
            )
            logger.warning(
                "shared quota store unreachable; counting requests %s until it is back: %s",
                where,
                outage,
            )
        elif fallback_error is not None:
            logger.warning(
                "fallback quota store unreachable too; counting this process's requests in "
                "memory until the shared store is back: %s",
                fallback_error,
            )
        return result

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant:
        async def acquire_on(store: QuotaStore) -> Grant:
            grant = await store.acquire(bucket, windows, now)
            # A refund must reach the store that counted the grant, whatever happens meanwhile.
            return replace(grant, origin=store) if grant.granted else grant

        return await self._call(acquire_on)

    async def block(self, bucket: str, until: float) -> None:
        await self._call(lambda store: store.block(bucket, until))

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        return await self._call(lambda store: store.usage(bucket, windows, now))

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        return await self._call(lambda store: store.blocked_until(bucket, now))

    async def learned_limits(self, bucket: str, now: float) -> dict[str, int]:
        return await self._call(lambda store: store.learned_limits(bucket, now))

    async def keep_limits(self, bucket: str, limits: Mapping[str, int], until: float) -> None:
        await self._call(lambda store: store.keep_limits(bucket, limits, until))

    async def refund(self, bucket: str, windows: Sequence[Window], grant: Grant) -> None:
        store = grant.origin if grant.origin is not None else self.primary
        try:
            await store.refund(bucket, windows, grant)
        except QuotaStoreUnavailable as exc:
            # The unit stays counted: one request too few later, never one too many.
            logger.debug("quota refund not recorded: %s", exc)

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            try:
                await self.fallback.aclose()
            finally:
                await self._last_resort.aclose()
