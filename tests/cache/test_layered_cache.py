"""LayeredCache: a local front over a shared back that may fail, warning once, never raising."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis.asyncio

from threatintel.cache import LayeredCache, MemoryCache, RedisCache, SQLiteCache, as_flight_lock
from threatintel.cache.base import CacheBase, CacheEntry
from threatintel.clock import VirtualClock
from threatintel.errors import CacheError

LOGGER = "threatintel.cache"
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
DOWN = "unavailable; continuing with the in-memory layer"
UP = "available again"


class FlakyBack(CacheBase):
    """A shared cache stand-in that fails its next ``failures`` calls, then works."""

    def __init__(self, clock: VirtualClock, failures: int = 0) -> None:
        self.store = MemoryCache(clock=clock)
        self.failures = failures
        self.calls = 0
        self.closed = False

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise CacheError("shared cache at test://back is unreachable")

    async def get(self, key: str) -> CacheEntry | None:
        self._maybe_fail()
        return await self.store.get(key)

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        self._maybe_fail()
        await self.store.set(key, value, ttl=ttl)

    async def delete(self, key: str) -> None:
        self._maybe_fail()
        await self.store.delete(key)

    async def aclose(self) -> None:
        self.closed = True


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def test_works_from_the_front_when_redis_is_down(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis on a closed port, sets and gets are served locally and one warning is logged."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    back = RedisCache(CLOSED_PORT_URL, clock=clock, socket_timeout=0.5)
    async with LayeredCache(MemoryCache(clock=clock), back, retry_after=0) as cache:
        for i in range(20):
            await cache.set(f"k{i}", b"v", ttl=60)
            entry = await cache.get(f"k{i}")
            assert entry is not None
            assert await cache.get(f"missing{i}") is None
            await cache.delete(f"k{i}")
        assert not cache.back_healthy
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"cache backend Redis at redis://127.0.0.1:1/0 {DOWN}: "
        "Redis at redis://127.0.0.1:1/0 is unreachable"
    )


async def test_one_warning_then_one_info_when_the_back_recovers(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A back failing several calls in a row logs one warning, then one info line on recovery."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    back = FlakyBack(clock, failures=5)
    cache = LayeredCache(MemoryCache(clock=clock), back, retry_after=0)
    for i in range(10):
        await cache.set(f"k{i}", b"v", ttl=60)
    assert back.failures == 0
    assert cache.back_healthy
    assert messages(caplog, logging.WARNING) == [
        f"cache backend FlakyBack {DOWN}: shared cache at test://back is unreachable"
    ]
    assert len(messages(caplog, logging.INFO)) == 1
    assert messages(caplog, logging.INFO)[0].startswith(f"cache backend FlakyBack {UP}")


async def test_the_warning_names_a_sqlite_back_by_its_file(
    tmp_path: Path, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A SQLite back that cannot be created is named as a SQLite file, not a shared cache."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should be")
    path = blocker / "cache.sqlite3"
    async with LayeredCache(MemoryCache(clock=clock), SQLiteCache(path, clock=clock)) as cache:
        await cache.set("k", b"v", ttl=60)
        assert await cache.get("k") is not None
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"cache backend SQLite file {path} {DOWN}: SQLite cache {path}")
    assert "shared" not in warnings[0]


async def test_failed_back_is_left_alone_for_retry_after(clock: VirtualClock) -> None:
    """After a failure the back is not called again until retry_after seconds have passed."""
    back = FlakyBack(clock, failures=1)
    cache = LayeredCache(MemoryCache(clock=clock), back, retry_after=5)
    await cache.set("a", b"v", ttl=60)
    assert back.calls == 1
    for _ in range(10):
        await cache.get("other")
        await cache.set("b", b"v", ttl=60)
    assert back.calls == 1
    clock.advance(5)
    await cache.set("c", b"v", ttl=60)
    assert back.calls == 2
    assert cache.back_healthy


async def test_back_hit_fills_the_front_with_the_remaining_ttl(clock: VirtualClock) -> None:
    """A hit from the back is copied to the front with its own times and expires with it."""
    back = FlakyBack(clock)
    front = MemoryCache(clock=clock)
    cache = LayeredCache(front, back)
    await back.set("k", b"shared", ttl=100)
    clock.advance(30)
    entry = await cache.get("k")
    assert entry is not None
    assert entry.ttl_left(clock.time()) == 70
    assert await front.get("k") == entry
    back.failures = 1000  # the front alone must now answer, until the entry expires
    assert await cache.get("k") == entry
    clock.advance(70)
    assert await front.get("k") is None


async def test_get_many_reads_the_back_once_for_the_front_misses(clock: VirtualClock) -> None:
    """get_many answers front hits itself, reads the back only for the rest and fills the front."""
    back = FlakyBack(clock)
    front = MemoryCache(clock=clock)
    cache = LayeredCache(front, back)
    await front.set("front", b"f", ttl=100)
    await back.set("back", b"b", ttl=100)
    clock.advance(30)
    calls = back.calls
    found = await cache.get_many(["front", "back", "nowhere"])
    assert {k: e.value for k, e in found.items()} == {"front": b"f", "back": b"b"}
    # FlakyBack has no get_many of its own: one get per key the front did not have.
    assert back.calls == calls + 2
    copied = await front.get("back")
    assert copied is not None and copied.ttl_left(clock.time()) == 70


async def test_get_many_with_the_back_down_answers_from_the_front(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """When the back fails, get_many returns the front's entries, logs one warning, never raises."""
    back = FlakyBack(clock, failures=1000)
    cache = LayeredCache(MemoryCache(clock=clock), back, logger_name=LOGGER)
    await cache.front.set("front", b"f", ttl=100)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first = await cache.get_many(["front", "back"])
        second = await cache.get_many(["front", "back"])
    assert set(first) == set(second) == {"front"}
    assert not cache.back_healthy
    assert len(messages(caplog, logging.WARNING)) == 1


