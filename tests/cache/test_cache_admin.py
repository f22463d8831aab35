"""The operator's verbs over every backend: stats per provider, removal by provider and age,
and lookup counts that outlive the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from threatintel.cache import (
    Cache,
    LayeredCache,
    MemoryCache,
    RedisCache,
    SQLiteCache,
    as_cache_admin,
    as_hit_counter,
    cache_key,
)
from threatintel.cache.admin import OTHER, SAVE_EVERY, CacheAdmin, count_lookup, saves_done
from threatintel.clock import VirtualClock
from threatintel.errors import CacheError

DAY = 86_400.0


def key(provider: str, value: str) -> str:
    return cache_key(provider, "ipv4", value, scope="https://example.test")


def admin_of(cache: Cache) -> CacheAdmin:
    admin = as_cache_admin(cache)
    assert admin is not None
    return admin


async def fill(cache: Cache, clock: VirtualClock) -> None:
    """Two VirusTotal entries two days apart, one OTX entry, and one expired OTX entry."""
    await cache.set(key("otx", "9.9.9.9"), b"gone", ttl=10)
    await cache.set(key("virustotal", "1.1.1.1"), b"x" * 100, ttl=30 * DAY)
    clock.advance(2 * DAY)
    await cache.set(key("virustotal", "2.2.2.2"), b"y" * 50, ttl=30 * DAY)
    await cache.set(key("otx", "1.1.1.1"), b"z" * 10, ttl=30 * DAY)


async def test_stats_count_live_entries_per_provider(cache: Cache, clock: VirtualClock) -> None:
    """Stats give each provider's live entries, value bytes and oldest/newest write times."""
    start = clock.time()
    await fill(cache, clock)
    stats = await admin_of(cache).stats()
    by_name = {p.provider: p for p in stats.providers}
    assert set(by_name) == {"otx", "virustotal"}
    vt = by_name["virustotal"]
    assert (vt.entries, vt.value_bytes) == (2, 150)
    assert (vt.oldest, vt.newest) == (start, start + 2 * DAY)
    assert (by_name["otx"].entries, by_name["otx"].value_bytes) == (1, 10)
    assert stats.entries == 3


async def test_remove_by_provider_leaves_the_others(cache: Cache, clock: VirtualClock) -> None:
    """Removing one provider's entries deletes exactly those and says how many went."""
    await fill(cache, clock)
    assert await admin_of(cache).remove(provider="virustotal") == 2
    assert await cache.get(key("virustotal", "1.1.1.1")) is None
    assert await cache.get(key("otx", "1.1.1.1")) is not None


async def test_remove_older_than_keeps_recent_entries(cache: Cache, clock: VirtualClock) -> None:
    """older_than removes entries written more than that many seconds ago, of every provider."""
    await fill(cache, clock)
    clock.advance(DAY)
    removed = await admin_of(cache).remove(older_than=2 * DAY)
    # The VirusTotal entry from three days ago and the expired OTX one (if still held) went.
    assert removed in (1, 2)
    assert await cache.get(key("virustotal", "1.1.1.1")) is None
    assert await cache.get(key("virustotal", "2.2.2.2")) is not None


async def test_remove_everything(cache: Cache, clock: VirtualClock) -> None:
    """A removal with no filter empties the cache."""
    await fill(cache, clock)
    await admin_of(cache).remove()
    assert (await admin_of(cache).stats()).entries == 0


async def test_provider_filter_is_a_key_prefix_not_a_substring(cache: Cache) -> None:
    """An OTX entry whose value spells ':virustotal:' is not removed with VirusTotal's."""
    tricky = cache_key("otx", "url", "http://a.test/:virustotal:x", scope="s")
    await cache.set(tricky, b"v", ttl=60)
    assert await admin_of(cache).remove(provider="virustotal") == 0
    assert await cache.get(tricky) is not None


async def test_keys_of_another_scheme_are_counted_apart(cache: Cache) -> None:
    """An entry whose key is not ti:v2:<provider>: is shown under OTHER, not as a provider."""
    await cache.set("ti:v1:otx:ipv4:1.2.3.4", b"old", ttl=60)
    stats = await admin_of(cache).stats()
    assert [p.provider for p in stats.providers] == [OTHER]


