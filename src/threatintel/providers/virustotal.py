"""VirusTotal API v3 (contracts §1): endpoints as data, one parse function."""

from __future__ import annotations

import base64
import logging
import re
from typing import Any, ClassVar

import httpx

from threatintel import findings
from threatintel.errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    RateLimited,
    UpstreamError,
)
from threatintel.findings import Evaluator
from threatintel.models import (
    HASH_TYPES,
    IP_TYPES,
    Detections,
    Geo,
    Indicator,
    IndicatorType,
    SourceResult,
    SourceStatus,
    Votes,
)
from threatintel.providers.base import (
    Call,
    HttpProvider,
    Json,
    error_json,
    map_transport_errors,
    parse_retry_after,
)
from threatintel.providers.facts import Limits, QuotaWindow
from threatintel.providers.values import (
    Kept,
    as_asn,
    as_country,
    as_int,
    as_str,
    from_unix,
    str_list,
)
from threatintel.quota.base import Window

_COLLECTIONS: dict[IndicatorType, str] = {
    IndicatorType.IPV4: "ip_addresses",
    IndicatorType.IPV6: "ip_addresses",
    IndicatorType.DOMAIN: "domains",
    IndicatorType.URL: "urls",
    IndicatorType.MD5: "files",
    IndicatorType.SHA1: "files",
    IndicatorType.SHA256: "files",
}
_GUI = {"ip_addresses": "ip-address", "domains": "domain", "urls": "url", "files": "file"}

# Error codes, keyed on `error.code` and never on the message (contracts §1.5).
_AUTH_CODES = frozenset(
    {"AuthenticationRequiredError", "WrongCredentialsError", "UserNotActiveError", "ForbiddenError"}
)
_THROTTLE_CODES = frozenset({"QuotaExceededError", "TooManyRequestsError"})
_BAD_REQUEST_CODES = frozenset(
    {
        "BadRequestError",
        "InvalidArgumentError",
        "NotAvailableYet",
        "UnselectiveContentQueryError",
        "UnsupportedContentQueryError",
    }
)
_FLAGGING = frozenset({"malicious", "suspicious"})
#: VirusTotal runs about 95 engines: a longer list of engines that flagged is not theirs.
MAX_ENGINES = 128


_ACCOUNT_PATH = re.compile(r"/users/[^/?#]+/overall_quotas")


