"""Fixtures for the cache tests: a virtual clock, and Redis keys that never outlive a test.

The Redis tests use the server at 127.0.0.1:6379 and are skipped when it does not answer.
Each test writes under its own random prefix and deletes everything under it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from threatintel.cache import Cache, LayeredCache, MemoryCache, RedisCache, SQLiteCache
from threatintel.clock import VirtualClock

REDIS_URL = "redis://127.0.0.1:6379/0"
#: Nothing listens on port 1, so connections are refused at once.
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1_700_000_000.0)


@pytest.fixture(scope="session")
def redis_available() -> bool:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5) as r:
            return bool(r.ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture
def redis_url(redis_available: bool) -> str:
    if not redis_available:
        pytest.skip("Redis not reachable at 127.0.0.1:6379 (start one to run the Redis tests)")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted (SCAN + DEL) after the test.

    Synchronous on purpose: async fixtures cannot be requested lazily from async fixtures.
    """
    prefix = f"threatintel-test:{uuid.uuid4().hex}:"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client to look at what the cache wrote."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_cache(
    redis_url: str, redis_prefix: str, clock: VirtualClock
) -> AsyncIterator[RedisCache]:
    """A RedisCache on the test's prefix and virtual clock."""
    async with RedisCache(redis_url, clock=clock, prefix=redis_prefix, socket_timeout=1.0) as cache:
        yield cache


BACKENDS = ["memory", "sqlite", "redis", "layered-sqlite", "layered-redis"]


@pytest.fixture(params=BACKENDS)
async def cache(
    request: pytest.FixtureRequest, clock: VirtualClock, tmp_path: Path
) -> AsyncIterator[Cache]:
    """Each backend in turn, on the test's virtual clock."""
    backend: str = request.param
    built: Cache
    if backend == "memory":
        built = MemoryCache(clock=clock)
    elif backend == "sqlite":
        built = SQLiteCache(tmp_path / "cache.sqlite3", clock=clock)
    elif backend == "layered-sqlite":
        built = LayeredCache(MemoryCache(clock=clock), SQLiteCache(tmp_path / "c.db", clock=clock))
    else:
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")
        redis_cache = RedisCache(url, clock=clock, prefix=prefix, socket_timeout=1.0)
        built = (
            redis_cache
            if backend == "redis"
            else LayeredCache(MemoryCache(clock=clock), redis_cache)
        )
    async with built:
        yield built
