"""IPinfo legacy API: ``GET /{ip}``, ``/{ip}/json``, ``/{ip}/{field}``, ``POST /batch`` (§4).

The token may come as ``?token=``, ``Authorization: Bearer`` or HTTP Basic (token as user name);
the request log records which (``key_source``). Without a token the answer carries
``"readme": "https://ipinfo.io/missingauth"``. Geo answers do not depend much on truth: every
public address gets a city, an ``org`` and a timezone (malicious ones sit on hosting networks,
noisy ones on big anycast infrastructure); bogons get ``{"ip", "bogon": true}``. Only wire fields
are sent, never the SDK's client-side ones (``country_name``, ``latitude``...).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from threatintel.simulator.app import Outcome, Simulator
from threatintel.simulator.bodies import is_bogon, network_for, parse_ip, sample, sample_text
from threatintel.simulator.scenario import SAMPLE_TRUTHS, IndicatorSpec

NAME = "ipinfo"
BASE_PATH = ""
SERVER_ERROR_STATUSES = (500, 502, 503)
BATCH_MAX = 1_000
JSON_UTF8 = "application/json; charset=utf-8"  # [assume] per headers.md
README = "https://ipinfo.io/missingauth"

_RECORDED = {"54.240.77.24": "ipinfo_ip.json", "1.1.1.1": "ipinfo_ip_unauthenticated.json"}


def routes(simulator: Simulator) -> list[BaseRoute]:
    return [
        Route("/batch", simulator.endpoint(NAME, batch), methods=["POST"]),
        Route("/{ip}", simulator.endpoint(NAME, details)),
        Route("/{ip}/{field}", simulator.endpoint(NAME, details)),
    ]


def error(status: int, title: str, message: str) -> Response:
    # Exactly application/json: the official SDK parses error bodies only with that type.
    return JSONResponse({"status": status, "error": {"title": title, "message": message}}, status)


def server_error(request: Request, status: int) -> Response:
    return error(status, "Server error", "Please try again later")  # UNVERIFIED body


def _wrong_ip() -> Response:
    return JSONResponse(sample("ipinfo_404_wrong_ip.json"), 404)


def _token(request: Request) -> tuple[str | None, str | None]:
    """The token and where it came from: "query", "bearer" or "basic"."""
    token = request.query_params.get("token")
    if token:
        return token, "query"
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), "bearer"
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if user:
            return user, "basic"
    return None, None


def _admit(simulator: Simulator, request: Request, cost: int) -> Outcome | None:
    """None if the caller may proceed (and was charged ``cost``), else the refusal."""
    token, source = _token(request)
    config = simulator.config.ipinfo
    if token is not None and not config.accepts(token):
        # The status of a wrong token is UNVERIFIED (403, 401 or even 200 are all reported).
        return Outcome(error(403, "Wrong token", "Please provide a valid token"), token, source)
    # Unauthenticated callers share one anonymous bucket with the same windows.
    decision = simulator.quotas.acquire(NAME, token or "", config.windows, cost)
    if not decision.allowed:
        headers = (
            {"Retry-After": str(max(1, math.ceil(decision.retry_after)))}
            if config.retry_after
            else None
        )
        body = Response(sample_text("ipinfo_429.txt"), 429, headers, media_type="application/json")
        return Outcome(body, token, source)
    return None


async def details(simulator: Simulator, request: Request) -> Outcome:
    refusal = _admit(simulator, request, 1)
    if refusal is not None:
        return refusal
    token, source = _token(request)
    raw = request.path_params["ip"]
    field = request.path_params.get("field", "json")
    served = Outcome(_wrong_ip(), token, source, indicator=raw, served=True)
    address = parse_ip(raw)
    if address is None:
        return served
    ip = served.indicator = str(address)
    body = details_body(ip, simulator.config.scenario.spec(ip), authenticated=token is not None)
    if field == "json":
        served.response = JSONResponse(body, media_type=JSON_UTF8)
    elif field in body and not isinstance(body[field], dict | list):
        # A field path answers plain text (docs: /8.8.8.8/org -> "AS15169 Google LLC").
        served.response = PlainTextResponse(f"{_text(body[field])}\n")
    else:
        served.response = error(404, "Wrong field", f"Unknown field {field!r}")  # UNVERIFIED
    return served


async def batch(simulator: Simulator, request: Request) -> Outcome:
    raw = await request.body()
    try:
        items = _batch_items(raw, request.headers.get("content-type", ""))
    except ValueError as exc:
        return Outcome(error(400, "Bad request", str(exc)))  # UNVERIFIED body
    token, source = _token(request)
    if token is None:
        # The legacy batch endpoint needs a token (paid tier, §4.1); the answer is UNVERIFIED.
        return Outcome(error(403, "Wrong token", "Please provide a valid token"))
    refusal = _admit(simulator, request, len(items))  # each entry counts as one request
    if refusal is not None:
        return refusal
    drop_empty = request.query_params.get("filter") == "1"
    answers: dict[str, Any] = {}
    for item in items:
        ip_text, _, field = item.partition("/")
        address = parse_ip(ip_text)
        if address is None:
            answers[item] = sample("ipinfo_404_wrong_ip.json")  # per-entry error: UNVERIFIED
            continue
        ip = str(address)
        body = details_body(ip, simulator.config.scenario.spec(ip), authenticated=True)
        answer = body.get(field) if field else body
        if answer is None and drop_empty:
            continue
        answers[item] = answer
    ordered = dict(sorted(answers.items()))  # the recorded response lists keys sorted
    return Outcome(JSONResponse(ordered, media_type=JSON_UTF8), token, source, served=True)


def _batch_items(raw: bytes, content_type: str) -> list[str]:
    if "json" in content_type or raw.lstrip().startswith(b"["):
        try:
            items = json.loads(raw or b"[]")
        except json.JSONDecodeError as exc:
            raise ValueError("body must be a JSON array of strings") from exc
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError("body must be a JSON array of strings")
    else:  # the docs also allow newline-separated text
        items = [
            line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip()
        ]
    if len(items) > BATCH_MAX:
        raise ValueError(f"at most {BATCH_MAX} items per batch")
    return items


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def details_body(ip: str, spec: IndicatorSpec, *, authenticated: bool) -> dict[str, Any]:
    address = parse_ip(ip)
    if address is not None and is_bogon(address):
        return {"ip": ip, "bogon": True}
    recorded = _RECORDED.get(ip)
    if recorded is not None and spec.evidence is None and SAMPLE_TRUTHS.get(ip) is spec.truth:
        body: dict[str, Any] = sample(recorded)
        body.pop("readme", None)
    else:
        profile = network_for(ip, spec)
        body = {"ip": ip}
        hostname = profile.hostname_for(ip)
        if hostname is not None:  # absent, not null, without a PTR record
            body["hostname"] = hostname
        body.update(
            city=profile.city,
            region=profile.region,
            country=profile.country,
            loc=profile.loc,
            org=f"AS{profile.asn} {profile.org}",
            postal=profile.postal,
            timezone=profile.timezone,
        )
        if profile.anycast:
            body["anycast"] = True
    if not authenticated:
        anycast = body.pop("anycast", None)
        body["readme"] = README
        if anycast is not None:
            body["anycast"] = anycast  # after readme, as recorded
    return body
