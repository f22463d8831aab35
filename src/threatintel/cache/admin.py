"""What an operator asks of a cache besides get and set: its numbers, and removing entries.

    admin = as_cache_admin(cache)            # None for a cache that cannot answer
    stats = await admin.stats()              # entries, bytes, ages and hit rate per provider
    gone = await admin.remove(provider="otx", older_than=7 * 86_400)

Kept out of the ``Cache`` protocol, as ``FlightLock`` is: the engine needs get/set/aclose, the
``threatintel cache`` commands need these. Entries are told apart by their key,
``ti:v2:<provider>:...`` (``cache_key``), so a provider's entries are one key prefix: a range
of the primary key in SQLite, a SCAN pattern in Redis (never KEYS, which blocks the server).
Keys of an older scheme (``ti:v1:...``) are never read again; they are counted under
``OTHER`` and removed by a clear without ``--provider``.

Hit rate needs counts that outlive the process (a CLI run is one process, and its rate says
nothing), so the pipeline tells the cache about every lookup it answered (``note_lookup``: an
increment in memory) and the store adds them to counters it keeps beside the entries
(``save_lookups``) every ``SAVE_EVERY`` lookups and when it closes: one small write per few
hundred lookups. A process killed with ``kill -9`` loses at most that many counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from threatintel.cache.base import KEY_PREFIX
from threatintel.errors import CacheError

#: Lookups counted in memory before they are added to the store's counters.
SAVE_EVERY: Final = 200
#: Where entries whose key is not of the current scheme are counted.
OTHER: Final = "(other)"
#: What the key of every cache entry starts with, whatever its scheme's version.
ANY_SCHEME: Final = KEY_PREFIX.partition(":")[0] + ":"

logger = logging.getLogger("threatintel.cache")


@dataclass(frozen=True, slots=True)
class ProviderCacheStats:
    """One provider's live entries and lookup counts (times in epoch seconds)."""

    provider: str
    entries: int = 0
    value_bytes: int = 0
    oldest: float | None = None
    newest: float | None = None
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float | None:
        """Share of lookups answered from the cache, None before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A cache's numbers: ``where`` names it, ``file_bytes`` is its size on disk (None for
    memory and Redis), ``counting_since`` when its lookup counters started."""

    where: str
    providers: tuple[ProviderCacheStats, ...]
    file_bytes: int | None = None
    counting_since: float | None = None

    @property
    def entries(self) -> int:
        return sum(p.entries for p in self.providers)

    @property
    def value_bytes(self) -> int:
        return sum(p.value_bytes for p in self.providers)


@runtime_checkable
class CacheAdmin(Protocol):
    """The operator's verbs; each raises ``CacheError`` when the store cannot answer."""

    @property
    def label(self) -> str:
        """What messages call the store: ``SQLite file <path>``, ``Redis at <masked URL>``."""
        ...

    async def stats(self) -> CacheStats:
        """Live entries per provider with their bytes and ages, and the lookup counts."""
        ...

    async def remove(self, *, provider: str | None = None, older_than: float | None = None) -> int:
        """Delete entries (of ``provider`` only, stored over ``older_than`` seconds ago only);
        returns how many went. A provider's whole removal also restarts its counts."""
        ...


@runtime_checkable
class HitCounter(Protocol):
    """Counts lookups answered from the cache or not, kept by the store across processes."""

    def note_lookup(self, provider: str, *, hit: bool) -> int:
        """Count one lookup in memory; returns how many are counted but not saved yet."""
        ...

    async def save_lookups(self) -> None:
        """Add the counted lookups to the store's counters; CacheError keeps them for later."""
        ...


def as_cache_admin(cache: object) -> CacheAdmin | None:
    """``cache`` as a ``CacheAdmin``, or None when it is not one."""
    return cache if isinstance(cache, CacheAdmin) else None


def as_hit_counter(cache: object) -> HitCounter | None:
    """``cache`` as a ``HitCounter``, or None when it counts nothing."""
    return cache if isinstance(cache, HitCounter) else None


#: Saves of lookup counts under way, by counter (``count_lookup`` starts them; ``saves_done``
#: awaits them). One per counter at a time: until a save has taken the counts, every lookup
#: would otherwise start another (thousands in a warm run, each a transaction).
_saving: dict[int, asyncio.Task[None]] = {}


