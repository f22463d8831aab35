"""Cache backends behind one small interface, and the factory the engine uses.

cache = open_cache(backend="sqlite", cache_dir=dirs.cache, redis_url=None, clock=clock)

The memory layer in front of SQLite or Redis holds at most ``FRONT_MAX_BYTES`` of values.

backend   what you get
memory    MemoryCache: this process only, gone on exit
sqlite    LayeredCache(MemoryCache, SQLiteCache(<cache_dir>/threatintel.sqlite3)): survives
          restarts, shared by processes on one machine, at most ``sqlite_max_bytes`` of values
redis     LayeredCache(MemoryCache, RedisCache(redis_url)): shared by every replica, with a
          cross-process lock for coalescing (see ``as_flight_lock``)

Every backend is also a ``CacheAdmin`` (stats, remove) and a ``HitCounter`` (lookup counts kept
across processes): see ``threatintel.cache.admin``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from threatintel._lazy import lazy_exports

if TYPE_CHECKING:
    from threatintel.cache.admin import (
        CacheAdmin,
        CacheStats,
        HitCounter,
        ProviderCacheStats,
        as_cache_admin,
        as_hit_counter,
    )
    from threatintel.cache.base import Cache, CacheEntry, FlightLock, cache_key
    from threatintel.cache.layered import LayeredCache, as_flight_lock
    from threatintel.cache.memory import MemoryCache
    from threatintel.cache.redis import RedisCache
    from threatintel.cache.sqlite import SQLiteCache
    from threatintel.clock import Clock

# Each name loads its module on first use (PEP 562), and open_cache imports only the backend it
# builds: a run with the memory or SQLite cache loads no Redis code (issue 9, start-up).
# Hidden from type checkers, which read the imports above and so still flag a misspelt name.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        globals(),
        {
            **dict.fromkeys(
                [
                    "CacheAdmin",
                    "CacheStats",
                    "HitCounter",
                    "ProviderCacheStats",
                    "as_cache_admin",
                    "as_hit_counter",
                ],
                "admin",
            ),
            **dict.fromkeys(["Cache", "CacheEntry", "FlightLock", "cache_key"], "base"),
            **dict.fromkeys(["LayeredCache", "as_flight_lock"], "layered"),
            "MemoryCache": "memory",
            "RedisCache": "redis",
            "SQLiteCache": "sqlite",
        },
    )

__all__ = [
    "Cache",
    "CacheAdmin",
    "CacheEntry",
    "CacheStats",
    "FlightLock",
    "HitCounter",
    "LayeredCache",
    "MemoryCache",
    "ProviderCacheStats",
    "RedisCache",
    "SQLiteCache",
    "as_cache_admin",
    "as_flight_lock",
    "as_hit_counter",
    "cache_key",
    "open_cache",
]

BACKENDS: Final = ("memory", "sqlite", "redis")
SQLITE_FILENAME: Final = "threatintel.sqlite3"
#: Bytes of values the memory layer in front of SQLite or Redis holds (about 2,000 answers,
#: their vendor bodies compressed). It only saves a read of the back, so it is kept small:
#: 10,000 answers held there were a fifth of a 10,000-indicator run's peak memory.
FRONT_MAX_BYTES: Final = 4 * 1024 * 1024


def open_cache(
    *,
    backend: str,
    cache_dir: str | Path,
    redis_url: str | None,
    clock: Clock,
    memory_entries: int = 10_000,
    sqlite_max_bytes: int | None = None,
    redis_connections: int | None = None,
) -> Cache:
    """Build the cache a setting names; nothing is opened or connected until first use.

    ``sqlite_max_bytes`` bounds the values the SQLite file holds (None: ``SQLiteCache``'s
    ``DEFAULT_MAX_BYTES``); ``redis_connections`` the Redis connection pool (None: at least
    ``RedisCache``'s default).
    """
    from threatintel.cache.memory import MemoryCache

    name = backend.strip().lower()
    if name == "memory":
        return MemoryCache(memory_entries, clock=clock)
    if name == "sqlite":
        from threatintel.cache.sqlite import DEFAULT_MAX_BYTES, SQLiteCache

        back: Cache = SQLiteCache(
            Path(cache_dir) / SQLITE_FILENAME,
            clock=clock,
            max_bytes=DEFAULT_MAX_BYTES if sqlite_max_bytes is None else sqlite_max_bytes,
        )
    elif name == "redis":
        if not redis_url:
            raise ValueError("the redis cache backend needs a Redis URL")
        from threatintel.cache.redis import DEFAULT_MAX_CONNECTIONS, RedisCache

        pool = max(DEFAULT_MAX_CONNECTIONS, redis_connections or 0)
        back = RedisCache(redis_url, clock=clock, max_connections=pool)
    else:
        raise ValueError(f"unknown cache backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    from threatintel.cache.layered import LayeredCache

    front = MemoryCache(memory_entries, clock=clock, max_bytes=FRONT_MAX_BYTES)
    return LayeredCache(front, back)
