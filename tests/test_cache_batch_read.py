"""The engine reads all of an indicator's cached answers in one cache read (Cache.get_many)."""

from __future__ import annotations

from collections.abc import Sequence

from support import sim_settings
from threatintel.cache import CacheEntry, MemoryCache
from threatintel.engine import Engine
from threatintel.quota import MemoryQuotaStore
from threatintel.simulator import SimulatorServer

VALUES = ["45.20.1.9", "evil-example.com"]


class CountingCache(MemoryCache):
    """A memory cache that counts its single reads and its batched ones."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.batches: list[int] = []
        self._batching = False

    async def get(self, key: str) -> CacheEntry | None:
        if not self._batching:
            self.gets += 1
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        self.batches.append(len(keys))
        self._batching = True
        try:
            return await super().get_many(keys)
        finally:
            self._batching = False


async def test_warm_indicator_is_answered_from_one_cache_read(sim: SimulatorServer) -> None:
    """A warm run reads each indicator's sources in one get_many, sends nothing upstream, and
    still counts every source's lookup as a hit."""
    cache = CountingCache()
    async with Engine(sim_settings(sim), cache=cache, quota_store=MemoryQuotaStore()) as cold:
        first = await cold.analyze(VALUES)
    calls = len(sim.log)
    cache.gets, cache.batches = 0, []
    async with Engine(sim_settings(sim), cache=cache, quota_store=MemoryQuotaStore()) as warm:
        again = await warm.analyze(VALUES)
        hits = {name: p.stats.cache_hits for name, p in warm.pipelines.items()}
    asked = [[r for r in e.sources.values() if r.status.answered] for e in again.enrichments]
    assert len(sim.log) == calls
    assert all(r.cached for results in asked for r in results)
    assert cache.gets == 0
    assert sorted(cache.batches) == sorted(len(results) for results in asked)
    assert sum(hits.values()) == sum(len(results) for results in asked)
    counted = {p.provider: p.hits for p in (await cache.stats()).providers}
    assert sum(counted.values()) == sum(len(results) for results in asked)
    assert [e.indicator for e in first.enrichments] == [e.indicator for e in again.enrichments]
