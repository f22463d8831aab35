"""An in-process LRU cache with per-entry TTL: the local layer, and the cache tests use.

    cache = MemoryCache(max_entries=10_000, clock=VirtualClock())

Bounded: once ``max_entries`` are held, a new key evicts the least recently used one; with
``max_bytes``, least recently used entries also go until the values fit in it (a value larger
than ``max_bytes`` is not held at all). Expired
entries are dropped when they are read, and by a sweep over the whole table that runs every
``sweep_every`` sets (and sooner when the table is full, so expired entries go before live ones).
Everything runs on the event loop without awaiting, so no lock is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from threatintel.cache.admin import CacheStats, LookupCounts, StatsBuilder, provider_prefix
from threatintel.cache.base import SYSTEM_CLOCK, CacheBase, CacheEntry, check_ttl
from threatintel.clock import Clock

DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_SWEEP_EVERY: Final = 1_000
#: A full table sweeps at most once per this fraction of its size in sets: a sweep is O(n), so
#: this keeps the amortised cost of a set at a few entries scanned.
_FULL_SWEEP_FRACTION: Final = 10


class MemoryCache(CacheBase):
    """A bounded LRU of ``CacheEntry`` with per-entry TTL, read against an injected clock."""

    __slots__ = (
        "_bytes",
        "_counted_since",
        "_entries",
        "_lookups",
        "_sets_since_sweep",
        "clock",
        "max_bytes",
        "max_entries",
        "sweep_every",
    )

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sweep_every: int = DEFAULT_SWEEP_EVERY,
        max_bytes: int | None = None,
    ) -> None:
        """``max_bytes`` bounds the values held (their lengths summed); None: no bound."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if sweep_every < 1:
            raise ValueError("sweep_every must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._bytes = 0
        self.sweep_every = sweep_every
        self.clock = clock
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._sets_since_sweep = 0
        # Lookup counts live and die with the process, like the entries.
        self._lookups = LookupCounts()
        self._counted_since: float | None = None

    def __len__(self) -> int:
        """Entries held, expired ones not yet swept included."""
        return len(self._entries)

    async def get(self, key: str) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expired(self.clock.time()):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The live entries among ``keys``, as ``get`` would return them one by one."""
        found: dict[str, CacheEntry] = {}
        for key in keys:
            entry = await self.get(key)
            if entry is not None:
                found[key] = entry
        return found

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        now = self.clock.time()
        self.put_entry(key, CacheEntry(bytes(value), now, now + check_ttl(ttl)))

    def put_entry(self, key: str, entry: CacheEntry) -> None:
        """Store a ready-made entry as it is, keeping its times.

        The layered cache fills this front from a shared back this way, so the copy keeps the
        original ``stored_at`` (its age) and expires when the shared entry does.
        """
        entries = self._entries
        self._sets_since_sweep += 1
        self._drop(key)  # a replaced entry's bytes no longer count; the new one goes last
        if len(entries) >= self.max_entries:
            if self._sets_since_sweep * _FULL_SWEEP_FRACTION >= self.max_entries:
                self.sweep()
            while len(entries) >= self.max_entries:
                self._drop_oldest()
        elif self._sets_since_sweep >= self.sweep_every:
            self.sweep()
        size = len(entry.value)
        if self.max_bytes is not None:
            if size > self.max_bytes:
                return  # it would push out everything else and still not fit
            while entries and self._bytes + size > self.max_bytes:
                self._drop_oldest()
        entries[key] = entry
        self._bytes += size

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.value)

    def _drop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._bytes -= len(entry.value)

    @property
    def value_bytes(self) -> int:
        """Bytes of values held, expired ones not yet swept included."""
        return self._bytes

    async def delete(self, key: str) -> None:
        self._drop(key)

    def sweep(self) -> int:
        """Drop every expired entry now; returns how many went."""
        now = self.clock.time()
        expired = [key for key, entry in self._entries.items() if entry.expired(now)]
        for key in expired:
            self._drop(key)
        self._sets_since_sweep = 0
        return len(expired)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._bytes = 0
        self._sets_since_sweep = 0

    async def aclose(self) -> None:
        self.clear()

    # -- CacheAdmin and HitCounter (this process's numbers only) -------------------------------

    @property
    def label(self) -> str:
        return "memory (this process only)"

    async def stats(self) -> CacheStats:
        now = self.clock.time()
        builder = StatsBuilder()
        for key, entry in self._entries.items():
            if not entry.expired(now):
                builder.add(key, len(entry.value), entry.stored_at)
        counts = [(name, h, m) for name, (h, m) in self._lookups.peek().items()]
        return builder.build(
            "memory (this process only)", counts, counting_since=self._counted_since
        )

    async def remove(self, *, provider: str | None = None, older_than: float | None = None) -> int:
        prefix = provider_prefix(provider) if provider is not None else ""
        cutoff = None if older_than is None else self.clock.time() - older_than
        doomed = [
            key
            for key, entry in self._entries.items()
            if key.startswith(prefix) and (cutoff is None or entry.stored_at <= cutoff)
        ]
        for key in doomed:
            self._drop(key)
        if older_than is None:
            self._lookups.forget(provider)
        return len(doomed)

    def note_lookup(self, provider: str, *, hit: bool) -> int:
        if self._counted_since is None:
            self._counted_since = self.clock.time()
        self._lookups.add(provider, hit=hit)
        return 0  # nothing to save: the counts are already where stats reads them

    async def save_lookups(self) -> None:
        return None
