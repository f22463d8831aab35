"""The exception tree.

    ThreatIntelError                 catch-all for callers of the library
    ├── ConfigError                  bad setting or missing dependency: fail at start-up (exit 3)
    ├── RequestError                 the caller asked for something unusable (exit 2 / HTTP 4xx)
    │   ├── UnknownProvider          a provider name not in the registry; name, choices
    │   ├── InvalidIndicator         input could not be classified; value, reason
    │   └── NoIndicators             an input held nothing to analyse
    ├── ProviderError                raised in providers; the engine makes it a SourceStatus
    │   ├── AuthenticationFailed     401/403: the key is wrong or not allowed      → auth_failed
    │   ├── RateLimited              429 on a short window; retry_after known     → rate_limited
    │   │   └── QuotaExhausted       a daily/monthly quota is spent; reset_at     → quota_exhausted
    │   ├── BadRequest               400/422: the vendor refused the indicator    → error
    │   ├── UpstreamError            5xx, unexpected status, malformed body       → error
    │   ├── ConnectionFailed         connect error, reset, protocol error         → error
    │   ├── ProviderTimeout          no answer within REQUEST_TIMEOUT             → timeout
    │   └── CircuitOpen              the breaker refused the call                 → circuit_open
    └── CacheError                   a cache backend failed; the engine logs it and goes on uncached

Only ConfigError and RequestError reach callers of the engine; every ProviderError becomes a
status in the answer. A RequestError is the caller's to fix and says nothing of the installation,
so every door answers it as a bad request (CLI exit 2, HTTP 4xx), never as a configuration
fault. (BadRequest is the other direction: a vendor refusing what we sent it.) Messages are
written for humans and are safe to show: they never carry an API key, a URL with credentials or
a vendor's raw body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from datetime import datetime

    from threatintel.models import Rejected, SourceStatus


class _Status:
    """A ProviderError class's SourceStatus, named by value and looked up on first read.

    errors.py is imported by every command, `threatintel version` included, and must not load
    the result models (pydantic) just to name a status: issue 9, start-up
    (tests/test_lazy_imports.py checks it). Reads like a class attribute: ``RateLimited.status``
    and ``exc.status`` are both the SourceStatus member.
    """

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    @overload
    def __get__(self, instance: None, owner: type) -> SourceStatus: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> SourceStatus: ...
    def __get__(self, instance: object, owner: type | None = None) -> SourceStatus:
        from threatintel.models import SourceStatus

        return SourceStatus(self.value)


class ThreatIntelError(Exception):
    """Base class of every error threatintel raises on purpose."""


class ConfigError(ThreatIntelError):
    """A setting is invalid or a required piece is missing."""


class RequestError(ThreatIntelError):
    """The request itself is unusable (not the settings): the caller must change it."""


class UnknownProvider(RequestError):
    """A provider name that is not one of the configured sources."""

    def __init__(self, name: str, choices: Sequence[str]) -> None:
        self.name = name
        self.choices = tuple(choices)
        super().__init__(f"unknown provider {name!r}; choose from {', '.join(self.choices)}")


class InvalidIndicator(RequestError):
    """The input is not an indicator we can classify."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"{shown!r} is not a usable indicator: {reason}")


class NoIndicators(RequestError):
    """The input held no indicator at all; ``rejected`` says what was skipped and why."""

    def __init__(self, rejected: Sequence[Rejected] = ()) -> None:
        self.rejected = list(rejected)
        reasons = "; ".join(f"{r.candidate}: {r.reason}" for r in self.rejected[:3])
        super().__init__("no indicators found in the input" + (f" ({reasons})" if reasons else ""))


class ProviderError(ThreatIntelError):
    """A provider call failed; ``status`` says how the result reports it."""

    status = _Status("error")

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        sent: bool = True,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after
        #: False only when the request provably never reached the vendor (DNS failure,
        #: connection refused): the vendor counted nothing, so neither does the quota.
        self.sent = sent
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)


class AuthenticationFailed(ProviderError):
    """The vendor rejected the key (missing, wrong, revoked, or not entitled)."""

    status = _Status("auth_failed")


class RateLimited(ProviderError):
    """The vendor throttled us on a short window; ``retry_after`` seconds, when known."""

    status = _Status("rate_limited")

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retry_after: float | None = None,
        reset_at: datetime | None = None,
        status_code: int | None = 429,
        error_code: str | None = None,
    ) -> None:
        super().__init__(
            provider,
            message,
            status_code=status_code,
            error_code=error_code,
            retry_after=retry_after,
        )
        self.reset_at = reset_at


class QuotaExhausted(RateLimited):
    """A long-window (daily/monthly) quota is spent; ``reset_at`` says when it comes back."""

    status = _Status("quota_exhausted")


class BadRequest(ProviderError):
    """The vendor refused the request as malformed (400/422)."""


class UpstreamError(ProviderError):
    """The vendor answered with a server error, an unexpected status or an unreadable body."""


class ConnectionFailed(ProviderError):
    """The connection could not be made or broke mid-answer."""


class ProviderTimeout(ProviderError):
    """No complete answer within the request timeout."""

    status = _Status("timeout")


class CircuitOpen(ProviderError):
    """The provider's circuit breaker is open; the call was not made."""

    status = _Status("circuit_open")


class CacheError(ThreatIntelError):
    """A cache backend failed."""
