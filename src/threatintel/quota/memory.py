"""The per-process quota store: the test store, and the last resort while the others are down."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

from threatintel.quota.base import BLOCKED, Grant, Window, WindowUsage, block_end


class MemoryQuotaStore:
    """A per-process store: the test store, and the fallback when the shared one is down.

    Sliding windows keep a sorted list of the instants their grants expire; fixed windows keep
    ``(window_id, count)``.
    """

    __slots__ = ("_blocks", "_fixed", "_limits", "_seen", "_sliding")

    def __init__(self) -> None:
        self._sliding: dict[tuple[str, str], list[float]] = {}
        self._fixed: dict[tuple[str, str], tuple[int, int]] = {}
        self._blocks: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._limits: dict[str, tuple[dict[str, int], float]] = {}

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant:
        # Nothing in here awaits, so within one event loop no other acquire can interleave
        # between the check and the record: atomic without a lock.
        # Time never runs backwards for a bucket: a caller holding an older instant is judged
        # at the newest one seen, so it cannot reuse a slot that has been given out since.
        now = max(now, self._seen.get(bucket, now))
        if bucket in self._blocks:
            until = block_end(self._blocks[bucket], now)
            if until is not None:
                return Grant(False, wait=until - now, exhausted=BLOCKED, reset_at=until)
            del self._blocks[bucket]
        spent: tuple[float, str] | None = None
        frees_at = now
        for window in windows:
            if window.sliding:
                expiries = self._live(bucket, window, now)
                if len(expiries) >= window.limit:
                    frees_at = max(frees_at, expiries[len(expiries) - window.limit])
            elif self._count(bucket, window, now) >= window.limit:
                reset = window.reset_at(now)
                if spent is None or reset > spent[0]:
                    spent = (reset, window.name)
        if spent is not None:
            return Grant(False, wait=spent[0] - now, exhausted=spent[1], reset_at=spent[0])
        if frees_at > now:
            return Grant(False, wait=frees_at - now)
        for window in windows:
            if window.sliding:
                bisect.insort(self._sliding[(bucket, window.name)], now + window.seconds)
            else:
                count = self._count(bucket, window, now)
                self._fixed[(bucket, window.name)] = (window.window_id(now), count + 1)
        self._seen[bucket] = now
        return Grant(True, at=now)

    async def block(self, bucket: str, until: float) -> None:
        if not math.isfinite(until):
            return
        # A block only ever grows: a later, shorter 429 must not lift a longer one.
        self._blocks[bucket] = max(until, self._blocks.get(bucket, until))

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        result = []
        for window in windows:
            if window.sliding:
                expiries = self._live(bucket, window, now)
                used = len(expiries)
                reset: float | None = expiries[0] if expiries else None
            else:
                used = self._count(bucket, window, now)
                reset = window.reset_at(now)
            remaining = max(0, window.limit - used)
            result.append(WindowUsage(window.name, window.limit, used, remaining, reset))
        return result

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        return block_end(self._blocks.get(bucket), now)

    async def refund(self, bucket: str, windows: Sequence[Window], grant: Grant) -> None:
        if grant.at is None:
            return
        for window in windows:
            if window.sliding:
                expiries = self._sliding.get((bucket, window.name), [])
                index = bisect.bisect_left(expiries, grant.at + window.seconds)
                if index < len(expiries) and expiries[index] == grant.at + window.seconds:
                    del expiries[index]
            else:
                window_id, count = self._fixed.get((bucket, window.name), (None, 0))
                # A window that has reset since counts the grant no longer.
                if window_id == window.window_id(grant.at) and count > 0:
                    self._fixed[(bucket, window.name)] = (window_id, count - 1)

    async def learned_limits(self, bucket: str, now: float) -> dict[str, int]:
        limits, until = self._limits.get(bucket, ({}, now))
        return dict(limits) if until > now else {}

    async def keep_limits(self, bucket: str, limits: Mapping[str, int], until: float) -> None:
        self._limits[bucket] = (dict(limits), until)

    async def aclose(self) -> None:
        return None

    def _live(self, bucket: str, window: Window, now: float) -> list[float]:
        """The window's grant expiries still in force, with the expired ones dropped."""
        expiries = self._sliding.setdefault((bucket, window.name), [])
        # A grant stops counting at exactly its expiry: the instant a sleeper wakes up to.
        del expiries[: bisect.bisect_right(expiries, now)]
        return expiries

    def _count(self, bucket: str, window: Window, now: float) -> int:
        window_id, count = self._fixed.get((bucket, window.name), (None, 0))
        return count if window_id == window.window_id(now) else 0
