"""RedisCache against a server that answers garbage, and against stuck or oversized real keys.

Every reply no command of ours gets from a real Redis must come out as CacheError (or, for a
value that is merely not one of our entries, a miss), so the layered cache falls back to its
local layer instead of failing the lookup.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio

from fake_redis import GARBAGE, GarbageRedis, huge_bulk
from threatintel.cache import LayeredCache, MemoryCache, RedisCache
from threatintel.cache.layered import LOCAL_TOKEN_PREFIX
from threatintel.clock import VirtualClock
from threatintel.errors import CacheError

SECRET = "hunter2-garbage-secret"
#: Garbage that is still a byte string: for GETRANGE it is only "not one of our entries".
BYTES_GARBAGE = frozenset({"status", "not-utf8", "not-a-number", "infinity"})

Call = Callable[[RedisCache], Awaitable[object]]
CALLS: dict[str, Call] = {
    "get": lambda cache: cache.get("k"),
    "set": lambda cache: cache.set("k", b"value", ttl=60),
    "delete": lambda cache: cache.delete("k"),
    "acquire_lock": lambda cache: cache.acquire_lock("k", ttl=30),
    "extend_lock": lambda cache: cache.extend_lock("k", "token", ttl=30),
    "release_lock": lambda cache: cache.release_lock("k", "token"),
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
@pytest.mark.parametrize("call", sorted(CALLS))
async def test_garbage_replies_become_cache_error_or_a_miss(
    call: str, garbage: str, clock: VirtualClock
) -> None:
    """Any garbage reply raises CacheError with the password masked; a GET of stray bytes misses."""
    reply = GARBAGE[garbage]
    async with GarbageRedis(lambda _command: reply) as server:
        url = server.url.replace("redis://", f"redis://:{SECRET}@")
        async with RedisCache(url, clock=clock, socket_timeout=1.0) as cache:
            if call == "get" and garbage in BYTES_GARBAGE:
                assert await CALLS[call](cache) is None
                return
            with pytest.raises(CacheError) as caught:
                await CALLS[call](cache)
    assert SECRET not in str(caught.value)
    assert len(str(caught.value)) < 500


async def test_oversized_reply_reads_as_a_miss_without_error(clock: VirtualClock) -> None:
    """A value longer than max_entry_bytes is a corrupt entry: a miss, the server still healthy."""
    async with GarbageRedis(lambda _command: huge_bulk(64 * 1024)) as server:
        async with RedisCache(server.url, clock=clock, max_entry_bytes=4096) as cache:
            assert await cache.get("k") is None
        assert server.commands[-1] == "GETRANGE"


async def test_layered_cache_falls_back_to_memory_over_a_garbage_server(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a garbage back, the layered cache serves its memory layer, locks locally, warns once."""
    reply = GARBAGE["integer"]
    async with GarbageRedis(lambda _command: reply) as server:
        back = RedisCache(server.url, clock=clock, socket_timeout=1.0)
        async with LayeredCache(MemoryCache(clock=clock), back, retry_after=0) as cache:
            with caplog.at_level(logging.WARNING, logger="threatintel.cache"):
                await cache.set("k", b"value", ttl=60)
                entry = await cache.get("k")
                assert await cache.get("other") is None
                token = await cache.acquire_lock("k", ttl=30)
    assert entry is not None and entry.value == b"value"
    assert token is not None and token.startswith(LOCAL_TOKEN_PREFIX)
    assert not cache.back_healthy
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()


# --- a real Redis: keys someone else left behind ------------------------------------------


async def test_oversized_entry_is_neither_read_nor_written(
    redis_url: str, redis_prefix: str, raw_redis: redis.asyncio.Redis, clock: VirtualClock
) -> None:
    """A stored value over max_entry_bytes reads as a miss, and set() never writes one."""
    async with RedisCache(
        redis_url, clock=clock, prefix=redis_prefix, max_entry_bytes=1024
    ) as cache:
        await cache.set("small", b"x" * 100, ttl=60)
        assert await cache.get("small") is not None
        header = b"TI\x01" + struct.pack(">dd", clock.time(), clock.time() + 60)
        await raw_redis.set(redis_prefix + "big", header + b"x" * 5000)
        assert await cache.get("big") is None
        await cache.set("too-big", b"x" * 2000, ttl=60)
        assert await raw_redis.exists(redis_prefix + "too-big") == 0


@pytest.mark.parametrize(
    ("stored_at", "expires_at"),
    [(float("nan"), 2e9), (1.7e9, float("nan")), (1.7e9, float("inf")), (1.8e9, 1.7e9 + 60)],
)
async def test_entry_with_impossible_times_reads_as_a_miss(
    redis_cache: RedisCache,
    raw_redis: redis.asyncio.Redis,
    redis_prefix: str,
    stored_at: float,
    expires_at: float,
) -> None:
    """A header with NaN, infinite or reversed times is a corrupt entry, not an eternal hit."""
    blob = b"TI\x01" + struct.pack(">dd", stored_at, expires_at) + b"value"
    await raw_redis.set(redis_prefix + "k", blob)
    assert await redis_cache.get("k") is None


async def test_a_lock_left_without_expiry_is_taken_over_once_with_a_warning(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock key set without a TTL would be held forever: acquire takes it over, with our TTL."""
    key = redis_cache.lock_key("name")
    await raw_redis.set(key, "left-behind")
    assert await raw_redis.pttl(key) == -1
    with caplog.at_level(logging.WARNING, logger="threatintel.cache"):
        token = await redis_cache.acquire_lock("name", ttl=30)
        await raw_redis.set(redis_cache.lock_key("other"), "left-behind")
        assert await redis_cache.acquire_lock("other", ttl=30) is not None
    assert token is not None and await raw_redis.get(key) == token.encode()
    assert 0 < await raw_redis.pttl(key) <= 30_000
    assert len(caplog.records) == 1 and "took over" in caplog.records[0].getMessage()


async def test_a_lock_its_holder_stopped_renewing_is_taken_over_on_the_injected_clock(
    redis_cache: RedisCache, clock: VirtualClock
) -> None:
    """Held and renewed, a lock stays its holder's; once its time passes unrenewed, it is taken."""
    holder = await redis_cache.acquire_lock("name", ttl=30)
    assert holder is not None
    clock.advance(25)
    assert await redis_cache.extend_lock("name", holder, ttl=30)
    clock.advance(25)  # 50 s after taking it, 25 s after renewing it: still live
    assert await redis_cache.acquire_lock("name", ttl=30) is None
    clock.advance(5)  # 30 s after the last renewal: the holder is gone
    successor = await redis_cache.acquire_lock("name", ttl=30)
    assert successor is not None and successor != holder
    assert not await redis_cache.extend_lock("name", holder, ttl=30)
