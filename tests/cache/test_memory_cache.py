"""MemoryCache specifics: the LRU bound and the sweep of expired entries."""

from __future__ import annotations

import pytest

from threatintel.cache import MemoryCache
from threatintel.cache.base import CacheEntry
from threatintel.clock import VirtualClock


async def test_least_recently_used_entry_is_evicted_when_full(clock: VirtualClock) -> None:
    """A full cache makes room by dropping the entry read or written longest ago."""
    cache = MemoryCache(3, clock=clock)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), ttl=60)
    await cache.get("a")
    await cache.set("d", b"d", ttl=60)
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(key) is not None for key in ("a", "c", "d")] == [True] * 3


async def test_overwriting_a_key_in_a_full_cache_evicts_nothing(clock: VirtualClock) -> None:
    """Replacing an existing key does not count as a new entry."""
    cache = MemoryCache(2, clock=clock)
    await cache.set("a", b"1", ttl=60)
    await cache.set("b", b"1", ttl=60)
    await cache.set("a", b"2", ttl=60)
    assert await cache.get("b") is not None


async def test_full_cache_drops_expired_entries_before_live_ones(clock: VirtualClock) -> None:
    """When full, expired entries are swept out first, so a live but older entry survives."""
    cache = MemoryCache(3, clock=clock)
    await cache.set("live", b"", ttl=1_000)
    await cache.set("short1", b"", ttl=1)
    await cache.set("short2", b"", ttl=1)
    clock.advance(5)
    await cache.set("new", b"", ttl=60)
    assert len(cache) == 2
    assert await cache.get("live") is not None


async def test_periodic_sweep_bounds_memory_held_by_expired_entries(clock: VirtualClock) -> None:
    """Every sweep_every sets, expired entries nobody reads again are dropped."""
    cache = MemoryCache(1_000, clock=clock, sweep_every=10)
    for i in range(9):
        await cache.set(f"old{i}", b"", ttl=1)
    clock.advance(2)
    assert len(cache) == 9
    await cache.set("trigger", b"", ttl=60)
    assert len(cache) == 1


async def test_expired_entry_is_dropped_when_read(clock: VirtualClock) -> None:
    """Reading an expired entry removes it."""
    cache = MemoryCache(clock=clock)
    await cache.set("k", b"", ttl=1)
    clock.advance(1)
    assert await cache.get("k") is None
    assert len(cache) == 0


async def test_put_entry_keeps_the_entry_times(clock: VirtualClock) -> None:
    """put_entry stores an entry with its own stored_at and expiry, not the clock's."""
    cache = MemoryCache(clock=clock)
    entry = CacheEntry(b"v", clock.time() - 30, clock.time() + 70)
    cache.put_entry("k", entry)
    assert await cache.get("k") == entry
    clock.advance(70)
    assert await cache.get("k") is None


def test_sizes_must_be_positive() -> None:
    """A cache that can hold nothing is a configuration mistake."""
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(0)
    with pytest.raises(ValueError, match="sweep_every"):
        MemoryCache(10, sweep_every=0)
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCache(10, max_bytes=0)


async def test_max_bytes_evicts_least_recently_used_until_the_values_fit(
    clock: VirtualClock,
) -> None:
    """With max_bytes, the least recently used entries go until the values fit in it."""
    cache = MemoryCache(100, clock=clock, max_bytes=10)
    await cache.set("a", b"aaaa", ttl=60)
    await cache.set("b", b"bbbb", ttl=60)
    await cache.get("a")  # b is now the least recently used
    await cache.set("c", b"cccc", ttl=60)
    assert await cache.get("b") is None
    assert await cache.get("a") is not None and await cache.get("c") is not None
    assert cache.value_bytes == 8


async def test_max_bytes_counts_replaced_deleted_and_expired_values(clock: VirtualClock) -> None:
    """Replacing, deleting, expiring and clearing entries give their bytes back to the budget."""
    cache = MemoryCache(100, clock=clock, max_bytes=10)
    await cache.set("a", b"aaaaaaaa", ttl=60)
    await cache.set("a", b"aa", ttl=60)
    await cache.set("b", b"bbbbbbbb", ttl=5)
    assert cache.value_bytes == 10 and len(cache) == 2
    await cache.delete("a")
    clock.advance(5)
    assert cache.sweep() == 1
    assert cache.value_bytes == 0
    await cache.set("c", b"c" * 10, ttl=60)
    assert cache.value_bytes == 10
    cache.clear()
    assert cache.value_bytes == 0


async def test_a_value_larger_than_max_bytes_is_not_held(clock: VirtualClock) -> None:
    """A value bigger than the whole budget is not stored and pushes nothing else out."""
    cache = MemoryCache(100, clock=clock, max_bytes=10)
    await cache.set("small", b"s", ttl=60)
    await cache.set("small2", b"old", ttl=60)
    await cache.set("small2", b"x" * 11, ttl=60)
    assert await cache.get("small2") is None  # not an old value served as the new one
    assert await cache.get("small") is not None
    assert cache.value_bytes == 1
