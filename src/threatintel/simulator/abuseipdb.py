"""AbuseIPDB API v2: ``GET /check?ipAddress=&maxAgeInDays=&verbose`` (contracts §3).

The ``Key`` header is required (the documented ``key`` query parameter works too). Errors are
JSON:API ``{"errors": [...]}`` only when ``Accept`` asks for ``application/json``; otherwise an HTML
page, as the docs warn. 200s carry ``X-RateLimit-Limit``/``-Remaining`` for the daily window.

Truth → body: ``malicious`` a confidence of 89-100 with a report history skewed to recent days;
``suspicious`` 20-60 with a few reports; ``noisy`` whitelisted, score 0, a handful of stray
reports; ``clean`` and ``unknown`` score 0 and no reports. ``maxAgeInDays`` filters the history,
so ``totalReports`` shrinks with it. Private space answers like the recorded 172.17.0.17.
"""

from __future__ import annotations

import html
import ipaddress
import math
from random import Random
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from threatintel.simulator.app import Outcome, Simulator
from threatintel.simulator.bodies import (
    DAY,
    day_start,
    is_bogon,
    network_for,
    offset_iso,
    parse_ip,
    rng_for,
    sample,
)
from threatintel.simulator.evidence import AbuseEvidence
from threatintel.simulator.quota import QuotaDecision, WindowUsage
from threatintel.simulator.scenario import SAMPLE_TRUTHS, IndicatorSpec, Truth

NAME = "abuseipdb"
BASE_PATH = "/api/v2"
SERVER_ERROR_STATUSES = (500, 502, 503)
DEFAULT_MAX_AGE_DAYS = 30  # the server's default (contracts §3.1)

_RECORDED = {
    "118.25.6.39": "abuseipdb_check_malicious.json",
    "54.240.77.24": "abuseipdb_check_clean.json",
    "2600:1f18:61c9:6100:42a3:2e94:e60d:1ad1": "abuseipdb_check_clean_ipv6.json",
    "172.17.0.17": "abuseipdb_check_private.json",
}


def routes(simulator: Simulator) -> list[BaseRoute]:
    return [Route("/check", simulator.endpoint(NAME, check))]


def wants_json(request: Request) -> bool:
    ranges = request.headers.get("accept", "").split(",")
    return any(item.split(";")[0].strip().lower() == "application/json" for item in ranges)


