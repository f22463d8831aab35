"""Cache reads asked for in the same turn of the event loop, made as one ``get_many``.

    reads = BatchedReads(cache)
    entries = await reads.get_many(keys)   # callers in one loop turn share a single read

A stream starts hundreds of lookups at once; each reads its indicator's cache entries first.
Read one by one, a warm run of 10,000 indicators makes 10,000 trips to the SQLite thread (or
Redis), each with its own executor hand-off. Here the first caller of a turn schedules one
read for everything asked before it runs, and each caller gets its own keys' entries back: one
query per loop turn. A caller waits one loop turn longer than it would alone, and nothing
else changes: absent and expired keys are left out as in ``get_many``, and a ``CacheError``
reaches every caller of the read that failed. A caller cancelled meanwhile is skipped; the
read itself is shared, so it goes on for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from threatintel.cache.base import Cache, CacheEntry, get_many

__all__ = ["MAX_BATCH_KEYS", "BatchedReads"]

#: The most keys one shared read asks for; the callers past it wait for the next read (the
#: engine's window of 250 indicators asks for ~700 keys at most: one read per loop turn).
MAX_BATCH_KEYS: Final = 1_000

_Waiter = tuple[Sequence[str], "asyncio.Future[dict[str, CacheEntry]]"]


class BatchedReads:
    """``get_many`` for many concurrent callers, one read of ``cache`` per loop turn."""

    __slots__ = ("_cache", "_flush", "_waiting", "max_keys", "reads")

    def __init__(self, cache: Cache, *, max_keys: int = MAX_BATCH_KEYS) -> None:
        self._cache = cache
        self.max_keys = max(1, max_keys)
        self._waiting: list[_Waiter] = []
        self._flush: asyncio.Task[None] | None = None
        #: Reads made of the cache (for tests and benchmarks).
        self.reads = 0

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The live entries among ``keys``, read together with other callers' of this turn."""
        future: asyncio.Future[dict[str, CacheEntry]] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, future))
        if self._flush is None:
            self._flush = asyncio.create_task(self._read())
        return await future

    async def _read(self) -> None:
        """Read for every waiting caller, a batch of at most ``max_keys`` keys at a time."""
        batch: list[_Waiter] = []
        try:
            while self._waiting:
                batch = self._take()
                wanted = list(dict.fromkeys(key for keys, _ in batch for key in keys))
                try:
                    self.reads += 1
                    entries = await get_many(self._cache, wanted)
                except Exception as exc:  # CacheError above all: every caller hears it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for keys, future in batch:
                    if not future.done():
                        future.set_result({k: entries[k] for k in keys if k in entries})
        except asyncio.CancelledError:
            for _, future in (*batch, *self._waiting):
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._flush = None

    def _take(self) -> list[_Waiter]:
        """The oldest waiting callers whose keys fit in one read (always at least one)."""
        count = size = 0
        for keys, _ in self._waiting:
            if count and size + len(keys) > self.max_keys:
                break
            count += 1
            size += len(keys)
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch
