"""AbuseIPDB API v2 `/check` (contracts §3)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from threatintel import findings
from threatintel.errors import BadRequest
from threatintel.findings import Evaluator
from threatintel.models import (
    IP_TYPES,
    AbuseReport,
    Indicator,
    IndicatorType,
    SourceResult,
    SourceStatus,
)
from threatintel.providers.base import (
    Call,
    HttpProvider,
    Json,
    error_json,
    parse_retry_after,
    quota_error,
)
from threatintel.providers.facts import Limits, QuotaWindow
from threatintel.providers.values import as_int, as_str, from_iso
from threatintel.quota.base import Window

DEFAULT_MAX_AGE_DAYS = 90


class AbuseIPDB(HttpProvider):
    name: ClassVar[str] = "abuseipdb"
    title: ClassVar[str] = "AbuseIPDB"
    supports: ClassVar[frozenset[IndicatorType]] = IP_TYPES
    requires_key: ClassVar[bool] = True
    windows: ClassVar[tuple[QuotaWindow, ...]] = (
        QuotaWindow(Window.per_day, "abuseipdb_rate_limit"),
    )
    evaluator: ClassVar[Evaluator | None] = findings.abuseipdb

    @classmethod
    def options(cls, settings: Any) -> dict[str, Any]:
        return {"max_age_days": settings.abuseipdb_max_age_days}

    def __init__(self, *args: Any, max_age_days: int = DEFAULT_MAX_AGE_DAYS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 1 <= max_age_days <= 365:
            raise ValueError("max_age_days must be between 1 and 365")
        self.max_age_days = max_age_days

    def request(self, indicator: Indicator, api_key: str | None) -> Call:
        # httpx URL-encodes the query, which IPv6 needs (contracts §3.1). Without the Accept
        # header AbuseIPDB answers errors with an HTML page (§3.5.1).
        return Call(
            "GET",
            "/check",
            params={
                "ipAddress": indicator.value,
                "maxAgeInDays": str(self.max_age_days),
                "verbose": "",
            },
            headers={"Key": api_key or "", "Accept": "application/json"},
        )

    @property
    def cache_scope(self) -> str:
        # maxAgeInDays decides which reports are counted; verbose adds the reports themselves.
        return f"{super().cache_scope}?maxAgeInDays={self.max_age_days}&verbose"

    def limits(self, response: httpx.Response) -> Limits | None:
        """The daily limit every /check answer states (X-RateLimit-Limit, contracts headers.md):
        a paid plan's higher limit is used from its first answer on."""
        limit = as_int(_header_int(response.headers.get("x-ratelimit-limit")))
        return {"day": limit} if limit is not None and limit > 0 else None

    def link(self, indicator: Indicator) -> str | None:
        return f"https://www.abuseipdb.com/check/{indicator.value}"

    def check(self, indicator: Indicator, response: httpx.Response) -> SourceResult | None:
        if response.status_code == 429:
            # AbuseIPDB's only documented limit is the daily one: a 429 means the day is spent.
            reset_at = None
            with contextlib.suppress(ValueError, OverflowError, OSError):
                reset_at = datetime.fromtimestamp(
                    float(response.headers.get("x-ratelimit-reset", "")), UTC
                )
            raise quota_error(
                self.name,
                "AbuseIPDB daily quota exhausted",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                reset_at=reset_at,
                long_window=True,
            )
        if response.status_code == 422:
            parameter = _error_parameter(response)
            raise BadRequest(
                self.name,
                f"AbuseIPDB refused the parameter {parameter}"
                if parameter
                else "AbuseIPDB refused the request (HTTP 422)",
                status_code=422,
            )
        return super().check(indicator, response)

    def parse(self, indicator: Indicator, body: Json) -> SourceResult:
        data: dict[str, Any] = body["data"]
        confidence = as_int(data.get("abuseConfidenceScore"))
        if confidence is None:
            raise ValueError("abuseConfidenceScore missing")
        whitelisted = data.get("isWhitelisted")
        public = data.get("isPublic")
        report = AbuseReport(
            confidence=max(0, min(100, confidence)),
            total_reports=as_int(data.get("totalReports")) or 0,
            distinct_reporters=as_int(data.get("numDistinctUsers")) or 0,
            last_reported=from_iso(data.get("lastReportedAt")),
            usage_type=as_str(data.get("usageType")),
            isp=as_str(data.get("isp")),
            domain=as_str(data.get("domain")),
            is_tor=data.get("isTor") is True,
            is_whitelisted=whitelisted if isinstance(whitelisted, bool) else None,
            is_public=public if isinstance(public, bool) else None,
        )
        return self.result(SourceStatus.OK, indicator, abuse=report, last_seen=report.last_reported)


def _header_int(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _error_parameter(response: httpx.Response) -> str | None:
    try:
        body = error_json(response) or {}
        source = body["errors"][0].get("source") or {}
        parameter = source.get("parameter")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return parameter if isinstance(parameter, str) and parameter.isidentifier() else None