def errors(
    request: Request,
    status: int,
    detail: str,
    parameter: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if not wants_json(request):
        # The docs say only "an entire HTML page"; this page's content is UNVERIFIED.
        page = (
            '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
            f"<title>AbuseIPDB - Error {status}</title></head>\n"
            f"<body><h1>{status}</h1><p>{html.escape(detail)}</p></body>\n</html>\n"
        )
        return HTMLResponse(page, status, headers)
    error: dict[str, Any] = {"detail": detail, "status": status}
    if parameter is not None:
        error["source"] = {"parameter": parameter}
    return JSONResponse({"errors": [error]}, status, headers)


def server_error(request: Request, status: int) -> Response:
    return errors(request, status, "Server Error")  # UNVERIFIED detail (Laravel's default)


def _recorded_error(request: Request, name: str, headers: dict[str, str] | None = None) -> Response:
    error = sample(name)["errors"][0]
    parameter = error.get("source", {}).get("parameter")
    return errors(request, error["status"], error["detail"], parameter, headers)


def _daily(decision: QuotaDecision) -> WindowUsage | None:
    return decision.usage("day") or (decision.usages[0] if decision.usages else None)


async def check(simulator: Simulator, request: Request) -> Outcome:
    key, source = request.headers.get("key"), "header"
    if not key:
        key, source = request.query_params.get("key"), "query"
    config = simulator.config.abuseipdb
    if not key or not config.accepts(key):
        return Outcome(
            _recorded_error(request, "abuseipdb_error_401.json"), key, source if key else None
        )
    decision = simulator.quotas.acquire(NAME, key, config.windows_for(key))
    if not decision.allowed and decision.blocking is not None:
        blocking = decision.blocking
        headers = {
            "Retry-After": str(max(1, math.ceil(blocking.retry_after))),
            "X-RateLimit-Limit": str(blocking.window.limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(blocking.reset_at)),
        }
        detail = sample("abuseipdb_error_429.json")["errors"][0]["detail"]
        detail = detail.replace("1000", str(blocking.window.limit))
        return Outcome(errors(request, 429, detail, headers=headers), key, source)
    daily = _daily(decision)
    rate_headers = (
        {
            "X-RateLimit-Limit": str(daily.window.limit),
            "X-RateLimit-Remaining": str(daily.remaining),
        }
        if daily is not None
        else {}
    )
    raw_ip = request.query_params.get("ipAddress", "")
    served = Outcome(Response(), key, source, indicator=raw_ip or None, served=True)
    address = parse_ip(raw_ip)
    if address is None:
        served.response = _recorded_error(request, "abuseipdb_error_422.json", rate_headers)
        return served
    max_age = _max_age(request.query_params.get("maxAgeInDays"))
    if max_age is None:
        served.response = _recorded_error(request, "abuseipdb_error_422_maxage.json", rate_headers)
        return served
    ip = str(address)
    served.indicator = ip
    verbose = "verbose" in request.query_params  # presence is enough (contracts §3.1)
    body = check_body(
        ip, simulator.config.scenario.spec(ip), simulator.now(), verbose=verbose, max_age=max_age
    )
    served.response = JSONResponse(body, headers=rate_headers)
    return served


def _max_age(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return DEFAULT_MAX_AGE_DAYS
    try:
        days = int(raw)
    except ValueError:
        return None  # Laravel would say "must be an integer"; the range message is close enough
    return days if 1 <= days <= 365 else None


# --- bodies ------------------------------------------------------------------------------

_REPORTERS = (
    ("US", "United States"),
    ("DE", "Germany"),
    ("GB", "United Kingdom"),
    ("NL", "Netherlands"),
    ("FR", "France"),
)
_Kinds = tuple[tuple[tuple[int, ...], str], ...]
_ABUSE: _Kinds = (
    ((18, 22), "SSH brute force: repeated failed logins for root from {ip}"),
    ((14,), "Port scan detected from {ip} (TCP 22,23,3389)"),
    ((21, 15), "GET /wp-login.php brute force from {ip}"),
    ((19, 21), "Bad bot from {ip} probing /.env and /.git/config"),
)
_STRAY: _Kinds = (((14,), "Blocked outbound DNS to {ip} (firewall policy)"),)


def check_body(ip: str, spec: IndicatorSpec, now: float, *, verbose: bool, max_age: int) -> Any:
    recorded = _RECORDED.get(ip)
    stated = spec.evidence.abuseipdb if spec.evidence is not None else None
    if recorded is not None and stated is None and SAMPLE_TRUTHS.get(ip) is spec.truth:
        body = sample(recorded)
        data = body["data"]
        if not verbose:
            data.pop("countryName", None)
            data.pop("reports", None)
        elif "reports" not in data:
            _insert_country_name(data, None if data["countryCode"] is None else "United States")
            data["reports"] = []
        return body
    body = sample("abuseipdb_check_clean.json")
    data = body["data"]
    address = ipaddress.ip_address(ip)
    data.update(ipAddress=ip, ipVersion=address.version)
    if is_bogon(address):
        private = sample("abuseipdb_check_private.json")["data"]
        private.update(ipAddress=ip, ipVersion=address.version)
        if not address.is_private:
            private["isp"] = "Reserved"
        body["data"] = data = private
        if verbose:
            _insert_country_name(data, None)
            data["reports"] = []
        return body
    profile = network_for(ip, spec)
    rng = rng_for(NAME, ip)
    if stated is not None and stated.reports is not None:
        history = _stated_history(ip, stated, rng, now)
    else:
        history = _history(ip, spec.truth, rng, day_start(now))
    recent = [report for report in history if report["at"] > now - max_age * DAY]
    score = {
        Truth.MALICIOUS: rng.choice((100, 100, 100, 96, 89)),
        Truth.SUSPICIOUS: rng.randint(20, 60),
    }
    hostname = profile.hostname_for(ip)
    data.update(
        isWhitelisted={Truth.NOISY: True, Truth.MALICIOUS: False, Truth.SUSPICIOUS: False}.get(
            spec.truth
        ),
        abuseConfidenceScore=score.get(spec.truth, 0) if recent else 0,
        countryCode=profile.country,
        usageType=profile.usage_type,
        isp=profile.org,
        domain=profile.domain,
        hostnames=[hostname] if hostname else [],
        isTor=spec.truth is Truth.MALICIOUS and profile.asn == 60729,
        totalReports=len(recent),
        numDistinctUsers=len({report["reporterId"] for report in recent}),
        lastReportedAt=offset_iso(recent[0]["at"]) if recent else None,
    )
    if stated is not None:
        if stated.confidence is not None:
            data["abuseConfidenceScore"] = stated.confidence if recent else 0
        data["isWhitelisted"] = stated.whitelisted  # often null in real answers (§3.2)
        if stated.tor is not None:
            data["isTor"] = stated.tor
    if verbose:
        _insert_country_name(data, profile.country_name)
        data["reports"] = [
            {
                "reportedAt": offset_iso(report["at"]),
                "comment": report["comment"],
                "categories": list(report["categories"]),
                "reporterId": report["reporterId"],
                "reporterCountryCode": report["country"][0],
                "reporterCountryName": report["country"][1],
            }
            for report in recent
        ]
    return body


def _insert_country_name(data: dict[str, Any], name: str | None) -> None:
    """Put countryName right after countryCode, where the verbose sample has it."""
    items = list(data.items())
    index = next(i for i, (field, _) in enumerate(items) if field == "countryCode") + 1
    items.insert(index, ("countryName", name))
    data.clear()
    data.update(items)


def _stated_history(
    ip: str, stated: AbuseEvidence, rng: Random, now: float
) -> list[dict[str, Any]]:
    """Exactly the stated reports and reporters, the newest ``last_days`` ago, within 3 weeks."""
    count = stated.reports or 0
    reporters = [100_000 + i for i in range(max(1, min(stated.reporters or count, count)))]
    newest = now - stated.last_days * DAY
    kinds = _ABUSE if (stated.confidence or 0) > 0 else _STRAY
    history = []
    for index in range(count):
        categories, comment = rng.choice(kinds)
        history.append(
            {
                "at": newest - (rng.random() * 21 * DAY if index else 0),
                "comment": comment.format(ip=ip),
                "categories": categories,
                # Every reporter files at least once, so numDistinctUsers is what was stated.
                "reporterId": reporters[index] if index < len(reporters) else rng.choice(reporters),
                "country": rng.choice(_REPORTERS),
            }
        )
    return sorted(history, key=lambda report: -report["at"])


def _history(ip: str, truth: Truth, rng: Random, anchor: int) -> list[dict[str, Any]]:
    """A year of reports, newest first; deterministic per IP (and per day of the clock)."""
    kinds: _Kinds
    if truth is Truth.MALICIOUS:
        count, horizon, skew, kinds = rng.randint(80, 250), 365, 2.0, _ABUSE
    elif truth is Truth.SUSPICIOUS:
        count, horizon, skew, kinds = rng.randint(4, 15), 120, 1.0, _ABUSE
    elif truth is Truth.NOISY:
        count, horizon, skew, kinds = rng.randint(2, 8), 120, 1.0, _STRAY
    else:
        return []
    reporters = [rng.randint(1_000, 250_000) for _ in range(max(1, count * 2 // 3))]
    history = []
    for _ in range(count):
        categories, comment = rng.choice(kinds)
        history.append(
            {
                # Squaring a uniform draw bunches malicious reports in the last days.
                "at": anchor - (rng.random() ** skew) * horizon * DAY - rng.randint(0, 3_600),
                "comment": comment.format(ip=ip),
                "categories": categories,
                "reporterId": rng.choice(reporters),
                "country": rng.choice(_REPORTERS),
            }
        )
    return sorted(history, key=lambda report: -report["at"])
