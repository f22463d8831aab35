"""Time, injectable: every component that waits or ages data takes a Clock.

    clock = SystemClock()             # production: wall time and real sleeps
    clock = VirtualClock(start=1.7e9) # tests and benchmarks: sleeping advances time instantly

``time()`` is epoch seconds (quota windows align to UTC midnight and the 1st of the month,
cache entries carry their store time, and several instances sharing Redis must agree on it).
"""

from __future__ import annotations

import asyncio
import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def time(self) -> float:
        return _time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock for tests: ``sleep`` jumps time forward instead of waiting.

    Concurrent sleepers do not add up: sleeping moves time to ``max(now, start + seconds)``,
    so ten coroutines each waiting 60 s move the clock by 60 s, as real time would. The
    simulator can share the instance (it is callable, returning ``time()``), so quotas and
    limiters see the same time.
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        target = self.now + max(0.0, seconds)
        # Yield first so every coroutine that is ready runs at the current time.
        await asyncio.sleep(0)
        if target > self.now:
            self.now = target
        await asyncio.sleep(0)
