"""One behaviour suite, run over every backend: what the engine may rely on from any Cache."""

from __future__ import annotations

import asyncio
import random

import pytest

from threatintel.cache import Cache, cache_key
from threatintel.cache.base import get_many
from threatintel.clock import VirtualClock


async def test_round_trip(cache: Cache, clock: VirtualClock) -> None:
    """A stored value comes back, stored at the clock's time and expiring ttl seconds later."""
    await cache.set("k", b"value", ttl=60)
    entry = await cache.get("k")
    assert entry is not None
    assert entry.value == b"value"
    assert entry.stored_at == clock.time()
    assert entry.expires_at == clock.time() + 60
    assert entry.age(clock.time()) == 0


async def test_miss(cache: Cache) -> None:
    """An unknown key is a miss, not an error."""
    assert await cache.get("never-set") is None


async def test_entry_expires_on_the_injected_clock(cache: Cache, clock: VirtualClock) -> None:
    """An entry is a hit until ttl seconds of the clock have passed, then a miss."""
    await cache.set("k", b"v", ttl=10)
    clock.advance(9.5)
    entry = await cache.get("k")
    assert entry is not None
    assert entry.age(clock.time()) == 9.5
    assert entry.ttl_left(clock.time()) == 0.5
    clock.advance(0.5)
    assert await cache.get("k") is None


async def test_overwrite_replaces_value_and_times(cache: Cache, clock: VirtualClock) -> None:
    """Setting a key again replaces its value, its stored_at and its expiry."""
    await cache.set("k", b"old", ttl=5)
    clock.advance(3)
    await cache.set("k", b"new", ttl=100)
    clock.advance(50)
    entry = await cache.get("k")
    assert entry is not None
    assert entry.value == b"new"
    assert entry.stored_at == clock.time() - 50


async def test_delete(cache: Cache) -> None:
    """A deleted key is a miss; deleting an absent key is harmless."""
    await cache.set("k", b"v", ttl=60)
    await cache.delete("k")
    assert await cache.get("k") is None
    await cache.delete("k")


async def test_large_value(cache: Cache) -> None:
    """A 1 MB value round-trips byte for byte."""
    value = random.Random(7).randbytes(1 << 20)
    await cache.set("big", value, ttl=60)
    entry = await cache.get("big")
    assert entry is not None
    assert entry.value == value


@pytest.mark.parametrize("value", [b"", bytes(range(256)) * 4, b"\x00TI\x01\xff"])
async def test_binary_values(cache: Cache, value: bytes) -> None:
    """Empty values, every byte value and NULs are stored exactly."""
    await cache.set("bin", value, ttl=60)
    entry = await cache.get("bin")
    assert entry is not None
    assert entry.value == value


async def test_unicode_and_long_url_keys(cache: Cache) -> None:
    """Keys built by cache_key from unicode and very long values are distinct and usable."""
    long_url = "https://example.com/" + "a" * 5_000
    values = ["bücher.example", "例え.テスト", long_url, long_url + "b", "sha256=short"]
    keys = [cache_key("otx", "url", value, scope="https://otx.example") for value in values]
    assert len(set(keys)) == len(keys)
    for index, key in enumerate(keys):
        await cache.set(key, str(index).encode(), ttl=60)
    for index, key in enumerate(keys):
        entry = await cache.get(key)
        assert entry is not None
        assert entry.value == str(index).encode()


async def test_concurrent_gets_and_sets(cache: Cache) -> None:
    """Two hundred concurrent sets, then gets, all land and read back their own value."""
    keys = [f"k{i}" for i in range(200)]
    await asyncio.gather(*(cache.set(key, key.encode(), ttl=60) for key in keys))
    entries = await asyncio.gather(*(cache.get(key) for key in keys))
    assert [entry.value if entry else None for entry in entries] == [k.encode() for k in keys]


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_ttl_must_be_positive_and_finite(cache: Cache, ttl: float) -> None:
    """A zero, negative or non-finite ttl is a programming error (ValueError), not a cache one."""
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl=ttl)
    assert await cache.get("k") is None


async def test_fractional_ttl(cache: Cache, clock: VirtualClock) -> None:
    """A sub-second ttl is honoured rather than rounded away."""
    await cache.set("k", b"v", ttl=0.25)
    assert await cache.get("k") is not None
    clock.advance(0.25)
    assert await cache.get("k") is None


async def test_get_many_returns_live_entries_only(cache: Cache, clock: VirtualClock) -> None:
    """get_many answers each live key with its entry and leaves out absent and expired keys."""
    await cache.set("short", b"s", ttl=5)
    await cache.set("long", b"l", ttl=60)
    clock.advance(10)
    found = await get_many(cache, ["short", "long", "never-set", "long"])
    assert set(found) == {"long"}
    assert found["long"].value == b"l"
    assert found["long"].stored_at == clock.time() - 10
    assert found["long"].expires_at == clock.time() + 50
    assert await get_many(cache, []) == {}


async def test_get_many_is_the_backends_own(cache: Cache) -> None:
    """Every backend reads many keys in one call of its own, and agrees with get key by key."""
    keys = [f"k{i}" for i in range(1200)]  # more than one SQLite query's worth of parameters
    for i, key in enumerate(keys[::2]):
        await cache.set(key, f"v{i}".encode(), ttl=60)
    many = getattr(cache, "get_many", None)
    assert many is not None
    found = await many(keys)
    assert set(found) == set(keys[::2])
    for key in keys[:50]:
        assert found.get(key) == await cache.get(key)