class _HideAccountPath(logging.Filter):
    """httpx logs every request's URL at INFO; overall_quotas' URL holds the API key, so that
    one segment is masked before any handler sees the record (a filter on httpx's logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            "/overall_quotas" in str(arg) for arg in record.args
        ):
            record.args = tuple(
                _ACCOUNT_PATH.sub("/users/***/overall_quotas", str(arg))
                if "/overall_quotas" in str(arg)
                else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_HideAccountPath())


def _allowance(entry: Any) -> int | None:
    """``{"user": {"allowed": n}, "group": {"allowed": m}}`` → the lower allowance, or None."""
    if not isinstance(entry, dict):
        return None
    found = [
        as_int(part.get("allowed"))
        for part in (entry.get("user"), entry.get("group"))
        if isinstance(part, dict)
    ]
    numbers = [n for n in found if n is not None and n > 0]
    return min(numbers) if numbers else None


def url_id(url: str) -> str:
    """VT's URL identifier: unpadded base64url of the URL (contracts §1.3)."""
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class VirusTotal(HttpProvider):
    name: ClassVar[str] = "virustotal"
    title: ClassVar[str] = "VirusTotal"
    abbrev: ClassVar[str] = "VT"
    supports: ClassVar[frozenset[IndicatorType]] = frozenset(_COLLECTIONS)
    requires_key: ClassVar[bool] = True
    windows: ClassVar[tuple[QuotaWindow, ...]] = (
        QuotaWindow(Window.per_minute, "virustotal_rate_limit"),
        QuotaWindow(Window.per_day, "virustotal_daily_limit"),
        QuotaWindow(Window.per_month, "virustotal_monthly_limit"),
    )
    evaluator: ClassVar[Evaluator | None] = findings.virustotal

    async def account_limits(self, api_key: str) -> Limits | None:
        """The key's limits from ``GET /users/{key}/overall_quotas`` (the documented sample is
        tests/fixtures/contracts/virustotal_overall_quotas.json): hourly, daily and monthly
        allowances, the user's or its group's if lower. VT states no per-minute figure, so the
        minute window gets the hourly allowance spread evenly (a free key: 240/hour → 4).

        VT documents the key as a valid user id here, so the key travels in the path of this
        one request; nothing of ours logs the path. Any failure or odd shape means None.
        """
        call = Call("GET", f"/users/{api_key}/overall_quotas", headers={"x-apikey": api_key})
        try:
            with map_transport_errors(self.name, self.title):
                response = await self._send(call)
            if response.status_code != 200:
                return None
            data = self.decode(response).get("data")
        except ProviderError:
            return None
        if not isinstance(data, dict):
            return None
        allowed = {
            window: _allowance(data.get(f"api_requests_{period}"))
            for window, period in (("hour", "hourly"), ("day", "daily"), ("month", "monthly"))
        }
        limits = {name: value for name, value in allowed.items() if value is not None}
        if "hour" in limits:
            limits["minute"] = max(1, limits["hour"] // 60)
        return limits or None

    def _object_id(self, indicator: Indicator) -> str:
        if indicator.type is IndicatorType.URL:
            return url_id(indicator.value)
        return indicator.value

    def request(self, indicator: Indicator, api_key: str | None) -> Call:
        collection = _COLLECTIONS[indicator.type]
        return Call(
            "GET",
            f"/{collection}/{self._object_id(indicator)}",
            headers={"x-apikey": api_key or "", "accept": "application/json"},
        )

    def link(self, indicator: Indicator) -> str | None:
        gui = _GUI[_COLLECTIONS[indicator.type]]
        return f"https://www.virustotal.com/gui/{gui}/{self._object_id(indicator)}"

    def check(self, indicator: Indicator, response: httpx.Response) -> SourceResult | None:
        code = _error_code(response)
        status = response.status_code
        if code == "NotFoundError" or (code is None and status == 404):
            return self.result(
                SourceStatus.NOT_FOUND, indicator, message="VirusTotal has no record of it"
            )
        if code in _AUTH_CODES:
            raise AuthenticationFailed(
                self.name,
                f"VirusTotal rejected the API key ({code})",
                error_code=code,
                status_code=status,
            )
        if code in _THROTTLE_CODES:
            # VT does not say which window (minute/day/month) ran out and documents no
            # Retry-After; the limiter decides how long to hold off.
            raise RateLimited(
                self.name,
                f"VirusTotal quota exceeded ({code})",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                error_code=code,
            )
        if code in _BAD_REQUEST_CODES:
            raise BadRequest(
                self.name,
                f"VirusTotal refused the request ({code})",
                error_code=code,
                status_code=status,
            )
        if code is not None and status < 500:
            raise UpstreamError(
                self.name,
                f"VirusTotal error {code} (HTTP {status})",
                error_code=code,
                status_code=status,
            )
        return super().check(indicator, response)

    def parse(self, indicator: Indicator, body: Json) -> SourceResult:
        attrs: dict[str, Any] = body["data"].get("attributes") or {}
        kept = Kept()
        detections = _detections(attrs, kept)
        categories = attrs.get("categories")
        threat_label = None
        classification = attrs.get("popular_threat_classification")
        if isinstance(classification, dict):
            threat_label = as_str(classification.get("suggested_threat_label"))
        if threat_label is None:
            names = str_list(attrs.get("threat_names"), limit=1)  # only the first is shown
            threat_label = names[0] if names else None
        geo = None
        if indicator.type in IP_TYPES:
            geo = Geo(
                country=as_country(attrs.get("country")),
                asn=as_asn(attrs.get("asn")),
                organization=as_str(attrs.get("as_owner")),
                network=as_str(attrs.get("network")),
            )
        first_seen = None
        if indicator.type in HASH_TYPES:
            first_seen = from_unix(attrs.get("first_seen_itw_date")) or from_unix(
                attrs.get("first_submission_date")
            )
        elif indicator.type is IndicatorType.URL:
            first_seen = from_unix(attrs.get("first_submission_date"))
        return self.result(
            SourceStatus.OK,
            indicator,
            detections=detections,
            reputation=as_int(attrs.get("reputation")),
            votes=_votes(attrs.get("total_votes")),
            popularity_rank=_best_rank(attrs.get("popularity_ranks")),
            trusted_publisher=_trusted_publisher(attrs.get("trusted_verdict")),
            tags=kept.strings("tags", attrs.get("tags")),
            categories=kept.strings("categories", list(categories.values()))
            if isinstance(categories, dict)
            else [],
            threat_label=threat_label,
            geo=geo,
            first_seen=first_seen,
            last_seen=from_unix(attrs.get("last_analysis_date"))
            or from_unix(attrs.get("last_submission_date")),
            truncated=kept.dropped,
        )


def _detections(attrs: dict[str, Any], kept: Kept) -> Detections | None:
    stats = attrs.get("last_analysis_stats")
    if not isinstance(stats, dict):
        return None

    def count(key: str) -> int:
        return as_int(stats.get(key)) or 0

    flagged: list[str] = []
    results = attrs.get("last_analysis_results")
    if isinstance(results, dict):
        # The dict key is not always the engine's name (contracts §1.4): read the values.
        flagged = kept.unique(
            "flagged_by",
            (
                as_str(verdict.get("engine_name")) or as_str(key)
                for key, verdict in results.items()
                if isinstance(verdict, dict) and verdict.get("category") in _FLAGGING
            ),
            limit=MAX_ENGINES,
        )
    malicious, suspicious = count("malicious"), count("suspicious")
    harmless, undetected = count("harmless"), count("undetected")
    # Engines that gave a verdict; timeouts and type-unsupported engines are not counted,
    # as on VirusTotal's own pages.
    total = malicious + suspicious + harmless + undetected
    return Detections(
        malicious=malicious,
        suspicious=suspicious,
        harmless=harmless,
        undetected=undetected,
        total=total,
        flagged_by=sorted(flagged),
    )


def _votes(raw: Any) -> Votes | None:
    if not isinstance(raw, dict):
        return None
    return Votes(
        harmless=max(as_int(raw.get("harmless")) or 0, 0),
        malicious=max(as_int(raw.get("malicious")) or 0, 0),
    )


def _best_rank(raw: Any) -> int | None:
    """The best of a domain's popularity_ranks ({"Tranco": {"rank": 23, ...}, ...})."""
    if not isinstance(raw, dict):
        return None
    ranks = [
        rank
        for entry in raw.values()
        if isinstance(entry, dict) and (rank := as_int(entry.get("rank"))) is not None and rank > 0
    ]
    return min(ranks, default=None)


def _trusted_publisher(raw: Any) -> str | None:
    """The organisation behind a trusted_verdict of "goodware" (VirusTotal's trusted sources)."""
    if not isinstance(raw, dict) or raw.get("verdict") != "goodware":
        return None
    return as_str(raw.get("organization")) or "a trusted source"


def _error_code(response: httpx.Response) -> str | None:
    body = error_json(response)
    error = body.get("error") if body is not None else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code.isidentifier() else None