async def test_lookup_counts_give_a_hit_rate(cache: Cache) -> None:
    """Counted hits and misses show in stats as a per-provider hit rate."""
    counter = as_hit_counter(cache)
    assert counter is not None
    for hit in (True, True, True, False):
        count_lookup(counter, "otx", hit=hit)
    await counter.save_lookups()
    otx = {p.provider: p for p in (await admin_of(cache).stats()).providers}["otx"]
    assert (otx.hits, otx.misses, otx.hit_rate) == (3, 1, 0.75)


async def test_a_providers_removal_restarts_its_counts(cache: Cache) -> None:
    """Removing a provider's entries (no age filter) restarts its counts, not the others'."""
    counter = as_hit_counter(cache)
    assert counter is not None
    counter.note_lookup("otx", hit=True)
    counter.note_lookup("ipinfo", hit=False)
    await counter.save_lookups()
    await admin_of(cache).remove(provider="otx")
    names = {p.provider: p for p in (await admin_of(cache).stats()).providers}
    assert "otx" not in names
    assert names["ipinfo"].misses == 1


async def test_sqlite_counts_outlive_the_process(tmp_path: Path, clock: VirtualClock) -> None:
    """Counts noted by one SQLite cache are read by the next one opened on the file."""
    path = tmp_path / "c.sqlite3"
    async with LayeredCache(MemoryCache(clock=clock), SQLiteCache(path, clock=clock)) as first:
        first.note_lookup("virustotal", hit=True)
        first.note_lookup("virustotal", hit=False)
    async with SQLiteCache(path, clock=clock) as second:
        stats = await second.stats()
    vt = stats.providers[0]
    assert (vt.provider, vt.hits, vt.misses) == ("virustotal", 1, 1)
    assert stats.counting_since == clock.time()


async def test_counts_are_saved_every_so_many_lookups(tmp_path: Path, clock: VirtualClock) -> None:
    """A long-running process saves its counts every SAVE_EVERY lookups, not only at exit."""
    path = tmp_path / "c.sqlite3"
    async with SQLiteCache(path, clock=clock) as cache, SQLiteCache(path, clock=clock) as peer:
        for _ in range(SAVE_EVERY):
            count_lookup(cache, "otx", hit=True)
        await saves_done()  # the save runs in the background: the 200th lookup never waits
        assert (await peer.stats()).providers[0].hits == SAVE_EVERY


async def test_sqlite_stats_report_the_file_size(tmp_path: Path, clock: VirtualClock) -> None:
    """The SQLite cache's stats give its size on disk, WAL included."""
    async with SQLiteCache(tmp_path / "c.sqlite3", clock=clock) as cache:
        await cache.set(key("otx", "1.1.1.1"), b"v" * 1000, ttl=60)
        stats = await cache.stats()
    assert stats.file_bytes is not None and stats.file_bytes > 1000


async def test_a_name_no_key_can_hold_is_refused(cache: Cache) -> None:
    """A provider name with a colon is a caller's mistake, not a pattern to delete by."""
    with pytest.raises(ValueError, match="not a provider name"):
        await admin_of(cache).remove(provider="otx:*")


async def test_counts_that_could_not_be_saved_are_kept(clock: VirtualClock) -> None:
    """A store that cannot take the counts now keeps them for the next save."""
    back = RedisCache("redis://127.0.0.1:1/0", clock=clock, socket_timeout=0.5)
    assert back.note_lookup("otx", hit=True) == 1
    with pytest.raises(CacheError):
        await back.save_lookups()
    assert back.note_lookup("otx", hit=False) == 2
    layered = LayeredCache(MemoryCache(clock=clock), back, retry_after=60)
    await layered.save_lookups()  # the layered cache carries on without raising
    assert not layered.back_healthy
    assert layered.note_lookup("otx", hit=True) == 3
    await layered.aclose()


async def test_one_background_save_at_a_time(tmp_path: Path, clock: VirtualClock) -> None:
    """Lookups counted faster than a save starts share one background save per cache (each
    would otherwise start its own until the first took the counts), and none is lost."""
    from threatintel.cache import admin

    async with SQLiteCache(tmp_path / "c.sqlite3", clock=clock) as cache:
        for _ in range(5 * SAVE_EVERY):  # no await: the save cannot start meanwhile
            count_lookup(cache, "otx", hit=True)
        assert len(admin._saving) == 1
        await saves_done()
        await cache.save_lookups()
        assert (await cache.stats()).providers[0].hits == 5 * SAVE_EVERY
