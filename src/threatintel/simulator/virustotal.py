"""VirusTotal API v3: ``/ip_addresses``, ``/domains``, ``/urls`` and ``/files`` (contracts §1).

Auth is the ``x-apikey`` header (any case). Truth → body: ``unknown`` is a 404 NotFoundError;
``malicious`` flags 9-15 network engines (40-58 file engines) with a negative reputation;
``suspicious`` 2-4 (3-6); ``noisy`` exactly one engine with a high reputation and harmless votes;
``clean`` none. Stats are recounted from ``last_analysis_results`` so they always agree, with the
file objects' eight keys (``confirmed-timeout``, ``type-unsupported``...) kept from the sample.
The recorded samples are served verbatim for their own indicators.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections import Counter
from dataclasses import replace
from functools import cache
from random import Random
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from threatintel.simulator.app import Outcome, Simulator
from threatintel.simulator.bodies import (
    DAY,
    MALWARE_FAMILIES,
    cidr,
    day_start,
    hex_id,
    is_bogon,
    is_hostname,
    network_for,
    parse_ip,
    rng_for,
    sample,
    substitute,
)
from threatintel.simulator.evidence import VTEvidence
from threatintel.simulator.scenario import SAMPLE_TRUTHS, IndicatorSpec, Truth, canonical_url

NAME = "virustotal"
BASE_PATH = "/api/v3"
# links.self points at the real service, as in the recorded samples served verbatim.
PUBLIC_BASE = "https://www.virustotal.com/api/v3"
SERVER_ERROR_STATUSES = (503,)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HASH = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_FIXED_FILE_CATEGORIES = frozenset({"type-unsupported", "timeout", "confirmed-timeout", "failure"})


def routes(simulator: Simulator) -> list[BaseRoute]:
    return [
        Route("/ip_addresses/{ip}", simulator.endpoint(NAME, ip_address)),
        Route("/domains/{domain}", simulator.endpoint(NAME, domain)),
        Route("/urls/{url_id}", simulator.endpoint(NAME, url)),
        Route("/files/{file_id}", simulator.endpoint(NAME, file)),
        Route("/users/{user_id}/overall_quotas", simulator.endpoint(NAME, overall_quotas)),
    ]


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers)


def server_error(request: Request, status: int) -> Response:
    # TransientError is the documented 503 code; the message text is UNVERIFIED.
    return error(status, "TransientError", "A transient error occurred, please try again")


def _authorise(simulator: Simulator, request: Request) -> str | Outcome:
    """The key if the request may proceed (and was charged), else the refusal."""
    key = request.headers.get("x-apikey")
    if not key:
        return Outcome(error(401, "AuthenticationRequiredError", "X-Apikey header is missing"))
    outcome = Outcome(error(401, "WrongCredentialsError", "Wrong API key"), key, "header")
    config = simulator.config.virustotal
    if not config.accepts(key):
        return outcome
    decision = simulator.quotas.acquire(NAME, key, config.windows_for(key))
    if not decision.allowed:
        # VT documents no Retry-After (contracts headers.md); it is an opt-in assumption here.
        headers = {"Retry-After": str(max(1, math.ceil(decision.retry_after)))}
        body = sample("vt_quota.json")["error"]
        outcome.response = error(
            429, body["code"], body["message"], headers if config.retry_after else None
        )
        return outcome
    return key


#: overall_quotas' periods, by the simulator window whose limit each states.
_PERIODS = (("hourly", "hour"), ("daily", "day"), ("monthly", "month"))


async def overall_quotas(simulator: Simulator, request: Request) -> Outcome:
    """``GET /users/{id}/overall_quotas`` as VT documents it (the id may be the key itself):
    each period's allowance and use for the key's own windows, the hourly one from the
    minute window when there is no hour window (4/min → 240/hour). Not charged: it reads the
    account, it looks nothing up (contracts: documented, unverified)."""
    key = request.headers.get("x-apikey")
    if not key:
        return Outcome(error(401, "AuthenticationRequiredError", "X-Apikey header is missing"))
    config = simulator.config.virustotal
    refused = Outcome(error(401, "WrongCredentialsError", "Wrong API key"), key, "header")
    if not config.accepts(key) or config.account_answer == "unauthorized":
        return refused
    if request.path_params["user_id"] != key or config.account_answer == "not_found":
        return Outcome(error(404, "NotFoundError", "User not found"), key, "header")
    if config.account_answer == "error":
        return Outcome(server_error(request, 503), key, "header")
    if config.account_answer == "garbage":
        return Outcome(Response(b"<html>quota</html>", 200, media_type="text/html"), key, "header")
    windows = {window.name: window for window in config.windows_for(key)}
    if "hour" not in windows and "minute" in windows:
        minute = windows["minute"]
        windows["hour"] = replace(minute, name="hour", limit=minute.limit * 60)
    data: dict[str, Any] = {}
    for period, name in _PERIODS:
        window = windows.get(name)
        if window is not None:
            used = simulator.quotas.usage(NAME, key, window).used if name != "hour" else 0
            data[f"api_requests_{period}"] = {"user": {"allowed": window.limit, "used": used}}
    return Outcome(JSONResponse({"data": data}), key, "header", note="overall_quotas")


def _served(key: str, indicator: str, response: Response) -> Outcome:
    return Outcome(response, key, "header", indicator=indicator, served=True)


async def ip_address(simulator: Simulator, request: Request) -> Outcome:
    key = _authorise(simulator, request)
    if isinstance(key, Outcome):
        return key
    raw = request.path_params["ip"]
    address = parse_ip(raw)
    if address is None:
        # Status and code per the errors table; the message text is UNVERIFIED.
        return _served(
            key, raw, error(400, "InvalidArgumentError", f'"{raw}" is not a valid IP address')
        )
    ip = str(address)
    body = ip_body(ip, simulator.config.scenario.spec(ip), simulator.now())
    if body is None:  # the message shape follows the recorded File/URL ones; UNVERIFIED
        return _served(key, ip, error(404, "NotFoundError", f'IP address "{ip}" not found'))
    return _served(key, ip, JSONResponse(body))


async def domain(simulator: Simulator, request: Request) -> Outcome:
    key = _authorise(simulator, request)
    if isinstance(key, Outcome):
        return key
    name = request.path_params["domain"].lower().rstrip(".")
    if not is_hostname(name):  # UNVERIFIED message
        return _served(
            key, name, error(400, "InvalidArgumentError", f'"{name}" is not a valid domain')
        )
    body = domain_body(name, simulator.config.scenario.spec(name), simulator.now())
    if body is None:  # UNVERIFIED message (shape of the recorded File/URL messages)
        return _served(key, name, error(404, "NotFoundError", f'Domain "{name}" not found'))
    return _served(key, name, JSONResponse(body))


async def url(simulator: Simulator, request: Request) -> Outcome:
    key = _authorise(simulator, request)
    if isinstance(key, Outcome):
        return key
    url_id = request.path_params["url_id"]
    target = _resolve_url(simulator, url_id)
    not_found = error(404, "NotFoundError", f'URL "{url_id}" not found')  # recorded docs shape
    if target is None:
        return _served(key, url_id, not_found)
    body = url_body(target, simulator.config.scenario.spec(target), simulator.now())
    return _served(key, target, JSONResponse(body) if body is not None else not_found)


async def file(simulator: Simulator, request: Request) -> Outcome:
    key = _authorise(simulator, request)
    if isinstance(key, Outcome):
        return key
    file_id = request.path_params["file_id"]
    if _HASH.fullmatch(file_id) is None:  # UNVERIFIED message
        return _served(
            key, file_id, error(400, "InvalidArgumentError", f'Invalid file id "{file_id}"')
        )
    # VT's own case-folding is UNVERIFIED (contracts §1.7.3); the fake accepts upper case.
    digest = file_id.lower()
    body = file_body(digest, simulator.config.scenario.spec(digest), simulator.now())
    if body is None:  # the recorded vt_notfound.json shape
        return _served(key, digest, error(404, "NotFoundError", f'File "{digest}" not found'))
    return _served(key, digest, JSONResponse(body))


def _resolve_url(simulator: Simulator, url_id: str) -> str | None:
    """The canonical URL behind either id form (contracts §1.3), or None."""
    if _HEX64.fullmatch(url_id):
        return simulator.url_for_id(url_id.lower())
    padded = url_id + "=" * (-len(url_id) % 4)
    try:
        decoded = base64.b64decode(padded.translate(str.maketrans("-_", "+/")), validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not text.isprintable() or "." not in text or " " in text:
        return None
    simulator.remember_url(text)
    return canonical_url(text)


# --- bodies ------------------------------------------------------------------------------


def _verbatim(value: str, spec: IndicatorSpec, name: str) -> Any | None:
    if spec.evidence is not None or SAMPLE_TRUTHS.get(value) is not spec.truth:
        return None
    return sample(name)


def _stated(spec: IndicatorSpec) -> VTEvidence | None:
    return spec.evidence.vt if spec.evidence is not None else None


def _absent(spec: IndicatorSpec) -> bool:
    """VirusTotal has no record: the truth is unknown, or the scenario says so."""
    stated = _stated(spec)
    return not stated.found if stated is not None else spec.truth is Truth.UNKNOWN


def ip_body(ip: str, spec: IndicatorSpec, now: float) -> Any | None:
    if _absent(spec):
        return None
    recorded = {"1.1.1.1": "vt_ip_malicious.json", "142.251.220.110": "vt_ip_clean.json"}
    if ip in recorded and (body := _verbatim(ip, spec, recorded[ip])) is not None:
        return body
    body = substitute(sample("vt_ip_clean.json"), "142.251.220.110", ip)
    attributes = body["data"]["attributes"]
    rng = rng_for(NAME, "ip", ip)
    profile = network_for(ip, spec)
    network = cidr(ip)
    attributes.update(
        network=network,
        as_owner=profile.as_owner,
        asn=profile.asn,
        country=profile.country,
        continent=profile.continent,
        regional_internet_registry=profile.rir,
        jarm=hex_id(62, "jarm", ip),
        whois=(
            f"NetRange: {network}\nCIDR: {network}\nOriginAS: AS{profile.asn}\n"
            f"Organization: {profile.org}\nCountry: {profile.country}\n"
        ),
        whois_date=day_start(now) - rng.randint(30, 400) * DAY,
    )
    address = parse_ip(ip)
    if address is not None and is_bogon(address):
        # A sparse object for private space: VT's real answer here is UNVERIFIED (§1.7.6).
        for name in ("as_owner", "asn", "country", "continent", "network", "jarm", "whois",
                     "whois_date", "regional_internet_registry"):  # fmt: skip
            attributes.pop(name, None)
    _network_verdicts(attributes, rng, spec, now)
    return body


_CATEGORIES: dict[Truth, dict[str, str]] = {
    Truth.MALICIOUS: {
        "Forcepoint ThreatSeeker": "phishing and other frauds",
        "Sophos": "phishing and fraud",
        "BitDefender": "phishing",
        "alphaMountain.ai": "Phishing (alphaMountain.ai)",
    },
    Truth.SUSPICIOUS: {
        "Forcepoint ThreatSeeker": "newly registered websites",
        "Sophos": "spyware and malware",
    },
    Truth.CLEAN: {
        "Forcepoint ThreatSeeker": "information technology",
        "BitDefender": "computersandsoftware",
    },
    Truth.NOISY: {
        "Forcepoint ThreatSeeker": "web infrastructure",
        "Sophos": "content delivery",
        "BitDefender": "computersandsoftware",
    },
}


def domain_body(name: str, spec: IndicatorSpec, now: float) -> Any | None:
    if _absent(spec):
        return None
    recorded = {"haiku-os.org": "vt_domain.json", "tucows.com": "vt_domain_flagged.json"}
    if name in recorded and (body := _verbatim(name, spec, recorded[name])) is not None:
        return body
    body = substitute(sample("vt_domain.json"), "haiku-os.org", name)
    attributes = body["data"]["attributes"]
    rng = rng_for(NAME, "domain", name)
    attributes["tld"] = name.rsplit(".", 1)[-1]
    for record in attributes["last_dns_records"]:
        if record["type"] == "A":
            record["value"] = ".".join(str(rng.randint(11, 223)) for _ in range(4))
    age_days = {
        Truth.MALICIOUS: rng.randint(3, 60),
        Truth.SUSPICIOUS: rng.randint(30, 400),
        Truth.CLEAN: rng.randint(700, 7000),
        Truth.NOISY: rng.randint(5000, 9000),
    }[spec.truth]
    attributes["creation_date"] = day_start(now) - age_days * DAY
    attributes["categories"] = dict(_CATEGORIES[spec.truth])
    if spec.truth in (Truth.MALICIOUS, Truth.SUSPICIOUS):
        attributes["registrar"] = "NameCheap, Inc."
        attributes["popularity_ranks"] = {}
    elif spec.truth is Truth.NOISY:
        stamp = day_start(now) - DAY
        attributes["popularity_ranks"] = {
            ranker: {"rank": rng.randint(1, 500), "timestamp": stamp}
            for ranker in ("Cisco Umbrella", "Majestic", "Tranco")
        }
    stated = _stated(spec)
    if stated is not None and stated.rank is not None:
        # Each ranker places a popular domain a little differently; Tranco is the stated rank.
        stamp = day_start(now) - DAY
        attributes["popularity_ranks"] = {
            "Cisco Umbrella": {"rank": max(1, stated.rank // 2), "timestamp": stamp},
            "Majestic": {"rank": stated.rank * 2 + 1, "timestamp": stamp},
            "Tranco": {"rank": stated.rank, "timestamp": stamp},
        }
    elif stated is not None:
        attributes["popularity_ranks"] = {}
    _network_verdicts(attributes, rng, spec, now)
    return body


def url_body(target: str, spec: IndicatorSpec, now: float) -> Any | None:
    if _absent(spec):
        return None
    url_id = hashlib.sha256(target.encode()).hexdigest()
    if target == "http://218.54.47.76/" and (body := _verbatim(target, spec, "vt_url.json")):
        return body
    body = substitute(
        sample("vt_url.json"),
        "19e1199c6aa6e817845cc025cd7c8979cec22f8c94bc7416ff16b8808706cd54",
        url_id,
    )
    attributes = body["data"]["attributes"]
    rng = rng_for(NAME, "url", target)
    host = target.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    first_seen = day_start(now) - rng.randint(1, 900) * DAY
    attributes.update(
        url=target,
        last_final_url=target,
        tags=["ip"] if parse_ip(host.strip("[]")) is not None else [],
        threat_names=["Phishing.Generic"] if spec.truth is Truth.MALICIOUS else [],
        categories=dict(_CATEGORIES[spec.truth]),
        first_submission_date=first_seen,
        times_submitted=rng.randint(1, 60),
    )
    _network_verdicts(attributes, rng, spec, now)
    attributes["last_submission_date"] = attributes["last_analysis_date"]
    return body


_MALWARE_SAMPLE = "vt_file_malicious.json"
_CLEAN_SAMPLE = "vt_file_clean.json"


def file_body(digest: str, spec: IndicatorSpec, now: float) -> Any | None:
    if _absent(spec):
        return None
    recorded = _recorded_files().get(digest)
    stated = _stated(spec)
    if recorded is not None and stated is None and SAMPLE_TRUTHS.get(digest) is spec.truth:
        return sample(recorded)
    # A stated benign file (a signed installer) is an executable, not the macro document.
    benign = spec.truth is Truth.CLEAN or (stated is not None and spec.truth is Truth.NOISY)
    template = _CLEAN_SAMPLE if benign else _MALWARE_SAMPLE
    body = sample(template)
    old = body["data"]["attributes"]
    hashes = _file_hashes(digest)
    for kind in ("md5", "sha1", "sha256"):
        body = substitute(body, old[kind], hashes[kind])
    attributes = body["data"]["attributes"]
    rng = rng_for(NAME, "file", digest)
    stem = rng.choice(
        ("invoice_0423", "scan_2024", "document", "setup", "update", "payment_advice")
    )
    attributes["names"] = [f"{stem}.{attributes.get('type_extension', 'bin')}", hashes["md5"]]
    attributes["meaningful_name"] = attributes["names"][0]
    family = (spec.malware or (rng.choice(MALWARE_FAMILIES),))[0]
    if spec.truth in (Truth.MALICIOUS, Truth.SUSPICIOUS):
        token = family.lower().replace(" ", "")
        count = rng.randint(8, 30) if spec.truth is Truth.MALICIOUS else rng.randint(1, 3)
        attributes["popular_threat_classification"] = {
            "suggested_threat_label": f"trojan.{token}/generic",
            "popular_threat_category": [{"count": count, "value": "trojan"}],
            "popular_threat_name": [{"count": count, "value": token}],
        }
    else:
        attributes.pop("popular_threat_classification", None)
    _file_verdicts(attributes, rng, spec, family.replace(" ", ""))
    if stated is not None and stated.trusted:
        # VirusTotal's trusted-source programme: present only for files a known publisher gave it.
        attributes["trusted_verdict"] = {
            "filename": attributes["names"][0],
            "organization": stated.trusted,
            "verdict": "goodware",
        }
    _dates(attributes, rng, now)
    attributes["first_submission_date"] = (
        attributes["last_analysis_date"] - rng.randint(1, 400) * DAY
    )
    attributes["last_submission_date"] = attributes["last_analysis_date"]
    return body


@cache
def _recorded_files() -> dict[str, str]:
    """The recorded file samples under each of their three hashes."""
    index = {}
    for name in (_MALWARE_SAMPLE, _CLEAN_SAMPLE):
        attributes = sample(name)["data"]["attributes"]
        index.update(dict.fromkeys((attributes[kind] for kind in ("md5", "sha1", "sha256")), name))
    return index


def _file_hashes(digest: str) -> dict[str, str]:
    """The three hashes of a fabricated file, keeping the queried one as it was asked."""
    kinds = {32: "md5", 40: "sha1", 64: "sha256"}
    hashes = {
        kind: hashlib.new(kind, f"{kind}:{digest}".encode()).hexdigest() for kind in kinds.values()
    }
    hashes[kinds[len(digest)]] = digest
    return hashes


# --- verdicts ------------------------------------------------------------------------------


def _flag_counts(spec: IndicatorSpec, rng: Random, *, files: bool) -> tuple[int, int]:
    """How many engines say malicious and suspicious: as stated, else by truth."""
    malicious, suspicious = _truth_counts(spec.truth, rng, files=files)
    stated = _stated(spec)
    if stated is not None:  # a stated table means exactly these engines flag it
        return stated.malicious or 0, stated.suspicious or 0
    return malicious, suspicious


def _truth_counts(truth: Truth, rng: Random, *, files: bool) -> tuple[int, int]:
    if truth is Truth.MALICIOUS:
        return (
            (rng.randint(40, 58), rng.randint(0, 2))
            if files
            else (rng.randint(9, 15), rng.randint(1, 3))
        )
    if truth is Truth.SUSPICIOUS:
        return (rng.randint(3, 6) if files else rng.randint(2, 4)), rng.randint(1, 2)
    if truth is Truth.NOISY:
        return 1, 0
    return 0, 0


def _reputation(attributes: dict[str, Any], rng: Random, spec: IndicatorSpec) -> None:
    truth = spec.truth
    low, high, harmless, malicious = {
        Truth.MALICIOUS: (-90, -15, (0, 1), (4, 25)),
        Truth.SUSPICIOUS: (-12, -1, (0, 2), (0, 3)),
        Truth.CLEAN: (0, 3, (0, 3), (0, 0)),
        Truth.NOISY: (40, 160, (20, 80), (1, 6)),
        Truth.UNKNOWN: (0, 0, (0, 0), (0, 0)),
    }[truth]
    attributes["reputation"] = rng.randint(low, high)
    attributes["total_votes"] = {
        "harmless": rng.randint(*harmless),
        "malicious": rng.randint(*malicious),
    }
    stated = _stated(spec)
    if stated is not None and stated.reputation is not None:
        attributes["reputation"] = stated.reputation
    if stated is not None and stated.votes is not None:
        attributes["total_votes"] = {"harmless": stated.votes[0], "malicious": stated.votes[1]}


def _dates(attributes: dict[str, Any], rng: Random, now: float) -> None:
    analysed = day_start(now) - rng.randint(0, 3) * DAY + rng.randint(0, DAY - 1)
    attributes["last_analysis_date"] = analysed
    attributes["last_modification_date"] = analysed + rng.randint(60, 3600)


def _network_verdicts(
    attributes: dict[str, Any], rng: Random, spec: IndicatorSpec, now: float
) -> None:
    results: dict[str, dict[str, Any]] = attributes["last_analysis_results"]
    malicious, suspicious = _flag_counts(spec, rng, files=False)
    order = list(results)
    rng.shuffle(order)
    rest = order[malicious + suspicious :]
    stated = _stated(spec)
    harmless = stated.harmless if stated is not None else None
    quiet = len(rest) // 8 if harmless is None else max(len(rest) - harmless, 0)
    verdicts = dict.fromkeys(order[:malicious], "malicious")
    verdicts |= dict.fromkeys(order[malicious : malicious + suspicious], "suspicious")
    verdicts |= dict.fromkeys(rest[:quiet], "undetected")
    for engine, entry in results.items():
        category = verdicts.get(engine, "harmless")
        entry["category"] = category
        entry["result"] = {
            "malicious": rng.choice(("malicious", "malware", "phishing")),
            "suspicious": "suspicious",
            "undetected": "unrated",
        }.get(category, "clean")
    _recount(attributes, results)
    _reputation(attributes, rng, spec)
    _dates(attributes, rng, now)


def _file_verdicts(
    attributes: dict[str, Any], rng: Random, spec: IndicatorSpec, family: str
) -> None:
    results: dict[str, dict[str, Any]] = attributes["last_analysis_results"]
    malicious, suspicious = _flag_counts(spec, rng, files=True)
    stated = _stated(spec)
    harmless = stated.harmless if stated is not None and stated.harmless else 0
    # Engines that could not scan the type stay as recorded; the others get this file's verdict.
    order = [
        name for name, entry in results.items() if entry["category"] not in _FIXED_FILE_CATEGORIES
    ]
    rng.shuffle(order)
    verdicts = dict.fromkeys(order[:malicious], "malicious")
    verdicts |= dict.fromkeys(order[malicious : malicious + suspicious], "suspicious")
    flagged = malicious + suspicious
    verdicts |= dict.fromkeys(order[flagged : flagged + harmless], "harmless")
    for engine in order:
        entry = results[engine]
        entry["category"] = verdicts.get(engine, "undetected")
        entry["result"] = (
            rng.choice(
                (
                    f"Trojan.{family}.Gen",
                    f"Win32/{family}.A",
                    f"Trojan:Win32/{family}!ml",
                    f"Gen:Variant.{family}.{rng.randint(10, 999)}",
                    f"Malware.{family}/Generic",
                )
            )
            if entry["category"] in ("malicious", "suspicious")
            else None
        )
    _recount(attributes, results)
    _reputation(attributes, rng, spec)
    if stated is None or stated.reputation is None:
        attributes["reputation"] = min(0, attributes["reputation"])  # files rarely rank positive


def _recount(attributes: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    """Rewrite last_analysis_stats from the results, keeping the sample's key set and order."""
    counts = Counter(entry["category"] for entry in results.values())
    stats: dict[str, int] = attributes["last_analysis_stats"]
    for category in stats:
        stats[category] = counts.get(category, 0)
