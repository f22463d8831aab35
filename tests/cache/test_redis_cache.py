"""RedisCache specifics: the stored format, the flight lock, and failures as masked CacheErrors."""

from __future__ import annotations

import time
import traceback

import pytest
import redis.asyncio

from threatintel.cache import RedisCache, as_flight_lock, cache_key
from threatintel.clock import VirtualClock
from threatintel.errors import CacheError

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


async def test_entry_is_one_prefixed_key_with_a_header_and_px_ttl(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis, clock: VirtualClock
) -> None:
    """An entry is stored under prefix+key as header+value, with a millisecond TTL set in Redis."""
    await redis_cache.set("ti:v1:otx:ipv4:1.2.3.4", b"body", ttl=90)
    name = redis_cache.prefix + "ti:v1:otx:ipv4:1.2.3.4"
    raw = await raw_redis.get(name)
    assert isinstance(raw, bytes)
    assert raw.startswith(b"TI\x01")
    assert raw.endswith(b"body")
    assert len(raw) == 3 + 16 + 4
    assert 0 < await raw_redis.pttl(name) <= 90_000


async def test_a_value_without_our_header_reads_as_a_miss(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis
) -> None:
    """A key someone else wrote under the prefix is a miss, not a crash or garbage."""
    await raw_redis.set(redis_cache.prefix + "foreign", b"plain text")
    assert await redis_cache.get("foreign") is None


async def test_a_redis_error_reply_becomes_cache_error(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis
) -> None:
    """An error reply (here WRONGTYPE on a hash) surfaces as CacheError."""
    await raw_redis.hset(redis_cache.prefix + "hash", "field", "value")
    with pytest.raises(CacheError, match="WRONGTYPE"):
        await redis_cache.get("hash")


async def test_second_acquire_of_a_held_lock_returns_none(redis_cache: RedisCache) -> None:
    """While one holder has the lock, another acquire gets None."""
    assert as_flight_lock(redis_cache) is redis_cache
    token = await redis_cache.acquire_lock("vt:ipv4:1.2.3.4", ttl=30)
    assert token
    assert await redis_cache.acquire_lock("vt:ipv4:1.2.3.4", ttl=30) is None
    assert await redis_cache.acquire_lock("vt:ipv4:5.6.7.8", ttl=30) is not None


async def test_release_needs_the_holders_token(redis_cache: RedisCache) -> None:
    """A wrong token leaves the lock held; the right token frees it for the next caller."""
    token = await redis_cache.acquire_lock("name", ttl=30)
    assert token is not None
    await redis_cache.release_lock("name", "not-the-token")
    assert await redis_cache.acquire_lock("name", ttl=30) is None
    await redis_cache.release_lock("name", token)
    assert await redis_cache.acquire_lock("name", ttl=30) is not None


async def test_lock_carries_its_ttl(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis
) -> None:
    """The lock key expires on its own within ttl, so a crashed holder cannot block forever."""
    await redis_cache.acquire_lock("name", ttl=0.5)
    assert 0 < await raw_redis.pttl(redis_cache.lock_key("name")) <= 500


async def test_owner_extends_its_lock(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis
) -> None:
    """The holder's token resets the lock's expiry to the new ttl: its PTTL grows back."""
    token = await redis_cache.acquire_lock("name", ttl=30)
    assert token is not None
    # Stands in for a slow leader whose lock has nearly run out, without waiting for it.
    await raw_redis.pexpire(redis_cache.lock_key("name"), 5_000)
    assert await redis_cache.extend_lock("name", token, ttl=60)
    assert 59_000 < await raw_redis.pttl(redis_cache.lock_key("name")) <= 60_000
    assert await raw_redis.get(redis_cache.lock_key("name")) == token.encode()


async def test_non_owner_cannot_extend_a_lock(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis
) -> None:
    """A token that does not own the lock leaves its expiry alone and gets False."""
    token = await redis_cache.acquire_lock("name", ttl=30)
    assert token is not None
    assert not await redis_cache.extend_lock("name", "not-the-token", ttl=60)
    assert 0 < await raw_redis.pttl(redis_cache.lock_key("name")) <= 30_000


