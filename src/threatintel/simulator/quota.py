"""Per-key request quotas with the vendors' windows, on an injectable clock.

    quotas = QuotaTracker(clock=fake_clock)
    decision = quotas.acquire("virustotal", key, (Window.per_minute(4), Window.per_day(500)))
    if not decision.allowed:
        wait = decision.retry_after

Window kinds, as the vendors describe them:

- ``sliding`` (minute, hour): at most ``limit`` requests in *any* span of ``seconds``
  (VirusTotal: "at most 4 requests of any nature in any given 1 minute time frame").
- ``fixed`` (day): a counter that resets at boundaries aligned to multiples of ``seconds`` since
  the epoch, so a day resets at 00:00 UTC and a scaled-down "day" of 2 s at every even second.
- ``month``: a calendar month, resetting at 00:00 UTC on the 1st.

Only granted requests are counted; a refused (429) request consumes nothing. Every window of a
request must have room or none of them is charged. The vendor handlers charge a request after
authentication and before validation: a 401/403 costs nothing (there is no account to bill), while
a 400, 404 or 422 costs one request, since the vendors meter calls, not hits.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

MINUTE = 60.0
HOUR = 3_600.0
DAY = 86_400.0
MONTH = 30 * DAY  # nominal length, used only when a calendar month is scaled down

WindowKind = Literal["sliding", "fixed", "month"]


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    limit: int
    seconds: float
    kind: WindowKind = "fixed"

    def __post_init__(self) -> None:
        if self.limit < 0 or self.seconds <= 0:
            raise ValueError(f"window {self.name!r}: need limit >= 0 and seconds > 0")

    @classmethod
    def per_minute(cls, limit: int, *, seconds: float = MINUTE) -> Window:
        return cls("minute", limit, seconds, "sliding")

    @classmethod
    def per_hour(cls, limit: int, *, seconds: float = HOUR) -> Window:
        return cls("hour", limit, seconds, "sliding")

    @classmethod
    def per_day(cls, limit: int, *, seconds: float = DAY) -> Window:
        return cls("day", limit, seconds, "fixed")

    @classmethod
    def per_month(cls, limit: int, *, seconds: float | None = None) -> Window:
        """A calendar month, or with ``seconds`` a fixed window of that length."""
        if seconds is None:
            return cls("month", limit, MONTH, "month")
        return cls("month", limit, seconds, "fixed")

    def scaled(self, factor: float) -> Window:
        """The same window ``factor`` times as long (a month becomes a fixed window)."""
        kind: WindowKind = "fixed" if self.kind == "month" else self.kind
        return replace(self, seconds=self.seconds * factor, kind=kind)

    def period(self, now: float) -> tuple[float, float]:
        """Start and end of the fixed or calendar period containing ``now``."""
        if self.kind == "month":
            moment = datetime.fromtimestamp(now, UTC)
            first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
            year, month = divmod(moment.month, 12)
            following = datetime(moment.year + year, month + 1, 1, tzinfo=UTC)
            return first.timestamp(), following.timestamp()
        start = math.floor(now / self.seconds) * self.seconds
        return start, start + self.seconds


@dataclass(frozen=True, slots=True)
class WindowUsage:
    window: Window
    used: int
    reset_at: float  # when the window next frees room (sliding) or restarts (fixed, month)
    retry_after: float  # seconds until this window could grant the request that was asked for

    @property
    def remaining(self) -> int:
        return max(0, self.window.limit - self.used)


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    usages: tuple[WindowUsage, ...] = ()
    blocking: WindowUsage | None = None  # the window with the longest wait when refused

    @property
    def retry_after(self) -> float:
        return self.blocking.retry_after if self.blocking else 0.0

    def usage(self, name: str) -> WindowUsage | None:
        return next((u for u in self.usages if u.window.name == name), None)


class ManualClock:
    """A clock for tests: epoch seconds that move only when told (``advance`` or ``now = ...``)."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_StateKey = tuple[str, str, str, str, float]


class QuotaTracker:
    """Counts requests per (scope, key, window); thread-safe."""

    __slots__ = ("_clock", "_fixed", "_lock", "_sliding")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sliding: dict[_StateKey, deque[float]] = {}
        self._fixed: dict[_StateKey, tuple[float, int]] = {}

    def acquire(
        self, scope: str, key: str, windows: Sequence[Window], cost: int = 1
    ) -> QuotaDecision:
        """Charge ``cost`` requests to every window, or none if one of them is full."""
        now = self._clock()
        with self._lock:
            before = [self._usage(scope, key, window, now, cost) for window in windows]
            full = [u for u in before if u.used + cost > u.window.limit]
            if full:
                blocking = max(full, key=lambda u: u.retry_after)
                return QuotaDecision(False, tuple(before), blocking)
            for window in windows:
                self._charge(scope, key, window, now, cost)
            after = tuple(self._usage(scope, key, window, now, 1) for window in windows)
            return QuotaDecision(True, after)

    def usage(self, scope: str, key: str, window: Window) -> WindowUsage:
        with self._lock:
            return self._usage(scope, key, window, self._clock(), 1)

    def reset(self) -> None:
        with self._lock:
            self._sliding.clear()
            self._fixed.clear()

    @staticmethod
    def _key(scope: str, key: str, window: Window) -> _StateKey:
        # The limit is not part of the identity: a test may tighten a limit mid-run and keep
        # the requests already counted.
        return (scope, key, window.name, window.kind, window.seconds)

    def _usage(self, scope: str, key: str, window: Window, now: float, cost: int) -> WindowUsage:
        state_key = self._key(scope, key, window)
        if window.kind == "sliding":
            stamps = self._sliding.get(state_key, deque())
            while stamps and stamps[0] <= now - window.seconds:
                stamps.popleft()
            used = len(stamps)
            reset_at = stamps[0] + window.seconds if stamps else now
            excess = used + cost - window.limit
            if excess <= 0:
                retry_after = 0.0
            elif excess <= used:
                retry_after = stamps[excess - 1] + window.seconds - now
            else:  # more than the whole window could ever hold
                retry_after = window.seconds
            return WindowUsage(window, used, reset_at, retry_after)
        start, end = window.period(now)
        period_start, count = self._fixed.get(state_key, (start, 0))
        used = count if period_start == start else 0
        retry_after = 0.0 if used + cost <= window.limit else end - now
        return WindowUsage(window, used, end, retry_after)

    def _charge(self, scope: str, key: str, window: Window, now: float, cost: int) -> None:
        state_key = self._key(scope, key, window)
        if window.kind == "sliding":
            self._sliding.setdefault(state_key, deque()).extend([now] * cost)
            return
        start, _ = window.period(now)
        period_start, count = self._fixed.get(state_key, (start, 0))
        self._fixed[state_key] = (start, (count if period_start == start else 0) + cost)
