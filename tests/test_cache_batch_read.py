"""The engine reads the cached answers of the indicators it starts together in one cache read
(Cache.get_many through BatchedReads)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from support import sim_settings
from threatintel.cache import CacheEntry, MemoryCache
from threatintel.cache.batched import BatchedReads
from threatintel.engine import Engine, LookupEvent
from threatintel.errors import CacheError
from threatintel.models import Analysis, Enrichment
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


async def test_warm_indicators_are_answered_from_one_cache_read(sim: SimulatorServer) -> None:
    """A warm run reads all its indicators' sources in one get_many, sends nothing upstream,
    and still counts every source's lookup as a hit."""
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
    assert cache.batches == [sum(len(results) for results in asked)]
    assert sum(hits.values()) == sum(len(results) for results in asked)
    counted = {p.provider: p.hits for p in (await cache.stats()).providers}
    assert sum(counted.values()) == sum(len(results) for results in asked)
    assert [e.indicator for e in first.enrichments] == [e.indicator for e in again.enrichments]


def _seen(analysis: Analysis) -> list[Enrichment]:
    """The enrichments less what differs from one run to the next by the clock alone: the age
    of a cached answer, the time on a status made without a lookup (not applicable...)."""
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    out = []
    for enrichment in analysis.enrichments:
        sources = {
            name: result.model_copy(
                update={"cache_age": None} if result.cached else {"fetched_at": epoch}
            )
            for name, result in enrichment.sources.items()
        }
        out.append(enrichment.model_copy(update={"sources": sources}))
    return out


async def test_an_indicator_the_cache_answers_whole_comes_out_as_lookups_one_by_one_give_it(
    sim: SimulatorServer,
) -> None:
    """An indicator whose every source is in the cache gets the enrichment, lookup events and
    hit counts that lookups reading the cache one source at a time give, and asks nothing
    upstream."""
    cache = CountingCache()
    async with Engine(sim_settings(sim), cache=cache, quota_store=MemoryQuotaStore()) as cold:
        await cold.analyze(VALUES)
    calls = len(sim.log)
    runs = []
    # No deadline: one read for the batch, then the whole-hit path. A deadline: a task per
    # source, each reading the cache itself.
    for deadline in (None, 600.0):
        events: list[LookupEvent] = []
        before = {p.provider: p.hits for p in (await cache.stats()).providers}
        async with Engine(
            sim_settings(sim), cache=cache, quota_store=MemoryQuotaStore(), on_lookup=events.append
        ) as warm:
            analysis = await warm.analyze(VALUES, deadline=deadline)
            stats = [(n, s.cache_hits, s.cache_misses, s.upstream_calls, s.statuses)
                     for n, s in warm.stats.items()]  # fmt: skip
        after = {p.provider: p.hits for p in (await cache.stats()).providers}
        hits = {name: after[name] - before.get(name, 0) for name in after}
        seen = sorted((e.provider, e.indicator_type, e.status, e.cached) for e in events)
        runs.append((_seen(analysis), seen, stats, hits))
    assert len(sim.log) == calls
    assert runs[0] == runs[1]
    enrichments, seen, _, hits = runs[0]
    answered = [r for e in enrichments for r in e.sources.values() if r.status.answered]
    assert answered and all(r.cached for r in answered)
    assert len(seen) == sum(hits.values()) == len(answered)


async def test_an_indicator_the_cache_answers_in_part_asks_for_the_rest_alone(
    sim: SimulatorServer,
) -> None:
    """When the cache holds some of an indicator's sources, only the missing ones are asked
    upstream, and the others are answered from the cache and counted as hits."""
    cache = CountingCache()
    async with Engine(sim_settings(sim), cache=cache, quota_store=MemoryQuotaStore()) as cold:
        first = await cold.analyze(VALUES[:1])
        await cache.delete(cold.pipelines["otx"].cache_key(first.enrichments[0].indicator))
    calls = len(sim.log)
    async with Engine(sim_settings(sim), cache=cache, quota_store=MemoryQuotaStore()) as warm:
        again = await warm.analyze(VALUES[:1])
        stats = warm.stats
    sources = again.enrichments[0].sources
    records = sim.log.records()
    asked = [(r.vendor, r.path) for r in records[calls:]]
    assert asked == [(r.vendor, r.path) for r in records[:calls] if r.vendor == "otx"]
    assert {n for n, r in sources.items() if r.status.answered and not r.cached} == {"otx"}
    assert {n: s.cache_misses for n, s in stats.items() if s.cache_misses} == {"otx": 1}
    assert (
        sum(s.cache_hits for s in stats.values())
        == sum(1 for r in sources.values() if r.cached)
        == 3
    )


class FailingCache(CountingCache):
    """A cache whose batched reads fail as a broken backend's do."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        self.batches.append(len(keys))
        raise CacheError("the back is down")


async def test_reads_asked_in_one_loop_turn_share_one_get_many() -> None:
    """Callers of one loop turn share a single read, each getting only its own keys' live
    entries (absent keys left out), and a later caller gets a read of its own."""
    cache = CountingCache()
    await cache.set("a", b"1", ttl=60)
    await cache.set("b", b"2", ttl=60)
    reads = BatchedReads(cache)
    first, second, third = await asyncio.gather(
        reads.get_many(["a", "x"]), reads.get_many(["b"]), reads.get_many(["a", "b"])
    )
    assert cache.batches == [3]  # "a", "x", "b" once each
    assert {k: e.value for k, e in first.items()} == {"a": b"1"}
    assert {k: e.value for k, e in second.items()} == {"b": b"2"}
    assert set(third) == {"a", "b"}
    assert set(await reads.get_many(["b"])) == {"b"}
    assert cache.batches == [3, 1]


async def test_a_batch_is_split_at_max_keys_without_splitting_a_caller() -> None:
    """Past max_keys the waiting callers are read in several batches, each caller's keys in
    one of them, and every caller still gets its entries."""
    cache = CountingCache()
    for key in "abcde":
        await cache.set(key, key.encode(), ttl=60)
    reads = BatchedReads(cache, max_keys=3)
    answers = await asyncio.gather(
        reads.get_many(["a", "b"]), reads.get_many(["c", "d"]), reads.get_many(["e"])
    )
    assert cache.batches == [2, 3]
    assert [sorted(answer) for answer in answers] == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_failed_read_reaches_every_caller_and_a_cancelled_one_is_skipped() -> None:
    """A CacheError of the shared read is raised to each caller of that read; a caller
    cancelled before the read ends does not stop the others from being answered."""
    reads = BatchedReads(FailingCache())
    results = await asyncio.gather(
        reads.get_many(["a"]), reads.get_many(["b"]), return_exceptions=True
    )
    assert [type(r) for r in results] == [CacheError, CacheError]
    cache = CountingCache()
    await cache.set("b", b"2", ttl=60)
    reads = BatchedReads(cache)
    gone = asyncio.create_task(reads.get_many(["a"]))
    kept = asyncio.create_task(reads.get_many(["b"]))
    await asyncio.sleep(0)  # both are waiting for the shared read
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert set(await kept) == {"b"}
