"""Builders of source results for the verdict-model tests (pure data, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from threatintel.models import (
    AbuseReport,
    Detections,
    Geo,
    Indicator,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
    Votes,
)
from threatintel.scoring import DEFAULT_POLICY, ScoringPolicy, score

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
IP = Indicator(type=IndicatorType.IPV4, value="1.1.1.1")
HASH = Indicator(type=IndicatorType.SHA256, value="a" * 64)
OK, NOT_FOUND = SourceStatus.OK, SourceStatus.NOT_FOUND
MALICIOUS, SUSPICIOUS = VerdictLabel.MALICIOUS, VerdictLabel.SUSPICIOUS
HARMLESS, UNKNOWN = VerdictLabel.HARMLESS, VerdictLabel.UNKNOWN
FAILED = [s for s in SourceStatus if s.failed]


def vt(
    malicious: int = 0,
    *,
    suspicious: int = 0,
    total: int = 94,
    flagged_by: tuple[str, ...] = (),
    reputation: int | None = None,
    votes: tuple[int, int] | None = None,
    rank: int | None = None,
    publisher: str | None = None,
    status: SourceStatus = OK,
) -> SourceResult:
    detections = Detections(
        malicious=malicious,
        suspicious=suspicious,
        harmless=total - malicious - suspicious,
        total=total,
        flagged_by=list(flagged_by),
    )
    return SourceResult(
        source="virustotal",
        status=status,
        detections=detections,
        reputation=reputation,
        votes=Votes(harmless=votes[0], malicious=votes[1]) if votes else None,
        popularity_rank=rank,
        trusted_publisher=publisher,
    )


def otx(
    pulses: int = 0,
    *,
    allowlisted_by: tuple[str, ...] = (),
    adversaries: tuple[str, ...] = (),
    malware: tuple[str, ...] = (),
    attack_ids: tuple[str, ...] = (),
    modified: datetime | None = None,
    size: int | None = None,
    listed: Sequence[Pulse] = (),
    count: int | None = None,
    status: SourceStatus = OK,
) -> SourceResult:
    """``pulses`` numbered pulses, or the ``listed`` ones; ``count`` may say OTX knows more."""
    shown = list(listed) or [
        Pulse(id=f"{i:024x}", name=f"pulse {i}", modified=modified, indicator_count=size)
        for i in range(pulses)
    ]
    return SourceResult(
        source="otx",
        status=status,
        pulse_count=count if count is not None else len(shown),
        pulses=shown,
        adversaries=list(adversaries),
        malware_families=list(malware),
        attack_ids=list(attack_ids),
        allowlisted_by=list(allowlisted_by),
    )


def abuse(
    confidence: int = 0,
    reports: int = 0,
    reporters: int = 0,
    *,
    days_ago: int = 1,
    tor: bool = False,
    whitelisted: bool | None = None,
    usage: str | None = None,
) -> SourceResult:
    report = AbuseReport(
        confidence=confidence,
        total_reports=reports,
        distinct_reporters=reporters,
        last_reported=NOW - timedelta(days=days_ago) if reports else None,
        is_tor=tor,
        is_whitelisted=whitelisted,
        usage_type=usage,
    )
    return SourceResult(source="abuseipdb", status=OK, abuse=report)


def ipinfo(
    org: str = "AS13335 Cloudflare, Inc.", anycast: bool = True, asn: int = 13335
) -> SourceResult:
    geo = Geo(asn=asn, organization=org, country="AU", city="Brisbane", anycast=anycast)
    return SourceResult(source="ipinfo", status=OK, geo=geo)


def status_only(name: str, status: SourceStatus, message: str | None = None) -> SourceResult:
    return SourceResult(source=name, status=status, message=message)


def verdict(
    *results: SourceResult, on: Indicator = IP, policy: ScoringPolicy = DEFAULT_POLICY
) -> Verdict:
    """Score the results, keyed by their source names as the engine does."""
    return score(on, {r.source: r for r in results}, policy, now=NOW)


def clean_ip(*overrides: SourceResult) -> list[SourceResult]:
    """No detections, no pulses, no reports, with some of them replaced."""
    sources = {r.source: r for r in (vt(0), otx(0), abuse(), *overrides)}
    return list(sources.values())