async def test_set_and_delete_reach_both_layers(clock: VirtualClock) -> None:
    """Writes land in front and back; a delete removes the key from both."""
    back = FlakyBack(clock)
    front = MemoryCache(clock=clock)
    cache = LayeredCache(front, back)
    await cache.set("k", b"v", ttl=60)
    assert await front.get("k") is not None
    assert await back.get("k") is not None
    await cache.delete("k")
    assert await front.get("k") is None
    assert await back.get("k") is None


async def test_aclose_closes_both_layers(clock: VirtualClock) -> None:
    """Leaving the context closes the front and the back."""
    back = FlakyBack(clock)
    async with LayeredCache(MemoryCache(clock=clock), back) as cache:
        await cache.set("k", b"v", ttl=60)
    assert back.closed


async def test_logger_name_is_configurable(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning goes to the logger the caller named."""
    caplog.set_level(logging.INFO, logger="custom.cache")
    cache = LayeredCache(
        MemoryCache(clock=clock), FlakyBack(clock, failures=1), logger_name="custom.cache"
    )
    await cache.get("k")
    assert [r.name for r in caplog.records] == ["custom.cache"]


async def test_locks_are_forwarded_to_a_working_redis(
    clock: VirtualClock, redis_url: str, redis_prefix: str
) -> None:
    """Behind a LayeredCache the Redis lock still excludes a second holder and can be released."""
    back = RedisCache(redis_url, clock=clock, prefix=redis_prefix)
    async with LayeredCache(MemoryCache(clock=clock), back) as cache:
        lock = as_flight_lock(cache)
        assert lock is cache
        token = await cache.acquire_lock("name", ttl=30)
        assert token is not None
        assert await back.acquire_lock("name", ttl=30) is None
        await cache.release_lock("name", token)
        assert await back.acquire_lock("name", ttl=30) is not None


async def test_lock_fails_open_when_redis_is_down(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the back down each caller gets a local token: nobody waits on a peer it cannot see."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    back = RedisCache(CLOSED_PORT_URL, clock=clock, socket_timeout=0.5)
    async with LayeredCache(MemoryCache(clock=clock), back, retry_after=0) as cache:
        first = await cache.acquire_lock("name", ttl=30)
        second = await cache.acquire_lock("name", ttl=30)
        assert first is not None
        assert second is not None
        assert first != second
        await cache.release_lock("name", first)
        assert not cache.back_healthy
    assert len(messages(caplog, logging.WARNING)) == 1


async def test_bad_ttl_is_still_a_value_error(clock: VirtualClock) -> None:
    """Programming errors are not swallowed with the back's failures."""
    cache = LayeredCache(MemoryCache(clock=clock), FlakyBack(clock))
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        await cache.acquire_lock("k", ttl=-1)
    with pytest.raises(ValueError, match="ttl"):
        await cache.extend_lock("k", "local:token", ttl=0)


async def test_extend_lock_is_forwarded_to_a_working_redis(
    clock: VirtualClock, redis_url: str, redis_prefix: str, raw_redis: redis.asyncio.Redis
) -> None:
    """The holder's token extends the Redis lock through the LayeredCache; another token cannot."""
    back = RedisCache(redis_url, clock=clock, prefix=redis_prefix)
    async with LayeredCache(MemoryCache(clock=clock), back) as cache:
        token = await cache.acquire_lock("name", ttl=30)
        assert token is not None
        await raw_redis.pexpire(back.lock_key("name"), 5_000)
        assert await cache.extend_lock("name", token, ttl=30)
        assert await raw_redis.pttl(back.lock_key("name")) > 29_000
        assert not await cache.extend_lock("name", "not-the-token", ttl=30)
        await cache.release_lock("name", token)
        assert not await cache.extend_lock("name", token, ttl=30)


async def test_local_tokens_always_extend(tmp_path: Path, clock: VirtualClock) -> None:
    """A local token, handed out when no shared lock exists, extends without asking anyone."""
    sqlite_cache = SQLiteCache(tmp_path / "c.db", clock=clock)
    async with LayeredCache(MemoryCache(clock=clock), sqlite_cache) as cache:
        token = await cache.acquire_lock("name", ttl=30)
        assert token is not None
        assert token.startswith("local:")
        assert await cache.extend_lock("name", token, ttl=30)
        assert not await cache.extend_lock("name", "a-token-it-never-gave", ttl=30)


async def test_extend_lock_with_redis_down(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the back down a local token still extends; a back token cannot be confirmed: False."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    back = RedisCache(CLOSED_PORT_URL, clock=clock, socket_timeout=0.5)
    async with LayeredCache(MemoryCache(clock=clock), back, retry_after=0) as cache:
        local = await cache.acquire_lock("name", ttl=30)
        assert local is not None
        assert local.startswith("local:")
        assert await cache.extend_lock("name", local, ttl=30)
        assert not await cache.extend_lock("name", "a-redis-token", ttl=30)
        assert not cache.back_healthy
    assert len(messages(caplog, logging.WARNING)) == 1
