"""Time, injectable: every component that waits or ages data takes a Clock.

    clock = SystemClock()             # production: wall time and real sleeps
    clock = VirtualClock(start=1.7e9) # tests and benchmarks: sleeping advances time instantly

``time()`` is epoch seconds (quota windows align to UTC midnight and the 1st of the month,
cache entries carry their store time, and several instances sharing Redis must agree on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import time as _time
from collections.abc import AsyncIterator, Iterator
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def participant(self) -> contextlib.AbstractContextManager[None]:
        """Mark a stretch of work that time must not skip past (see LockstepClock)."""
        ...

    def timeout(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        """Cut the block with TimeoutError once ``seconds`` of this clock's time have passed."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def time(self) -> float:
        return _time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def participant(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def timeout(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        return asyncio.timeout(max(0.0, seconds))


class VirtualClock:
    """A clock for tests: ``sleep`` jumps time forward instead of waiting.

    Concurrent sleepers do not add up: sleeping moves time to ``max(now, start + seconds)``,
    so ten coroutines each waiting 60 s move the clock by 60 s, as real time would. The
    simulator can share the instance (it is callable, returning ``time()``), so quotas and
    limiters see the same time.

    ``timeout`` deadlines are virtual too: a block waiting on real I/O is cut only when other
    sleepers carry the clock past its deadline, never by the real time the I/O takes (a real
    timer derived from a virtual budget would fire at an arbitrary point of the test).
    """

    __slots__ = ("_deadlines", "now")

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._deadlines: list[tuple[float, asyncio.Timeout]] = []

    def time(self) -> float:
        return self.now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        self._expire()

    async def sleep(self, seconds: float) -> None:
        target = self.now + max(0.0, seconds)
        # Yield first so every coroutine that is ready runs at the current time.
        await asyncio.sleep(0)
        if target > self.now:
            self.now = target
            self._expire()
        await asyncio.sleep(0)

    def participant(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[object]:
        async with asyncio.timeout(None) as scope:
            entry = (self.now + max(0.0, seconds), scope)
            self._deadlines.append(entry)
            self._expire()
            try:
                yield scope
            finally:
                if entry in self._deadlines:
                    self._deadlines.remove(entry)

    def _expire(self) -> None:
        """Fire every timeout whose deadline the clock has reached (asyncio's Timeout turns
        the cancellation into TimeoutError at the block's edge, as asyncio.timeout does)."""
        due = [entry for entry in self._deadlines if entry[0] <= self.now]
        for entry in due:
            self._deadlines.remove(entry)
            entry[1].reschedule(asyncio.get_running_loop().time())


_PARTICIPANT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "threatintel_lockstep_participant", default=False
)


class LockstepClock(VirtualClock):
    """A virtual clock that moves only when every participant is asleep on it.

        clock = LockstepClock()
        with clock.participant():          # the engine marks each upstream lookup so
            await clock.sleep(60)          # time waits for lookups still talking HTTP

    VirtualClock jumps as soon as one sleeper yields; that is wrong when other coroutines are
    waiting on real I/O (a simulator, Redis) that real time would not pass by. Here time jumps
    to the earliest wake-up only once no participant is awake, which is what an idle process
    waiting for its rate-limit windows would see, minus the waiting. Sleepers outside any
    participant (housekeeping such as lock renewal) wait for their time without holding it.

    Time moves only once the event loop has run SETTLE_ROUNDS rounds with no participant awake
    and nothing entering or leaving one: work that is ready to run but not yet a participant
    (a task just created, a cache read between two steps) gets there first, as it would in
    real time, where it takes microseconds and the wait takes seconds.
    """

    __slots__ = ("_activity", "_awake", "_settling", "_sleepers")

    #: Loop rounds without activity before time jumps (a lookup's steps before its HTTP call
    #: take a few rounds: task start, cache read, flight task start, lock).
    SETTLE_ROUNDS = 16

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        super().__init__(start)
        self._awake = 0
        self._activity = 0
        self._settling = False
        self._sleepers: list[tuple[float, int, asyncio.Future[None], bool]] = []

    @contextlib.contextmanager
    def participant(self) -> Iterator[None]:
        self._awake += 1
        self._activity += 1
        token = _PARTICIPANT.set(True)
        try:
            yield
        finally:
            _PARTICIPANT.reset(token)
            self._awake -= 1
            self._advance()

    async def sleep(self, seconds: float) -> None:
        counted = _PARTICIPANT.get()
        if self._awake == 0 and not self._sleepers:
            # Nobody takes part in lockstep: behave like VirtualClock.
            await super().sleep(seconds)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), id(woken), woken, counted))
        if counted:
            self._awake -= 1
        self._advance()
        try:
            await woken
        finally:
            if not woken.done():  # cancelled while asleep: forget the wake-up
                woken.cancel()
                if counted:
                    self._awake += 1

    def _advance(self) -> None:
        """Move time once the loop has settled (see the class docstring)."""
        self._activity += 1
        if self._settling or self._awake or not self._sleepers:
            return
        self._settling = True
        asyncio.get_running_loop().call_soon(self._settle, self._activity, self.SETTLE_ROUNDS)

    def _settle(self, activity: int, rounds: int) -> None:
        if self._awake:
            self._settling = False  # a participant woke: its sleep or exit will call again
            return
        if activity != self._activity:
            rounds = self.SETTLE_ROUNDS  # something happened meanwhile: start counting again
        if rounds > 0:
            asyncio.get_running_loop().call_soon(self._settle, self._activity, rounds - 1)
            return
        self._settling = False
        self._jump()

    def _jump(self) -> None:
        while self._awake == 0 and self._sleepers:
            self._sleepers = [s for s in self._sleepers if not s[2].done()]
            heapq.heapify(self._sleepers)
            if not self._sleepers:
                return
            self.now = max(self.now, self._sleepers[0][0])
            self._expire()
            while self._sleepers and self._sleepers[0][0] <= self.now:
                _, _, future, counted = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
                    if counted:
                        self._awake += 1