def count_lookup(counter: HitCounter, provider: str, *, hit: bool) -> None:
    """Count one lookup; once ``SAVE_EVERY`` are waiting, save them in the background: the
    lookup that happens to be the 200th must not wait for a write (on SQLite a transaction,
    at times a WAL checkpoint), which put it among a server's slowest answers. Never raises."""
    if counter.note_lookup(provider, hit=hit) < SAVE_EVERY or id(counter) in _saving:
        return
    task = asyncio.get_running_loop().create_task(_save(counter))
    _saving[id(counter)] = task
    task.add_done_callback(lambda _: _saving.pop(id(counter), None))


async def _save(counter: HitCounter) -> None:
    try:
        await counter.save_lookups()
    except CacheError as exc:  # a bare backend; counts are kept and saved later
        logger.debug("cache lookup counts not saved: %s", exc)


async def saves_done() -> None:
    """Wait for the background saves of lookup counts (before a cache closes)."""
    while _saving:
        await asyncio.gather(*_saving.values(), return_exceptions=True)


def provider_prefix(provider: str) -> str:
    """The key prefix of ``provider``'s entries: ``ti:v2:<provider>:``."""
    if not provider or ":" in provider:
        raise ValueError(f"not a provider name: {provider!r}")
    return f"{KEY_PREFIX}:{provider}:"


def provider_of(key: str) -> str:
    """The provider a cache key belongs to, ``OTHER`` for a key of another scheme."""
    head = KEY_PREFIX + ":"
    if not key.startswith(head):
        return OTHER
    provider, sep, _ = key[len(head) :].partition(":")
    return provider if sep and provider else OTHER


class LookupCounts:
    """Lookups counted in memory, per provider, until the store saves them."""

    __slots__ = ("_counts", "pending")

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self.pending = 0

    def add(self, provider: str, *, hit: bool) -> int:
        counts = self._counts.setdefault(provider, [0, 0])
        counts[0 if hit else 1] += 1
        self.pending += 1
        return self.pending

    def take(self) -> dict[str, tuple[int, int]]:
        """The (hits, misses) counted per provider, forgotten here; ``give_back`` on failure."""
        taken = {name: (c[0], c[1]) for name, c in self._counts.items()}
        self._counts.clear()
        self.pending = 0
        return taken

    async def save(self, write: Callable[[dict[str, tuple[int, int]]], Awaitable[None]]) -> None:
        """Hand the counts to ``write`` (the store's own); kept for next time if it raises."""
        counts = self.take()
        if not counts:
            return  # no file opened, no connection made, for nothing to say
        try:
            await write(counts)
        except BaseException:
            self.give_back(counts)
            raise

    def give_back(self, counts: dict[str, tuple[int, int]]) -> None:
        for name, (hits, misses) in counts.items():
            mine = self._counts.setdefault(name, [0, 0])
            mine[0] += hits
            mine[1] += misses
            self.pending += hits + misses

    def forget(self, provider: str | None) -> None:
        """Drop the counts of ``provider`` (of every provider for None)."""
        for name in [provider] if provider is not None else list(self._counts):
            hits, misses = self._counts.pop(name, (0, 0))
            self.pending -= hits + misses

    def peek(self) -> dict[str, tuple[int, int]]:
        return {name: (c[0], c[1]) for name, c in self._counts.items()}


class StatsBuilder:
    """Adds up entries per provider, then joins the lookup counts: what every backend's
    ``stats`` does once it has listed its live entries."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        #: provider -> [entries, bytes, oldest, newest]
        self._entries: dict[str, list[float]] = {}

    def add(self, key: str, size: int, stored_at: float) -> None:
        row = self._entries.get(provider := provider_of(key))
        if row is None:
            self._entries[provider] = [1, size, stored_at, stored_at]
            return
        row[0] += 1
        row[1] += size
        row[2] = min(row[2], stored_at)
        row[3] = max(row[3], stored_at)

    def build(
        self,
        where: str,
        counts: Iterable[tuple[str, int, int]] = (),
        *,
        file_bytes: int | None = None,
        counting_since: float | None = None,
    ) -> CacheStats:
        """``counts``: (provider, hits, misses), possibly several rows per provider."""
        hits: dict[str, list[int]] = {}
        for name, h, m in counts:
            pair = hits.setdefault(name, [0, 0])
            pair[0] += h
            pair[1] += m
        names = sorted(set(self._entries) | set(hits), key=lambda n: (n == OTHER, n))
        providers = []
        for name in names:
            entries, size, oldest, newest = self._entries.get(name, (0, 0, None, None))
            h, m = hits.get(name, (0, 0))
            providers.append(
                ProviderCacheStats(name, int(entries or 0), int(size or 0), oldest, newest, h, m)
            )
        return CacheStats(where, tuple(providers), file_bytes, counting_since)
