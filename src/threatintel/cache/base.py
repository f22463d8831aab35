"""The cache interface every backend implements, and the key scheme.

    key = cache_key("virustotal", "ipv4", "1.2.3.4", scope=provider.cache_scope)
    async with SQLiteCache(path) as cache:
        await cache.set(key, body, ttl=86_400)
        entry = await cache.get(key)  # CacheEntry | None

Values are opaque bytes: the engine decides what it stores. Every entry carries the time it was
written and the time it expires, both read from the backend's injected ``Clock``, so a test with a
``VirtualClock`` can age entries without sleeping. A backend reports its own failures as
``CacheError`` and nothing else: sqlite3 and redis exceptions never leave the backend's module.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

from threatintel.clock import Clock, SystemClock

#: One shared instance is enough: the system clock has no state.
SYSTEM_CLOCK: Final[Clock] = SystemClock()

#: Bump the version segment whenever the meaning of keys or cached values changes, so old
#: entries are simply never read again (they age out on their own TTL). v1 keys named no
#: endpoint, so an answer from a simulator or mirror was served as the real vendor's.
KEY_PREFIX: Final = "ti:v2"
#: Values longer than this are replaced by their digest in the key (long URLs).
MAX_KEY_VALUE_LENGTH: Final = 200
#: Marks a hashed value; a literal value that starts with it is hashed too, so no short value
#: can be crafted to collide with the key of a long one.
HASHED_VALUE_MARKER: Final = "sha256="
#: Hex digits of the scope's SHA-256 in a key: 64 bits tell endpoints apart; the hostname
#: itself (perhaps an internal mirror's) never appears in a key.
SCOPE_DIGEST_LENGTH: Final = 16


def cache_key(provider: str, indicator_type: str, value: str, *, scope: str) -> str:
    """The cache key for one provider's answer about one normalised indicator.

    ``scope`` is everything besides the indicator that decides the answer: the endpoint and
    the request parameters that change it (a provider's ``cache_scope``). The scheme is
    ``ti:v2:<provider>:<scope digest>:<indicator_type>:<value>``, for example
    ``ti:v2:virustotal:3f1c0e5a9b2d4c6e:ipv4:1.2.3.4``, where the digest is the first 16 hex
    digits of the scope's SHA-256. A value longer than ``MAX_KEY_VALUE_LENGTH`` characters
    (or one that starts with ``sha256=``) is replaced by ``sha256=<64 hex digits>`` of its UTF-8
    bytes, so keys stay short and bounded whatever URL comes in. ``value`` must already be
    normalised: the key is exact, it does not fold case or refang.
    """
    if len(value) > MAX_KEY_VALUE_LENGTH or value.startswith(HASHED_VALUE_MARKER):
        value = HASHED_VALUE_MARKER + hashlib.sha256(value.encode("utf-8")).hexdigest()
    return f"{KEY_PREFIX}:{provider}:{_scope_digest(scope)}:{indicator_type}:{value}"


@functools.lru_cache(maxsize=64)
def _scope_digest(scope: str) -> str:
    # A process has one scope per provider: hashing it afresh for every key was nearly half of
    # the key's cost, paid on every source of every indicator of a warm run.
    return hashlib.sha256(scope.encode("utf-8")).hexdigest()[:SCOPE_DIGEST_LENGTH]


def check_ttl(ttl: float) -> float:
    """Return ``ttl`` if it is a usable lifetime in seconds, else raise ValueError."""
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
    return float(ttl)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached value with the times it was written and expires (epoch seconds)."""

    value: bytes
    stored_at: float
    expires_at: float

    def age(self, now: float) -> float:
        """Seconds since the entry was written (never negative, even across clock skew)."""
        return max(0.0, now - self.stored_at)

    def ttl_left(self, now: float) -> float:
        """Seconds until the entry expires (zero or less once it has)."""
        return self.expires_at - now

    def expired(self, now: float) -> bool:
        """True once ``now`` has reached the expiry time."""
        return self.expires_at <= now


class Cache(Protocol):
    """A key → bytes store with per-entry TTL; use it with ``async with`` or call ``aclose``."""

    async def get(self, key: str) -> CacheEntry | None:
        """The live entry for ``key``, or None when it is absent or expired."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (> 0), replacing any entry."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and files; closing twice is harmless."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


async def get_many(cache: Cache, keys: Sequence[str]) -> dict[str, CacheEntry]:
    """The live entries among ``keys`` (absent and expired ones left out), keyed by key.

    One round trip where the backend offers a ``get_many`` of its own (SQLite: one query;
    Redis: one pipeline; the layered cache: its front, then one read of the back for the
    rest), else one ``get`` per key. Raises ``CacheError`` like ``get``.
    """
    # getattr, not a runtime_checkable Protocol: isinstance against one costs more than the
    # read it would save.
    many = getattr(cache, "get_many", None)
    if many is not None:
        found: dict[str, CacheEntry] = await many(keys)
        return found
    found = {}
    for key in keys:
        entry = await cache.get(key)
        if entry is not None:
            found[key] = entry
    return found


@runtime_checkable
class FlightLock(Protocol):
    """A short cross-process lock for request coalescing (only Redis provides one).

    A holder whose work may outlast ``ttl`` calls ``extend_lock`` before it runs out; False
    means the lock is lost and a peer may be doing the same work.
    """

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        """A token when the lock was taken, None if someone else holds it."""
        ...

    async def extend_lock(self, name: str, token: str, ttl: float) -> bool:
        """Reset the lock to expire ``ttl`` seconds from now if ``token`` still owns it.

        True when it did; False when the lock expired, was taken by someone else, or its
        owner could not be confirmed.
        """
        ...

    async def release_lock(self, name: str, token: str) -> None:
        """Release the lock only if ``token`` still owns it (it may have expired meanwhile)."""
        ...


class CacheBase:
    """Gives a backend ``async with`` support on top of its ``aclose``."""

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
