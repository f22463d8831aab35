"""Resilience primitives: each one small class with one verb and an injectable clock.

The rate limiter lives in quota.py (it has memory and Redis stores); this module holds the
circuit breaker and the retry policy.

    breaker = CircuitBreaker("virustotal", failure_threshold=5, reset_after=60.0)
    async with breaker:            # raises CircuitOpen while open; records the outcome
        result = await provider.lookup(indicator, key)

A breaker counts consecutive failures that say the provider itself is unwell (timeouts,
connection failures, 5xx). After ``failure_threshold`` of them it opens: calls fail fast with
CircuitOpen for ``reset_after`` seconds. Then one probe is let through (half-open): success
closes it, failure opens it again. Answers such as "not found", a bad request or a rejected key
say nothing about the provider's health and do not move it. Calls that were already in flight
when the breaker opened do not close or re-open it when they finish: only the probe decides.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Callable
from enum import StrEnum
from types import TracebackType

from threatintel.errors import (
    CircuitOpen,
    ConnectionFailed,
    ProviderTimeout,
    QuotaExhausted,
    RateLimited,
    UpstreamError,
)

Clock = Callable[[], float]

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_AFTER = 60.0

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
    """Fail fast while a provider is down; probe once after a cool-down."""

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_probe",
        "failure_threshold",
        "provider",
        "reset_after",
    )

    def __init__(
        self,
        provider: str,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_after: float = DEFAULT_RESET_AFTER,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_after <= 0:
            raise ValueError("reset_after must be positive")
        self.provider = provider
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe: asyncio.Task[object] | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def retry_after(self) -> float:
        """Seconds until the breaker lets a probe through (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    async def __aenter__(self) -> CircuitBreaker:
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probe):
            raise self._refusal()
        if state is BreakerState.HALF_OPEN:
            self._probe = asyncio.current_task()
        return self

    def check(self) -> None:
        """Inside ``async with``: raise CircuitOpen if the breaker opened since we entered
        (say, while we waited for a rate-limit slot), unless we are the probe."""
        if (
            self._opened_at is not None
            and self._probe is not asyncio.current_task()
            and (self.state is BreakerState.OPEN or self._probe is not None)
        ):
            raise self._refusal()

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
        is_probe = self._probe is not None and self._probe is asyncio.current_task()
        if is_probe:
            self._probe = None
        elif self._opened_at is not None:
            return  # a call admitted before the breaker opened: the probe decides, not it
        if exc is None:
            self._failures = 0
            self._opened_at = None
        elif isinstance(exc, TRIPPING_ERRORS):
            self._failures += 1
            if is_probe or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
        # Any other error (bad request, auth, quota) leaves the health record as it was.


DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_CAP = 20.0
DEFAULT_MAX_RETRY_AFTER = 60.0


class RetryPolicy:
    """Which failures are worth another attempt, and how long to wait before it.

        policy = RetryPolicy(max_retries=3)
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
        max_retries: int = 3,
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
