"""What the engine reports besides enrichments: lookup events, provider quotas, and the
results it makes up itself (a pending source, an unscored verdict).

Kept apart from ``engine`` so that hooks and adapters can name these types cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from threatintel.models import Enrichment, SourceResult, SourceStatus, Verdict, VerdictLabel
from threatintel.quota import KeyUsage
from threatintel.resilience import BreakerState


@dataclass(frozen=True, slots=True)
class LookupEvent:
    """One provider call as seen by the engine, for logs and metrics hooks."""

    provider: str
    indicator_type: str
    status: SourceStatus
    duration: float
    cached: bool = False


class LookupHook(Protocol):
    def __call__(self, event: LookupEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One request that left for a provider (each attempt of a retried lookup is one; cache
    hits and callers sharing another's flight make none), for logs and metrics.

    ``key`` is the key's fingerprint (``"anonymous"`` without one), never the key;
    ``status`` the attempt's outcome, ``http_status`` the vendor's code when one came back,
    ``seconds`` the call alone (no quota wait); ``final`` is False when it will be retried.
    """

    provider: str
    key: str
    status: SourceStatus
    seconds: float
    http_status: int | None = None
    final: bool = True


#: Subscribers to UpstreamCall events (the Service's metrics).
CallHook = Callable[[UpstreamCall], None]


#: Called with each enrichment as soon as it is complete (progress bars, streaming output).
ResultHook = Callable[[Enrichment], None]


@dataclass(frozen=True, slots=True)
class ProviderQuota:
    """One provider's budget and health, for `threatintel quota` and /health."""

    provider: str
    configured: bool
    breaker: BreakerState
    breaker_retry_after: float
    keys: list[KeyUsage]
    degraded: bool = False  # the shared quota store is unreachable: local numbers


def unscored() -> Verdict:
    """The verdict of an indicator whose scoring failed (a bug): it claims nothing, and its
    sources are kept as they came back."""
    return Verdict(
        label=VerdictLabel.UNKNOWN, score=0, confidence=0, reasons=["internal error while scoring"]
    )


def pending(name: str, *, started: bool) -> SourceResult:
    message = (
        "no answer yet at the caller's deadline; the lookup goes on and its answer is cached"
        if started
        else "not asked: the caller's deadline had passed"
    )
    return SourceResult(source=name, status=SourceStatus.PENDING, message=message)
