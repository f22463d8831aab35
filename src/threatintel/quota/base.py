"""What every quota store and the limiter share: windows, grants, usage and the store protocol.

A grant counts in every window of the key or in none (the store decides atomically), so the
vendor never sees a request we could have predicted it would refuse. Stores: MemoryQuotaStore
(``quota.memory``), SQLiteQuotaStore (``quota.sqlite``), RedisQuotaStore (``quota.redis``), and
FallbackQuotaStore (``quota.fallback``) to stand in while a shared one is down.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from threatintel.errors import ThreatIntelError

MINUTE = 60.0
HOUR = 3_600.0
DAY = 86_400.0
#: A calendar month's nominal length; its real boundaries are the 1st, 00:00 UTC.
MONTH = 30 * DAY

#: ``Grant.exhausted`` for a bucket blocked by ``QuotaStore.block`` (a 429 correction).
BLOCKED = "blocked"
#: Where a window's limit came from (``WindowUsage.source``): a setting the user set, the
#: vendor's own statement for that key, or the free-tier default.
CONFIGURED = "configured"
LEARNED = "learned"
DEFAULT = "default"
#: Label of the bucket used without an API key (OTX and IPinfo accept anonymous calls).
ANONYMOUS = "anonymous"
#: No block outlives the longest vendor window (a month) with margin. A stored end past this,
#: or one that is not a finite number, is a bad row (a hostile Retry-After kept by an older
#: version, a hand edit): the stores ignore and clear it rather than fail every lookup.
MAX_BLOCK = 32 * DAY


class QuotaStoreUnavailable(ThreatIntelError):
    """The shared quota store cannot be reached; RateLimiter falls back to a local budget."""


@dataclass(frozen=True, slots=True)
class Window:
    """One limit a vendor enforces, e.g. ``Window.per_minute(4)`` or ``Window.per_day(500)``.

    Sliding windows (minute, hour) allow ``limit`` grants in any span of ``seconds``. Fixed
    windows count from a boundary: a ``calendar`` day starts at 00:00 UTC and a calendar month at
    00:00 UTC on the 1st (real month lengths); other fixed windows start at multiples of
    ``seconds`` since the epoch, which is what ``scaled`` produces for tests and benchmarks.
    """

    name: str
    limit: int
    seconds: float
    sliding: bool = True
    calendar: bool = False

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"window {self.name!r}: limit must be at least 1")
        if not 0 < self.seconds < math.inf:
            raise ValueError(f"window {self.name!r}: seconds must be positive and finite")
        if self.calendar and (self.sliding or self.name not in ("day", "month")):
            raise ValueError("calendar windows are fixed windows named 'day' or 'month'")
        if self.calendar and self.name == "day" and self.seconds != DAY:
            raise ValueError("a calendar day lasts 86400 seconds")

    @classmethod
    def per_minute(cls, limit: int, seconds: float = MINUTE) -> Window:
        return cls("minute", limit, seconds, sliding=True)

    @classmethod
    def per_hour(cls, limit: int, seconds: float = HOUR) -> Window:
        return cls("hour", limit, seconds, sliding=True)

    @classmethod
    def per_day(cls, limit: int, seconds: float | None = None) -> Window:
        return cls("day", limit, DAY if seconds is None else seconds, False, seconds is None)

    @classmethod
    def per_month(cls, limit: int, seconds: float | None = None) -> Window:
        return cls("month", limit, MONTH if seconds is None else seconds, False, seconds is None)

    def scaled(self, factor: float) -> Window:
        """The same limit over ``seconds * factor``, aligned to epoch multiples (not calendars)."""
        if not 0 < factor < math.inf:
            raise ValueError("factor must be positive and finite")
        return Window(self.name, self.limit, self.seconds * factor, self.sliding, calendar=False)

    @property
    def long(self) -> bool:
        """Exhausting this window fails fast instead of waiting."""
        return not self.sliding

    def window_id(self, now: float) -> int:
        """Which fixed window ``now`` falls in (months count from year 0)."""
        if self.sliding:
            raise ValueError(f"window {self.name!r} is sliding and has no fixed id")
        if self.calendar and self.name == "month":
            day = datetime.fromtimestamp(now, UTC)
            return day.year * 12 + day.month - 1
        index = math.floor(now / self.seconds)
        # The division can land an ulp off an integer; never report a window that has not
        # started yet or has already ended, or reset_at would disagree with the counter.
        if index * self.seconds > now:
            index -= 1
        elif (index + 1) * self.seconds <= now:
            index += 1
        return index

    def reset_at(self, now: float) -> float:
        """Fixed windows: the start of the next window. Sliding: when a grant made now expires."""
        if self.sliding:
            return now + self.seconds
        index = self.window_id(now)
        if self.calendar and self.name == "month":
            year, month = divmod(index + 1, 12)
            return datetime(year, month + 1, 1, tzinfo=UTC).timestamp()
        return (index + 1) * self.seconds


@dataclass(frozen=True, slots=True)
class Grant:
    """A store's answer to one acquire.

    Not granted: ``wait`` is the earliest time worth asking again; ``exhausted`` names the spent
    long window (or ``BLOCKED``) and ``reset_at`` is when it ends; ``exhausted`` is None when
    only short windows are full. Granted: ``at`` is the instant the store counted it at (later
    than the caller's when the bucket's time has moved on), which ``refund`` needs; ``origin``
    is the store that counted it, set by FallbackQuotaStore.
    """

    granted: bool
    wait: float = 0.0
    exhausted: str | None = None
    reset_at: float | None = None
    # Bookkeeping for refunds, not part of the answer: grants compare equal without them.
    at: float | None = field(default=None, compare=False)
    origin: QuotaStore | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """One window of one key: ``reset_at`` is the next fixed boundary, or for a sliding window
    the moment its oldest live grant stops counting (None when it holds none)."""

    window: str
    limit: int
    used: int
    remaining: int
    reset_at: float | None
    source: str = DEFAULT  # CONFIGURED, LEARNED or DEFAULT: set by the limiter


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """The budget left on one key, named by its fingerprint (or ``"anonymous"``)."""

    key: str
    windows: tuple[WindowUsage, ...]
    blocked_until: float | None


class QuotaStore(Protocol):
    """Where grants are counted; the arbiter between every coroutine and instance.

    ``acquire`` is atomic: a grant counts in all ``windows`` or nothing is counted. Times are the
    caller's clock (never the store's), so virtual clocks work and instances agree.
    """

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant: ...

    async def block(self, bucket: str, until: float) -> None: ...

    async def usage(
        self, bucket: str, windows: Sequence[Window], now: float
    ) -> list[WindowUsage]: ...

    async def blocked_until(self, bucket: str, now: float) -> float | None: ...

    async def refund(self, bucket: str, windows: Sequence[Window], grant: Grant) -> None:
        """Uncount ``grant`` (made at ``grant.at``) in every window where it still counts."""
        ...

    async def learned_limits(self, bucket: str, now: float) -> dict[str, int]:
        """The limits the vendor stated for ``bucket`` (window name → limit) and kept with
        ``keep_limits``, while they last at ``now``; {} when none."""
        ...

    async def keep_limits(self, bucket: str, limits: Mapping[str, int], until: float) -> None:
        """Keep the limits the vendor stated for ``bucket`` until ``until`` (replacing any),
        so the next process starts from them instead of the defaults."""
        ...

    async def aclose(self) -> None: ...


def encode_limits(limits: Mapping[str, int], until: float) -> str:
    """Learned limits as a store keeps them: ``{"until": t, "limits": {...}}``."""
    return json.dumps({"until": until, "limits": dict(limits)}, separators=(",", ":"))


def decode_limits(raw: object, now: float) -> dict[str, int]:
    """Learned limits from a stored value while they last at ``now``; {} for anything else
    (expired, garbage, a row written by a hand edit): the limiter then uses its defaults."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        data = json.loads(text) if isinstance(text, str) and len(text) <= 4096 else None
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    until, limits = data.get("until"), data.get("limits")
    if not isinstance(until, int | float) or not isinstance(limits, dict) or until <= now:
        return {}
    return {
        str(name): value
        for name, value in limits.items()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1
    }


def block_end(until: object, now: float) -> float | None:
    """A stored block's end if it is still running and believable, else None (over, garbage,
    non-finite, or further away than MAX_BLOCK): the one judgement every store applies."""
    try:
        end = float(until)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(end) or end <= now or end - now > MAX_BLOCK:
        return None
    return end
