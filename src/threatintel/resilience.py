"""Resilience primitives: each one small class with one verb and an injectable clock.

The rate limiter lives in quota/ (with its memory, SQLite and Redis stores); this module holds the
circuit breaker and the retry policy.

    breaker = CircuitBreaker("virustotal", failure_rate=0.8, min_calls=10, reset_after=60.0)
    async with breaker:            # raises CircuitOpen while open; records the outcome
        result = await provider.lookup(indicator, key)
    await breaker.wait(5.0)        # refused? wait for the next probe if it is due soon

A breaker is for outages, not for noise. It keeps the outcomes of the last ``window`` seconds
of calls and opens when at least ``min_calls`` of them are recorded and at least
``failure_rate`` of those failed (the sliding window, minimum number of calls and failure
rate threshold of resilience4j, and Polly's advanced breaker). Only failures that say the
provider itself is unwell count (timeouts, connection failures, 5xx); "not found", a bad
request or a rejected key do not move it.

Why 80% of at least 10 calls by default: an outage fails every call, so it still opens after
10; noise seldom gets there by chance (with 30% of calls failing, a window of 10 to 60 calls
is half failures at some point in one run of five, 80% failures in one run of 600). In steady
state, with the failures of retried lookups struck out (below), 80% means that most lookups
fail even after their retries: the provider is of no use.

A lookup is judged by its result, not by its attempts: every failed attempt is recorded at
once (so a dead service opens the breaker after ``min_calls`` calls, however many retries each
lookup has left), but when a later attempt of the same lookup succeeds, its earlier failures
are struck out and the lookup counts as one success. A lookup is the task that makes the
attempts (the pipeline runs each one as its own task). So 30% transient faults, which the
retries absorb, leave a window of successes; a provider answering nothing fills it with
failures.

Once open, calls fail fast with CircuitOpen for a cool-down; then one probe is let through
(half-open): success closes the breaker and forgets the window, failure re-opens it for twice
the cool-down. The first cool-down is short (``first_reset_after``) so a blip recovers within
seconds; it doubles up to ``reset_after`` so a dead service is asked once a minute at most.
Calls that were already in flight when the breaker opened do not close or re-open it when they
finish: only the probe decides. ``wait`` lets a refused caller wait (holding nothing) for the
probe's outcome when the probe is due soon, and try again.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from types import TracebackType

from threatintel.clock import Clock, SystemClock
from threatintel.errors import (
    CircuitOpen,
    ConnectionFailed,
    ProviderTimeout,
    QuotaExhausted,
    RateLimited,
    UpstreamError,
)

DEFAULT_FAILURE_RATE = 0.8
DEFAULT_MIN_CALLS = 10
DEFAULT_WINDOW = 60.0
DEFAULT_FIRST_RESET_AFTER = 1.0
DEFAULT_RESET_AFTER = 60.0
#: The window keeps at most this many outcomes, so a busy provider's record stays small.
MAX_OUTCOMES = 200

#: The failures that count against a provider's health.
TRIPPING_ERRORS: tuple[type[BaseException], ...] = (
    ProviderTimeout,
    ConnectionFailed,
    UpstreamError,
)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fail fast while a provider is down; probe after a cool-down that grows."""

    __slots__ = (
        "_clock",
        "_cool_down",
        "_failures",
        "_opened_at",
        "_outcomes",
        "_probe",
        "_settled",
        "failure_rate",
        "first_reset_after",
        "min_calls",
        "provider",
        "reset_after",
        "window",
    )

    def __init__(
        self,
        provider: str,
        *,
        failure_rate: float = DEFAULT_FAILURE_RATE,
        min_calls: int = DEFAULT_MIN_CALLS,
        window: float = DEFAULT_WINDOW,
        reset_after: float = DEFAULT_RESET_AFTER,
        first_reset_after: float = DEFAULT_FIRST_RESET_AFTER,
        clock: Clock | None = None,
    ) -> None:
        if not 0 < failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if min_calls < 1:
            raise ValueError("min_calls must be at least 1")
        if window <= 0 or reset_after <= 0 or first_reset_after <= 0:
            raise ValueError("window and cool-downs must be positive")
        self.provider = provider
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.window = window
        self.reset_after = reset_after
        self.first_reset_after = min(first_reset_after, reset_after)
        self._clock: Clock = clock if clock is not None else SystemClock()
        # (time, the lookup's task, failed): the recent outcomes, oldest first.
        self._outcomes: deque[tuple[float, object, bool]] = deque()
        self._failures = 0
        self._opened_at: float | None = None
        self._cool_down = self.first_reset_after
        self._probe: asyncio.Task[object] | None = None
        self._settled: asyncio.Future[None] | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock.time() - self._opened_at >= self._cool_down:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def retry_after(self) -> float:
        """Seconds until the breaker lets a probe through (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._cool_down - (self._clock.time() - self._opened_at))

    async def __aenter__(self) -> CircuitBreaker:
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probe):
            raise self._refusal()
        if state is BreakerState.HALF_OPEN:
            self._probe = asyncio.current_task()
        return self

    def check(self) -> None:
        """Inside ``async with``: raise CircuitOpen if the breaker opened since we entered
        (say, while we waited for a rate-limit slot), unless we are the probe. Half-open with
        no probe in flight, this call becomes the probe: several lookups that waited for quota
        together must not all go through at once, and the outcome must count as the probe's."""
        if self._opened_at is None:
            return
        task = asyncio.current_task()
        if self._probe is task:
            return
        if self.state is BreakerState.HALF_OPEN and self._probe is None:
            self._probe = task
            return
        raise self._refusal()

    async def wait(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until a call may pass: True once the breaker has
        closed or a probe may be made; False at once when the next probe is due too late."""
        deadline = self._clock.time() + timeout
        while self._opened_at is not None:
            left = deadline - self._clock.time()
            if self._probe is not None:
                if left <= 0 or not await self._probe_outcome(left):
                    return False
                continue
            due = self.retry_after
            if due <= 0:
                return True  # half-open with no probe yet: the caller may be the probe
            if due > left:
                return False
            await self._clock.sleep(due)
        return True

    async def _probe_outcome(self, within: float) -> bool:
        """Wait for the probe in flight to finish (True), or ``within`` seconds (False)."""
        settled = self._settled
        if settled is None:
            settled = self._settled = asyncio.get_running_loop().create_future()
        # The probe may itself wait minutes for a quota slot: bound the wait on our clock.
        timer = asyncio.ensure_future(self._clock.sleep(within))
        try:
            # asyncio.wait never cancels what it waits for, so other waiters keep `settled`.
            await asyncio.wait((settled, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return settled.done()

    def _refusal(self) -> CircuitOpen:
        return CircuitOpen(
            self.provider,
            f"{self.provider}: circuit open after repeated failures; "
            f"retrying in {self.retry_after:.0f}s",
            retry_after=self.retry_after,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        if self._probe is not None and self._probe is task:
            self._probe = None
            if exc is None:
                self._close()
            elif isinstance(exc, TRIPPING_ERRORS):
                self._open(min(self._cool_down * 2, self.reset_after))
            # Any other end (a rejected key, a cancel) leaves it half-open for the next caller.
            if self._settled is not None:
                self._settled.set_result(None)
                self._settled = None
            return
        if self._opened_at is not None:
            return  # a call admitted before the breaker opened: the probe decides, not it
        if exc is None:
            if self._failures:
                self._forgive(task)
            self._record(task, failed=False)
        elif isinstance(exc, TRIPPING_ERRORS):
            self._record(task, failed=True)
            calls = len(self._outcomes)
            if calls >= self.min_calls and self._failures >= self.failure_rate * calls:
                self._open(self.first_reset_after)
        # Any other error (bad request, auth, quota) leaves the health record as it was.

    def _record(self, owner: object, *, failed: bool) -> None:
        now = self._clock.time()
        outcomes = self._outcomes
        outcomes.append((now, owner, failed))
        self._failures += failed
        while outcomes and (outcomes[0][0] <= now - self.window or len(outcomes) > MAX_OUTCOMES):
            self._failures -= outcomes.popleft()[2]

    def _forgive(self, owner: object) -> None:
        """Strike out the failed attempts of a lookup that has now succeeded."""
        kept = deque(o for o in self._outcomes if not (o[2] and o[1] is owner))
        self._failures -= len(self._outcomes) - len(kept)
        self._outcomes = kept

    def _open(self, cool_down: float) -> None:
        self._opened_at = self._clock.time()
        self._cool_down = cool_down
        self._outcomes.clear()
        self._failures = 0

    def _close(self) -> None:
        self._opened_at = None
        self._cool_down = self.first_reset_after


#: Retries after the first attempt. Four, not the customary three: under 30% transient faults a
#: lookup fails every attempt with probability 0.3**(retries+1), 0.8% with three retries (about
#: 2 of 100 mixed indicators lose a source, bench/bench_faults.py), 0.24% with four. The extra
#: attempt is only ever spent on a lookup that has already failed four times.
DEFAULT_MAX_RETRIES = 4
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_CAP = 20.0
DEFAULT_MAX_RETRY_AFTER = 60.0


class RetryPolicy:
    """Which failures are worth another attempt, and how long to wait before it.

        policy = RetryPolicy(max_retries=4)
        wait = policy.wait(exc, attempt=0)   # None: give up now; else seconds to wait

    Retried: timeouts, connection failures, 5xx and unreadable bodies (exponential backoff
    with full jitter), and 429s on a short window whose Retry-After is at most
    ``max_retry_after`` (that wait exactly, the error chooses the backoff). Never retried:
    400/401/403/404/422, exhausted daily or monthly quotas, an open circuit. Written here
    rather than with stamina because the wait must run on the engine's injectable clock.
    """

    __slots__ = ("_random", "backoff_base", "backoff_cap", "max_retries", "max_retry_after")

    def __init__(
        self,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        random: Callable[[], float] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self._random = random if random is not None else _random.random

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        ceiling: float = min(self.backoff_cap, self.backoff_base * 2.0**attempt)
        return self._random() * ceiling

    def wait(self, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up."""
        if attempt >= self.max_retries:
            return None
        if isinstance(exc, QuotaExhausted | CircuitOpen):
            return None
        if isinstance(exc, RateLimited):
            if exc.retry_after is None:
                return self.backoff(attempt)
            return exc.retry_after if exc.retry_after <= self.max_retry_after else None
        if isinstance(exc, ProviderTimeout | ConnectionFailed):
            return self.backoff(attempt)
        if isinstance(exc, UpstreamError) and (exc.status_code is None or exc.status_code >= 500):
            return self.backoff(attempt)
        return None
