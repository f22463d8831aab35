"""What the engine reports besides enrichments: lookup events, provider quotas, and the
results it makes up itself (a pending source, an unscored verdict).

Kept apart from ``engine`` so that hooks and adapters can name these types cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from threatintel.models import (
    Enrichment,
    Indicator,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)
from threatintel.quota import KeyUsage
from threatintel.resilience import BreakerState

if TYPE_CHECKING:
    from threatintel.providers import Provider
    from threatintel.settings import Settings


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


def decide(
    indicator: Indicator,
    names: Sequence[str],
    providers: Mapping[str, Provider],
    settings: Settings,
) -> dict[str, SourceResult | None]:
    """Each source's answer when no lookup is needed (or allowed), else None: ask it.
    Whether the indicator is public is checked once for all of them, and only when one
    of them looks it up (an address or host check is the dearest part of a warm lookup)."""
    from threatintel.indicators import non_public_reason

    decided: dict[str, SourceResult | None] = {}
    checked = settings.query_private
    reason: str | None = None
    for name in names:
        provider = providers[name]
        if not indicator.queryable or indicator.type not in provider.supports:
            decided[name] = SourceResult(
                source=name,
                status=SourceStatus.NOT_APPLICABLE,
                message=f"{provider.title} does not look up {indicator.type.value} indicators",
            )
            continue
        if not checked:
            reason = non_public_reason(indicator, settings.internal_domains)
            checked = True
        if reason:
            decided[name] = SourceResult(
                source=name,
                status=SourceStatus.NOT_QUERIED_PRIVATE,
                message=f"not sent to third parties: {reason}",
            )
        elif provider.requires_key and not settings.api_keys(name):
            decided[name] = SourceResult(
                source=name,
                status=SourceStatus.NOT_CONFIGURED,
                message=f"no {name.upper()}_API_KEY configured",
            )
        else:
            decided[name] = None
    return decided