async def test_expired_or_missing_lock_cannot_be_extended(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis
) -> None:
    """Once the lock is gone its old token gets False, and extending never recreates the key."""
    assert not await redis_cache.extend_lock("never-taken", "token", ttl=30)
    token = await redis_cache.acquire_lock("name", ttl=30)
    assert token is not None
    # What expiry does to the key, without waiting for it.
    await raw_redis.delete(redis_cache.lock_key("name"))
    assert not await redis_cache.extend_lock("name", token, ttl=30)
    assert await raw_redis.exists(redis_cache.lock_key("name")) == 0
    successor = await redis_cache.acquire_lock("name", ttl=30)
    assert successor is not None
    assert not await redis_cache.extend_lock("name", token, ttl=30)


async def test_unreachable_server_raises_cache_error_quickly(clock: VirtualClock) -> None:
    """A closed port gives CacheError within a fraction of a second, for every operation."""
    async with RedisCache(CLOSED_PORT_URL, clock=clock, socket_timeout=0.5) as cache:
        started = time.monotonic()
        with pytest.raises(CacheError, match="unreachable"):
            await cache.get("k")
        with pytest.raises(CacheError):
            await cache.set("k", b"v", ttl=60)
        with pytest.raises(CacheError):
            await cache.delete("k")
        with pytest.raises(CacheError):
            await cache.acquire_lock("k", ttl=5)
        with pytest.raises(CacheError):
            await cache.release_lock("k", "token")
        with pytest.raises(CacheError):
            await cache.extend_lock("k", "token", ttl=5)
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@127.0.0.1:1/0",
        "redis://admin:hunter2@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=hunter2",
        "redis://:hunter%32@127.0.0.1:1/0",
    ],
)
async def test_password_never_appears_in_errors(url: str, clock: VirtualClock) -> None:
    """A URL's password is masked in the error, its cause chain and the cache's repr."""
    async with RedisCache(url, clock=clock, socket_timeout=0.5) as cache:
        with pytest.raises(CacheError) as caught:
            await cache.get("k")
    shown = "".join(traceback.format_exception(caught.value)) + repr(cache) + cache.where
    assert "hunter2" not in shown
    assert "hunter%32" not in shown
    assert "127.0.0.1:1" in str(caught.value)


def test_unsupported_url_scheme_is_rejected_with_the_password_masked() -> None:
    """A URL that is not redis://, rediss:// or unix:// fails at construction, masked."""
    with pytest.raises(ValueError, match="scheme") as caught:
        RedisCache("http://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in str(caught.value)


async def test_closed_cache_raises_cache_error(redis_cache: RedisCache) -> None:
    """Using a cache after aclose is a CacheError; closing twice is harmless."""
    await redis_cache.set("k", b"v", ttl=60)
    await redis_cache.aclose()
    await redis_cache.aclose()
    with pytest.raises(CacheError, match="closed"):
        await redis_cache.get("k")


async def test_indicator_values_cannot_reach_other_keys(
    redis_cache: RedisCache, raw_redis: redis.asyncio.Redis
) -> None:
    """Values with glob, hash-tag, CRLF and separator characters are stored under exactly their
    own key: each reads back its own answer, and nothing else is created or overwritten."""
    hostile = [
        "http://evil.com/*",
        "http://evil.com/?",
        "http://evil.com/[a-z]",
        "http://evil.com/{victim}",
        "http://evil.com/\r\nFLUSHALL\r\n",
        "http://evil.com/a:ipv4:1.2.3.4",
        "http://evil.com/ SET x y",
    ]
    victim = cache_key("otx", "ipv4", "1.2.3.4", scope="https://otx")
    await redis_cache.set(victim, b"victim", ttl=60)
    keys = [cache_key("otx", "url", value, scope="https://otx") for value in hostile]
    for index, key in enumerate(keys):
        await redis_cache.set(key, b"answer %d" % index, ttl=60)
    for index, key in enumerate(keys):
        entry = await redis_cache.get(key)
        assert entry is not None and entry.value == b"answer %d" % index
    victim_entry = await redis_cache.get(victim)
    assert victim_entry is not None and victim_entry.value == b"victim"
    stored = [k async for k in raw_redis.scan_iter(match=redis_cache.prefix + "*", count=1000)]
    assert len(stored) == len(hostile) + 1
