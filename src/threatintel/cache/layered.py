"""A fast local cache in front of a shared one, that keeps working when the shared one fails.

    cache = LayeredCache(MemoryCache(clock=clock), RedisCache(url, clock=clock))

``get`` reads the front first, then the back, and copies a back hit into the front with its
original times (so it keeps its age and expires when the shared entry does). ``set`` and
``delete`` go to both. When the back raises ``CacheError`` the layered cache carries on with the
front alone: it logs one warning when the back goes down and one info line when it answers
again, never one line per call, and it never raises ``CacheError`` itself. Those lines name the
back, ``Redis at <masked URL>`` or ``SQLite file <path>``. While the back is down it is left
alone for ``retry_after`` seconds at a time, so a dead server does not add its connect timeout
to every lookup. Writes and deletes made meanwhile reach only the front.

Locks for request coalescing are forwarded to the back when it provides them. When it is down,
``acquire_lock`` hands out a local token instead of None: None means "another process is
fetching this", and waiting on a peer that cannot be coordinated with would only add latency.
A local token always extends (it guards nothing another process could take); a back token is
extended only when the back confirms it, so while the back is down ``extend_lock`` says False.

The operator's verbs (``stats``, ``remove``) and the lookup counts are the back's, which every
process shares: ``remove`` clears the front too and raises ``CacheError`` when the back cannot
(an operator asked and must hear it), while saving counts never raises (the back keeps them).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Final

from threatintel.cache.admin import CacheStats, as_cache_admin, as_hit_counter
from threatintel.cache.base import (
    Cache,
    CacheBase,
    CacheEntry,
    FlightLock,
    check_ttl,
    get_many,
)
from threatintel.cache.memory import MemoryCache
from threatintel.errors import CacheError

DEFAULT_LOGGER_NAME: Final = "threatintel.cache"
#: Seconds to leave a failed back alone before trying it again.
DEFAULT_RETRY_AFTER: Final = 5.0
#: Tokens handed out while no shared lock is available; Redis tokens never contain a colon.
LOCAL_TOKEN_PREFIX: Final = "local:"


class LayeredCache(CacheBase):
    """A ``MemoryCache`` in front of a shared ``Cache``; survives the shared one failing."""

    __slots__ = (
        "_counter",
        "_healthy",
        "_lock",
        "_log",
        "_retry_at",
        "back",
        "back_label",
        "front",
        "retry_after",
    )

    def __init__(
        self,
        front: MemoryCache,
        back: Cache,
        *,
        logger_name: str = DEFAULT_LOGGER_NAME,
        retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        self.front = front
        self.back = back
        #: What the log lines call the back.
        self.back_label = _label(back)
        self.retry_after = retry_after
        self._log = logging.getLogger(logger_name)
        self._lock = as_flight_lock(back)
        # Looked up once: isinstance against a runtime_checkable Protocol inspects every
        # member, and note_lookup runs on every lookup.
        self._counter = as_hit_counter(back)
        self._healthy = True
        self._retry_at = 0.0

    @property
    def back_healthy(self) -> bool:
        """False from the back's first failure until it next answers."""
        return self._healthy

    @property
    def can_lock(self) -> bool:
        """True when the back provides a cross-process ``FlightLock``."""
        return self._lock is not None

    # -- the Cache protocol ----------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        entry = await self.front.get(key)
        if entry is not None or not self._back_due():
            return entry
        try:
            entry = await self.back.get(key)
        except CacheError as exc:
            self._back_failed(exc)
            return None
        self._back_answered()
        if entry is None or entry.expired(self.front.clock.time()):
            return None
        self.front.put_entry(key, entry)
        return entry

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """``get`` for many keys: the front's entries, then one read of the back for the rest."""
        found = await self.front.get_many(keys)
        missing = [key for key in keys if key not in found]
        if not missing or not self._back_due():
            return found
        try:
            entries = await get_many(self.back, missing)
        except CacheError as exc:
            self._back_failed(exc)
            return found
        self._back_answered()
        now = self.front.clock.time()
        for key, entry in entries.items():
            if not entry.expired(now):
                self.front.put_entry(key, entry)
                found[key] = entry
        return found

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        await self.front.set(key, value, ttl=ttl)
        if not self._back_due():
            return
        try:
            await self.back.set(key, value, ttl=ttl)
        except CacheError as exc:
            self._back_failed(exc)
        else:
            self._back_answered()

    async def delete(self, key: str) -> None:
        await self.front.delete(key)
        if not self._back_due():
            return
        try:
            await self.back.delete(key)
        except CacheError as exc:
            self._back_failed(exc)
        else:
            self._back_answered()

    async def aclose(self) -> None:
        await self.front.aclose()
        try:
            await self.back.aclose()
        except CacheError as exc:
            # Nothing is left to do with a back that cannot even close; it is going away.
            self._log.debug("cache backend %s did not close cleanly: %s", self.back_label, exc)

    # -- CacheAdmin and HitCounter: the back's, which every process shares -------------------

    @property
    def label(self) -> str:
        return self.back_label

    async def stats(self) -> CacheStats:
        """The back's numbers (the front holds copies of some of its entries)."""
        admin = as_cache_admin(self.back)
        return await (admin.stats() if admin is not None else self.front.stats())

    async def remove(self, *, provider: str | None = None, older_than: float | None = None) -> int:
        """Remove from both layers; CacheError when the back cannot (an operator asked)."""
        removed = await self.front.remove(provider=provider, older_than=older_than)
        admin = as_cache_admin(self.back)
        if admin is None:
            return removed
        return await admin.remove(provider=provider, older_than=older_than)

    def note_lookup(self, provider: str, *, hit: bool) -> int:
        counter = self._counter or self.front
        return counter.note_lookup(provider, hit=hit)

    async def save_lookups(self) -> None:
        counter = self._counter
        if counter is None or not self._back_due():
            return  # kept by the back until it answers again
        try:
            await counter.save_lookups()
        except CacheError as exc:
            self._back_failed(exc)
        else:
            self._back_answered()

    # -- the FlightLock protocol -------------------------------------------------------------

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        check_ttl(ttl)
        if self._lock is None or not self._back_due():
            return self._local_token()
        try:
            token = await self._lock.acquire_lock(name, ttl)
        except CacheError as exc:
            self._back_failed(exc)
            return self._local_token()
        self._back_answered()
        return token

    async def extend_lock(self, name: str, token: str, ttl: float) -> bool:
        check_ttl(ttl)
        if token.startswith(LOCAL_TOKEN_PREFIX):
            # No other process can take what a local token holds, so it never runs out.
            return True
        if self._lock is None or not self._back_due():
            # Only the back can say whether its token still owns the lock; a holder told
            # "yes" unchecked might go on believing it alone fetches while a peer does too.
            return False
        try:
            extended = await self._lock.extend_lock(name, token, ttl)
        except CacheError as exc:
            self._back_failed(exc)
            return False
        self._back_answered()
        return extended

    async def release_lock(self, name: str, token: str) -> None:
        if self._lock is None or token.startswith(LOCAL_TOKEN_PREFIX) or not self._back_due():
            return
        try:
            await self._lock.release_lock(name, token)
        except CacheError as exc:
            # The lock's own TTL frees it.
            self._back_failed(exc)
        else:
            self._back_answered()

    # -- the back's health --------------------------------------------------------------------

    def _back_due(self) -> bool:
        """Whether to call the back now: always while healthy, else once ``retry_after`` passed."""
        return self._healthy or self.front.clock.time() >= self._retry_at

    def _back_failed(self, exc: CacheError) -> None:
        self._retry_at = self.front.clock.time() + self.retry_after
        if self._healthy:
            self._healthy = False
            self._log.warning(
                "cache backend %s unavailable; continuing with the in-memory layer: %s",
                self.back_label,
                exc,
            )

    def _back_answered(self) -> None:
        if not self._healthy:
            self._healthy = True
            self._log.info(
                "cache backend %s available again; using it behind the in-memory layer",
                self.back_label,
            )

    @staticmethod
    def _local_token() -> str:
        return LOCAL_TOKEN_PREFIX + secrets.token_urlsafe(16)


def _label(back: Cache) -> str:
    """What messages call ``back``: its ``label`` when it has one (Redis, SQLite), else its type."""
    label = getattr(back, "label", None)
    return label if isinstance(label, str) else type(back).__name__


def as_flight_lock(cache: Cache) -> FlightLock | None:
    """``cache`` as a cross-process lock, or None when it cannot provide one.

    A ``LayeredCache`` is one exactly when its back is; ``MemoryCache`` and ``SQLiteCache`` never
    are (a lock that only one process sees coalesces nothing the engine cannot do in memory).
    """
    if isinstance(cache, LayeredCache):
        return cache if cache.can_lock else None
    return cache if isinstance(cache, FlightLock) else None
