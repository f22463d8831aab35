"""AlienVault OTX DirectConnect v1: ``/indicators/{slug}/{value}/{section}`` (contracts §2).

The value goes into the path unencoded (URLs keep their ``://``), so the section is the LAST
segment. ``X-OTX-API-KEY`` is optional for ``general``; a key that is sent must be valid (403).
Truth → pulses: ``malicious`` 3-6 pulses, the first two with an adversary, malware-family objects
and ATT&CK objects; ``suspicious`` 1-2 pulses without attribution; ``noisy`` 2-3 unattributed pulses
plus whitelist ``validation`` entries; ``clean`` and ``unknown`` zero pulses (200, never 404).

Error bodies here are UNVERIFIED: OTX documents none, and the SDK reads a body only on 400
(``BadRequest(response.json())``), so they are JSON in the style of OTX's Django REST framework.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from random import Random
from typing import Any
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from threatintel.simulator.app import Outcome, Simulator
from threatintel.simulator.bodies import (
    ADVERSARIES,
    DAY,
    MALWARE_FAMILIES,
    attack_object,
    day_start,
    hex_id,
    is_bogon,
    is_hostname,
    naive_iso,
    network_for,
    parse_ip,
    rng_for,
    sample,
)
from threatintel.simulator.evidence import OTXEvidence
from threatintel.simulator.scenario import SAMPLE_TRUTHS, IndicatorSpec, Truth, is_hash, normalise

NAME = "otx"
BASE_PATH = "/api/v1"
SERVER_ERROR_STATUSES = (500, 502, 503)
KEY_HEADER = "x-otx-api-key"

logger = logging.getLogger(__name__)

# Sections per slug: the SDK's IndicatorTypes plus the lists the server returned (§2.2).
SECTIONS: dict[str, tuple[str, ...]] = {
    "IPv4": (
        "general",
        "geo",
        "reputation",
        "url_list",
        "passive_dns",
        "malware",
        "nids_list",
        "http_scans",
    ),
    "IPv6": ("general", "geo", "reputation", "url_list", "passive_dns", "malware", "nids_list"),
    "domain": ("general", "geo", "url_list", "passive_dns", "malware", "whois", "http_scans"),
    "hostname": (
        "general",
        "geo",
        "url_list",
        "passive_dns",
        "malware",
        "http_scans",
    ),  # UNVERIFIED
    "url": ("general", "url_list", "http_scans", "screenshot"),
    "file": ("general", "analysis"),
    "cve": ("general",),
}
_CVE = re.compile(r"CVE-\d{4}-\d{4,}", re.IGNORECASE)
_FILE_TYPES = {
    32: ("md5", "FileHash-MD5"),
    40: ("sha1", "FileHash-SHA1"),
    64: ("sha256", "FileHash-SHA256"),
}
_RECORDED = {
    "98.136.103.23": "otx_ipv4_general.json",
    "192.0.2.1": "otx_ipv4_general_2023_shape.json",
    "8.8.88.8": "otx_notfound_or_empty.json",
    "otx.alienvault.com": "otx_domain_general.json",
    "http://www.fotoidea.com/sport/4x4_san_ponso/slides/IMG_0068.html": "otx_url_general.json",
    "6c5360d41bd2b14b1565f5b18e5c203cf512e493": "otx_file_general.json",
}


def routes(simulator: Simulator) -> list[BaseRoute]:
    return [Route("/indicators/{slug}/{rest:path}", simulator.endpoint(NAME, indicator))]


def _detail(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status)


def server_error(request: Request, status: int) -> Response:
    # OTX sits behind a proxy; an HTML error page is the likely shape (UNVERIFIED).
    text = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    page = f"<html><head><title>{status} {text}</title></head><body><h1>{text}</h1></body></html>"
    return Response(page, status, media_type="text/html")


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def registrable(name: str) -> str:
    found = _psl().privatesuffix(name.lower())
    return found if isinstance(found, str) else name.lower()


async def indicator(simulator: Simulator, request: Request) -> Outcome:
    slug = request.path_params["slug"]
    value, _, section = request.path_params["rest"].rpartition("/")
    key = request.headers.get(KEY_HEADER) or None
    config = simulator.config.otx
    source = "header" if key else None
    if key is not None and not config.accepts(key):
        return Outcome(_detail(403, "Invalid API key"), key, source)  # body UNVERIFIED
    if key is None and section != "general":
        return Outcome(_detail(403, "Authentication credentials were not provided."))
    decision = simulator.quotas.acquire(NAME, key or "", config.windows)
    if not decision.allowed:
        headers = (
            {"Retry-After": str(max(1, round(decision.retry_after)))}
            if config.retry_after
            else None
        )
        return Outcome(
            JSONResponse({"detail": "Request was throttled."}, 429, headers), key, source
        )
    served = Outcome(_detail(404, "Not found."), key, source, indicator=value or None, served=True)
    if slug not in SECTIONS or not value:
        return served
    problem = _check(slug, value)
    if problem is not None:
        served.response = _detail(400, problem)
        return served
    if slug == "domain" and registrable(value) != value.lower():
        # The real service answers a sub-domain under `domain`; clients should use `hostname`.
        served.note = "sub-domain under the domain slug"
        logger.warning("OTX simulator: %r queried as domain; hostname is the right slug", value)
    if section != "general":
        return served  # other sections exist upstream but are not simulated
    if slug == "url":
        simulator.remember_url(value)
    spec = simulator.config.scenario.spec(value)
    served.response = JSONResponse(general_body(slug, value, spec, simulator.now()))
    return served


def _check(slug: str, value: str) -> str | None:
    """Why ``value`` does not fit ``slug``, or None. The 400 body shape is UNVERIFIED."""
    address = parse_ip(value)
    if slug in ("IPv4", "IPv6"):
        if address is None or f"IPv{address.version}" != slug:
            return f"Invalid {slug} address: {value}"
        return None
    valid = {
        "domain": lambda: is_hostname(value),
        "hostname": lambda: is_hostname(value),
        "url": lambda: "://" in value and bool(urlsplit(value).hostname),
        "file": lambda: is_hash(value),
        "cve": lambda: _CVE.fullmatch(value) is not None,
    }[slug]()
    return None if valid else f"Invalid {slug} indicator: {value}"


# --- bodies ------------------------------------------------------------------------------


def general_body(slug: str, value: str, spec: IndicatorSpec, now: float) -> Any:
    key = normalise(value)
    recorded = _RECORDED.get(key)
    if recorded is not None and spec.evidence is None and SAMPLE_TRUTHS.get(key) is spec.truth:
        return sample(recorded)
    rng = rng_for(NAME, slug, value)
    stated = spec.evidence.otx if spec.evidence is not None else None
    if slug in ("IPv4", "IPv6"):
        body = _ip_shell(slug, value, spec)
        related_type = slug
    elif slug in ("domain", "hostname"):
        body = _domain_shell(slug, value.lower())
        related_type = slug
    elif slug == "url":
        body = _url_shell(value)
        related_type = "URL"
    elif slug == "file":
        body = _file_shell(value.lower())
        related_type = body["type_title"]
    else:
        body = _cve_shell(value.upper())
        related_type = "CVE"
    if stated is not None:
        pulses = _stated_pulses(value, stated, rng, related_type, now)
    else:
        pulses = _pulses(value, spec, rng, related_type, now)
    info = body["pulse_info"]
    info["count"] = len(pulses)
    info["pulses"] = pulses
    info["references"] = sorted({ref for pulse in pulses for ref in pulse["references"]})
    for pulse in pulses:
        group = info["related"][
            "alienvault" if pulse["author"]["username"] == "AlienVault" else "other"
        ]
        for field, items in (
            ("adversary", [pulse["adversary"]] if pulse["adversary"] else []),
            ("malware_families", [family["display_name"] for family in pulse["malware_families"]]),
            ("industries", pulse["industries"]),
        ):
            group[field].extend(item for item in items if item not in group[field])
    if pulses:
        body["base_indicator"] = {
            "id": rng.randint(10**9, 3 * 10**9),
            "indicator": body["indicator"],
            "type": related_type,
            "title": "",
            "description": "",
            "content": "",
            "access_type": "public",
            "access_reason": "",
        }
    if stated is None:
        body["validation"] = _validation(slug, value, spec.truth)
        return body
    body["validation"] = [_validation_entry(slug, value, src) for src in stated.validation]
    if stated.false_positive:
        # The shape of a false_positive entry is UNVERIFIED: the recorded bodies hold empty lists.
        body["false_positive"] = [
            {"assessment": "accepted", "assessment_date": naive_iso(now - 30 * DAY)}
        ]
    return body


def _validation_entry(slug: str, value: str, source: str) -> dict[str, str]:
    """One OTX validation entry as the service words it for that allowlist source."""
    host = (urlsplit(value).hostname or value) if slug == "url" else value
    if slug in ("IPv4", "IPv6"):
        message = "contained in whitelisted prefix"
        return {"source": source, "message": message, "name": "Whitelisted IP"}
    domain = registrable(host) if is_hostname(host) else host
    names = {
        "alexa": ("Alexa rank: #1", "Listed on Alexa"),
        "akamai": ("Akamai rank: #3", "Akamai Popular Domain"),
    }
    message, name = names.get(source, (f"Whitelisted domain {domain}", "Whitelisted domain"))
    return {"source": source, "message": message, "name": name}


def _validation(slug: str, value: str, truth: Truth) -> list[dict[str, str]]:
    if truth is not Truth.NOISY:
        return []
    if slug in ("IPv4", "IPv6"):
        return [
            {
                "source": "whitelist",
                "message": "contained in whitelisted prefix",
                "name": "Whitelisted IP",
            }
        ]
    if slug in ("domain", "hostname", "url"):
        host = (urlsplit(value).hostname or value) if slug == "url" else value
        message = f"Whitelisted domain {registrable(host)}"
        return [
            {"source": "majestic", "message": message, "name": "Whitelisted domain"},
            {"source": "whitelist", "message": message, "name": "Whitelisted domain"},
        ]
    return []


def _ip_shell(slug: str, value: str, spec: IndicatorSpec) -> Any:
    body = sample("otx_notfound_or_empty.json")
    ip = str(parse_ip(value))
    body.update(
        whois=f"http://whois.domaintools.com/{ip}", indicator=ip, type=slug, type_title=slug
    )
    body["sections"] = list(SECTIONS[slug])
    address = parse_ip(ip)
    if address is not None and is_bogon(address):  # private space: no geo (UNVERIFIED)
        for field in ("asn", "continent_code", "country_code3", "country_code2", "country_code"):
            body[field] = None
        body.update(
            country_name=None, flag_url=None, flag_title=None, latitude=None, longitude=None
        )
        return body
    profile = network_for(ip, spec)
    body.update(
        asn=f"AS{profile.asn} {profile.as_owner}",
        city=profile.city,
        region=profile.region,
        continent_code=profile.continent,
        country_code3=profile.country3,
        country_code2=profile.country,
        latitude=profile.lat,
        postal_code=profile.postal,
        longitude=profile.lon,
        accuracy_radius=rng_for(NAME, "radius", ip).choice((5, 20, 50, 100, 1000)),
        country_code=profile.country,
        country_name=profile.otx_country,
        flag_url=f"/assets/images/flags/{profile.country.lower()}.png",
        flag_title=profile.otx_country,
    )
    return body


def _domain_shell(slug: str, value: str) -> Any:
    body = sample("otx_domain_general.json")
    if slug == "hostname":
        body["sections"] = list(SECTIONS["hostname"])
    body.update(
        whois=f"http://whois.domaintools.com/{value}",
        alexa=f"http://www.alexa.com/siteinfo/{value}",
        indicator=value,
        type=slug,
        type_title="Domain" if slug == "domain" else "Hostname",  # "Hostname" is UNVERIFIED
    )
    return body


def _url_shell(value: str) -> Any:
    body = sample("otx_url_general.json")
    host = (urlsplit(value).hostname or "").lower()
    domain = registrable(host)
    body.update(
        indicator=value,
        alexa=f"http://www.alexa.com/siteinfo/{domain}",
        whois=f"http://whois.domaintools.com/{domain}",
        domain=domain,
        hostname=host,
    )
    return body


def _file_shell(value: str) -> Any:
    body = sample("otx_file_general.json")
    kind, title = _FILE_TYPES[len(value)]
    body.update(type=kind, type_title=title, indicator=value, base_indicator={})
    return body


def _cve_shell(value: str) -> Any:
    # No recorded CVE body exists: the general envelope with CVE types (UNVERIFIED).
    body = sample("otx_domain_general.json")
    for field in ("whois", "alexa"):
        del body[field]
    body.update(sections=["general"], indicator=value, type="CVE", type_title="CVE")
    return body


# --- pulses ------------------------------------------------------------------------------

_ALIENVAULT = sample("otx_ipv4_general.json")["pulse_info"]["pulses"][1]["author"]
_COMMUNITY = ("threatwatch", "honeypot_ops", "cti_feed", "sandbox_mirror", "dfir_notes")


_PULSE_COUNTS = {Truth.MALICIOUS: (3, 6), Truth.SUSPICIOUS: (1, 2), Truth.NOISY: (2, 3)}
_PULSE_NAMES = {
    Truth.MALICIOUS: (
        "{family} C2 infrastructure",
        "{adversary} campaign indicators",
        "{family} IOCs",
    ),
    Truth.SUSPICIOUS: (
        "IP Addresses Logged by the Rosethorn PotNet",
        "Suspicious scanning activity",
    ),
    Truth.NOISY: (
        "Public resolvers seen in malware configs",
        "Sandbox network traffic",
        "Connectivity checks used by malware",
    ),
}
_CVE_PULSE_NAMES = ("{value} exploitation in the wild", "{adversary} exploiting {value}")
_TECHNIQUES = ("T1071", "T1105", "T1566", "T1059", "T1547", "T1027", "T1573")


def _pulses(
    value: str, spec: IndicatorSpec, rng: Random, related_type: str, now: float
) -> list[Any]:
    bounds = _PULSE_COUNTS.get(spec.truth)
    if bounds is None:
        return []
    family = (spec.malware or (rng.choice(MALWARE_FAMILIES),))[0]
    adversary = spec.adversary or rng.choice(ADVERSARIES)
    techniques = list(spec.attack_ids) or rng.sample(_TECHNIQUES, 3)
    names = _CVE_PULSE_NAMES if related_type == "CVE" else _PULSE_NAMES[spec.truth]
    pulses = []
    for index in range(rng.randint(*bounds)):
        # The first two malicious pulses are attributed; attribution the scenario spells out
        # also lands on the first pulse of a suspicious or noisy indicator.
        attributed = spec.truth is Truth.MALICIOUS and index < 2
        explicit = index == 0
        name = names[index % len(names)].format(family=family, adversary=adversary, value=value)
        if index == 0 and spec.pulse_name is not None:
            name = spec.pulse_name  # verbatim: attacker-controlled text is the point
        pulses.append(
            _pulse(
                rng,
                pulse_id=hex_id(24, "pulse", value, str(index)),
                name=name,
                now=now,
                related_type=related_type,
                official=attributed and index == 0,
                adversary=adversary if attributed or (explicit and spec.adversary) else "",
                families=list(spec.malware or (family,))
                if attributed or (explicit and spec.malware)
                else [],
                techniques=techniques if attributed or (explicit and spec.attack_ids) else [],
                tags=[family.lower()] if attributed else [],
                active=spec.truth is Truth.MALICIOUS,
                short=spec.truth is Truth.MALICIOUS,
            )
        )
    return pulses


def _pulse(
    rng: Random,
    *,
    pulse_id: str,
    name: str,
    now: float,
    related_type: str,
    official: bool,
    adversary: str,
    families: list[str],
    techniques: list[str],
    tags: list[str],
    active: bool,
    short: bool = True,
) -> Any:
    """One pulse, shaped like the recorded Emotet pulse (sample #2)."""
    created = day_start(now) - rng.randint(2, 400) * DAY + rng.randint(0, DAY - 1) + rng.random()
    pulse = sample("otx_ipv4_general.json")["pulse_info"]["pulses"][1]
    pulse.update(
        id=pulse_id,
        name=name,
        description=f"Indicators collected {naive_iso(created)[:10]}.",
        modified=naive_iso(min(created + rng.randint(0, 20) * DAY, now)),
        created=naive_iso(created),
        tags=tags,
        references=[f"https://intel.example.org/reports/{pulse_id[:10]}"],
        adversary=adversary,
        targeted_countries=["United States of America"] if adversary else [],
        malware_families=[{"id": f, "display_name": f, "target": None} for f in families],
        attack_ids=[attack_object(technique) for technique in techniques],
        industries=["finance"] if adversary else [],
        TLP=rng.choice(("white", "green", "amber")),
        export_count=rng.randint(0, 80),
        author=dict(_ALIENVAULT) if official else _community_author(rng),
        # Pulses about a malicious value are short IOC lists; the ones that mention a suspicious
        # or noisy value are big lists (honeypot logs, sandbox traffic) that name thousands.
        indicator_type_counts={
            related_type: rng.randint(1, 60) if short else rng.randint(400, 5000),
            "URL": rng.randint(0, 20),
        },
        subscriber_count=rng.randint(3, 300),
        modified_text=f"{max(1, int((now - created) // DAY))} days ago ",
        related_indicator_type=related_type,
        related_indicator_is_active=int(active),
    )
    pulse["indicator_count"] = sum(pulse["indicator_type_counts"].values())
    return pulse


# Big pulses that list popular infrastructure among thousands of indicators: the realistic
# noise around resolvers, CDNs and code hosting. Some name the malware whose traffic they hold.
_CONTEXT_PULSES = (
    ("Sandbox network traffic {n}", ""),
    ("{family} sample network indicators {n}", "family"),
    ("Domains contacted by {family} samples", "family"),
    ("Public infrastructure abused by malware", ""),
    ("Connectivity checks and resolvers used by malware", ""),
    ("Daily IOC dump {n}", ""),
)


def _stated_pulses(
    value: str, stated: OTXEvidence, rng: Random, related_type: str, now: float
) -> list[Any]:
    """The scenario's own pulses first, then the context pulses that merely mention it."""
    pulses = []
    for index, spec in enumerate(stated.pulses):
        pulse = _pulse(
            rng,
            pulse_id=hex_id(24, "pulse", value, str(index)),
            name=spec.name,
            now=now,
            related_type=related_type,
            official=index == 0 and bool(spec.adversary),
            adversary=spec.adversary,
            families=list(spec.malware),
            techniques=list(spec.attack_ids),
            tags=[family.lower() for family in spec.malware],
            active=True,
        )
        _date_and_size(pulse, now - spec.age_days * DAY, spec.indicators, related_type)
        pulses.append(pulse)
    for index in range(stated.context_pulses):
        template, kind = _CONTEXT_PULSES[index % len(_CONTEXT_PULSES)]
        family = rng.choice(MALWARE_FAMILIES)
        serial = f"{2022 + index % 4}-{1 + index % 12:02d}"
        pulse = _pulse(
            rng,
            pulse_id=hex_id(24, "context", value, str(index)),
            name=template.format(n=serial, family=family),
            now=now,
            related_type=related_type,
            official=False,
            adversary="",
            families=[family] if kind else [],
            techniques=["T1071"] if kind else [],
            tags=["sandbox"],
            active=False,
        )
        # Popular addresses keep turning up in fresh dumps: ages spread over two and a half years.
        age = rng.randint(0, 900)
        _date_and_size(pulse, now - age * DAY, rng.randint(400, 9000), related_type)
        pulses.append(pulse)
    return pulses


def _date_and_size(pulse: dict[str, Any], modified: float, size: int, related_type: str) -> None:
    created = modified - 3 * DAY  # pulses are edited a few days after they are made
    pulse.update(
        modified=naive_iso(modified),
        created=naive_iso(created),
        description=f"Indicators collected {naive_iso(created)[:10]}.",
        indicator_type_counts={related_type: size},
        indicator_count=size,
    )


def _community_author(rng: Random) -> dict[str, Any]:
    user_id = str(rng.randint(10_000, 300_000))
    return {
        "username": rng.choice(_COMMUNITY),
        "id": user_id,
        "avatar_url": (
            f"/otxapi/users/avatar_image/media/avatars/user_{user_id}/resized/80/avatar_3b9c358f36.png"
        ),
        "is_subscribed": False,
        "is_following": False,
    }
