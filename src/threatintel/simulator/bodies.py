"""Shared material for the generated bodies: the recorded samples, seeded randomness, networks.

Every generated body starts as a deep copy of a recorded contract sample (``samples/``), so the
structure, key order and odd spots of the real services survive; only values change. Randomness
is seeded from the indicator value, so one value always yields the same body (timestamps move
with the injected clock, a day at a time).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from threatintel.simulator.scenario import IndicatorSpec, Truth

DAY = 86_400


@cache
def sample_text(name: str) -> str:
    path = resources.files("threatintel.simulator").joinpath("samples", name)
    return path.read_text("utf-8")


def sample(name: str) -> Any:
    """A fresh (deep) copy of a recorded sample body."""
    return json.loads(sample_text(name))


def rng_for(*parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def hex_id(length: int, *parts: str) -> str:
    text = "".join(
        hashlib.sha256(f"{i}\x1f{'|'.join(parts)}".encode()).hexdigest() for i in range(2)
    )
    return text[:length]


def substitute(node: Any, old: str, new: str) -> Any:
    """Replace ``old`` by ``new`` in every string of a JSON tree (keys included)."""
    if isinstance(node, str):
        return node.replace(old, new)
    if isinstance(node, list):
        return [substitute(item, old, new) for item in node]
    if isinstance(node, dict):
        return {substitute(k, old, new): substitute(v, old, new) for k, v in node.items()}
    return node


def day_start(now: float) -> int:
    return int(now // DAY * DAY)


def naive_iso(timestamp: float) -> str:
    """OTX's timestamps: ISO-8601 with microseconds and no zone."""
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .replace(tzinfo=None)
        .isoformat(timespec="microseconds")
    )


def offset_iso(timestamp: float) -> str:
    """AbuseIPDB's timestamps: ISO-8601 seconds with ``+00:00``."""
    return datetime.fromtimestamp(int(timestamp), UTC).isoformat()


# The official IPinfo SDK's bogon list (ipinfo/bogon.py); AbuseIPDB calls the same ranges
# non-public.
_BOGONS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "255.255.255.255/32", "::/128", "::1/128", "::ffff:0:0/96", "::/96", "100::/64",
        "2001:10::/28", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip


def is_bogon(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(ip.version == net.version and ip in net for net in _BOGONS)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """Who announces an address and where it sits; one profile feeds all four vendors."""

    asn: int
    org: str  # IPinfo "org" after the ASN; AbuseIPDB "isp"
    as_owner: str  # VirusTotal "as_owner"; OTX "asn" after the ASN
    domain: str
    usage_type: str
    country: str
    country_name: str  # AbuseIPDB's spelling
    otx_country: str  # OTX's spelling
    country3: str
    continent: str
    rir: str
    city: str
    region: str
    postal: str
    timezone: str
    lat: float
    lon: float
    hostname: str | None = None  # a template with {dashed}, e.g. "ec2-{dashed}.compute-1..."
    anycast: bool = False

    def hostname_for(self, ip: str) -> str | None:
        if self.hostname is None:
            return None
        return self.hostname.format(dashed=ip.replace(".", "-").replace(":", "-"))

    @property
    def loc(self) -> str:
        return f"{self.lat:.4f},{self.lon:.4f}"


# fmt: off
_HOSTING = "Data Center/Web Hosting/Transit"
_CDN = "Content Delivery Network"
_ISP = "Fixed Line ISP"
_US = ("US", "United States", "United States of America", "USA", "NA", "ARIN")
_DE = ("DE", "Germany", "Germany", "DEU", "EU", "RIPE NCC")
_UK = "United Kingdom of Great Britain and Northern Ireland"
_HOSTERS = (
    NetworkProfile(9009, "M247 Europe SRL", "M247 Europe SRL", "m247.com", _HOSTING,
                   "RO", "Romania", "Romania", "ROU", "EU", "RIPE NCC", "Bucharest",
                   "Bucure\u0219ti", "010011", "Europe/Bucharest", 44.4323, 26.1063),
    NetworkProfile(16276, "OVH SAS", "OVH SAS", "ovh.net", _HOSTING,
                   "FR", "France", "France", "FRA", "EU", "RIPE NCC", "Roubaix",
                   "Hauts-de-France", "59100", "Europe/Paris", 50.6942, 3.1746,
                   "ip{dashed}.ip-ovh.net"),
    NetworkProfile(14061, "DigitalOcean, LLC", "DIGITALOCEAN-ASN", "digitalocean.com", _HOSTING,
                   *_US, "North Bergen", "New Jersey", "07047", "America/New_York",
                   40.793, -74.0247),
    NetworkProfile(49505, "JSC Selectel", "Selectel", "selectel.ru", _HOSTING,
                   "RU", "Russian Federation", "Russian Federation", "RUS", "EU", "RIPE NCC",
                   "Saint Petersburg", "St.-Petersburg", "190000", "Europe/Moscow",
                   59.9386, 30.3141),
    NetworkProfile(60729, "Stiftung Erneuerbare Freiheit", "Stiftung Erneuerbare Freiheit",
                   "artikel10.org", _HOSTING, *_DE, "Berlin", "Land Berlin", "10115",
                   "Europe/Berlin", 52.5244, 13.4105),
)
_EYEBALLS = (
    NetworkProfile(7922, "Comcast Cable Communications, LLC", "COMCAST-7922", "comcast.net",
                   _ISP, *_US, "Chicago", "Illinois", "60602", "America/Chicago",
                   41.8781, -87.6298, "c-{dashed}.hsd1.il.comcast.net"),
    NetworkProfile(3320, "Deutsche Telekom AG", "Deutsche Telekom AG", "telekom.de", _ISP,
                   *_DE, "Frankfurt am Main", "Hesse", "60311", "Europe/Berlin",
                   50.1155, 8.6842),
    NetworkProfile(16509, "Amazon.com, Inc.", "AMAZON-02", "amazon.com", _HOSTING, *_US,
                   "Ashburn", "Virginia", "20147", "America/New_York", 39.0437, -77.4875,
                   "ec2-{dashed}.compute-1.amazonaws.com"),
    NetworkProfile(8075, "Microsoft Corporation", "MICROSOFT-CORP-MSN-AS-BLOCK", "microsoft.com",
                   _HOSTING, *_US, "Boydton", "Virginia", "23917", "America/New_York",
                   36.6676, -78.3875),
    NetworkProfile(2856, "British Telecommunications PLC", "British Telecommunications PLC",
                   "bt.com", _ISP, "GB", "United Kingdom", _UK, "GBR", "EU", "RIPE NCC",
                   "London", "England", "EC1A", "Europe/London", 51.5085, -0.1257),
)
_GOOGLE = NetworkProfile(15169, "Google LLC", "GOOGLE", "google.com", _CDN, *_US,
                         "Mountain View", "California", "94043", "America/Los_Angeles",
                         37.4056, -122.0775, anycast=True)
_CLOUDFLARE = NetworkProfile(13335, "Cloudflare, Inc.", "CLOUDFLARENET", "cloudflare.com", _CDN,
                             *_US, "San Francisco", "California", "94107",
                             "America/Los_Angeles", 37.7621, -122.3971, anycast=True)
_QUAD9 = NetworkProfile(19281, "Quad9", "QUAD9-AS-1", "quad9.net", _CDN, *_US, "Berkeley",
                        "California", "94709", "America/Los_Angeles", 37.8716, -122.2727,
                        anycast=True)
# fmt: on
_INFRASTRUCTURE = (_GOOGLE, _CLOUDFLARE, _QUAD9)
_WELL_KNOWN: dict[str, tuple[NetworkProfile, str]] = {
    "8.8.8.8": (_GOOGLE, "dns.google"),
    "8.8.4.4": (_GOOGLE, "dns.google"),
    "1.1.1.1": (_CLOUDFLARE, "one.one.one.one"),
    "1.0.0.1": (_CLOUDFLARE, "one.one.one.one"),
    "2606:4700:4700::1111": (_CLOUDFLARE, "one.one.one.one"),
    "9.9.9.9": (_QUAD9, "dns9.quad9.net"),
}  # fmt: skip


def network_profile(ip: str, truth: Truth) -> NetworkProfile:
    known = _WELL_KNOWN.get(ip)
    if known is not None:
        profile, hostname = known
        return replace(profile, hostname=hostname)
    pool: tuple[NetworkProfile, ...]
    if truth in (Truth.MALICIOUS, Truth.SUSPICIOUS):
        pool = _HOSTERS
    elif truth is Truth.NOISY:
        pool = _INFRASTRUCTURE
    else:
        pool = _EYEBALLS
    return rng_for("network", ip).choice(pool)


def network_for(ip: str, spec: IndicatorSpec) -> NetworkProfile:
    """The network profile, with the owner, country, anycast flag and usage type stated."""
    profile = network_profile(ip, spec.truth)
    evidence = spec.evidence
    if evidence is None:
        return profile
    if evidence.ipinfo is not None:
        owner = evidence.ipinfo.asn_and_name()
        if owner is not None:
            asn, name = owner
            domain = profile.domain if name == profile.org else _owner_domain(name)
            profile = replace(
                profile, asn=asn, org=name, as_owner=name.upper(), domain=domain, hostname=None
            )
        if evidence.ipinfo.anycast is not None:
            profile = replace(profile, anycast=evidence.ipinfo.anycast)
        if evidence.ipinfo.country is not None:
            profile = replace(profile, country=evidence.ipinfo.country)
    if evidence.abuseipdb is not None and evidence.abuseipdb.usage is not None:
        profile = replace(profile, usage_type=evidence.abuseipdb.usage)
    return profile


def _owner_domain(name: str) -> str:
    """A plausible web domain for a stated network owner: "Fastly, Inc." → fastly.com."""
    word = re.sub(r"[^a-z0-9]", "", name.split(",")[0].split(" ")[0].lower())
    return f"{word or 'example'}.com"


def cidr(ip: str) -> str:
    """The announced prefix, as VirusTotal's ``network``: /24 for IPv4, /48 for IPv6."""
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


# Threat-intel vocabulary for generated pulses and detections.
ADVERSARIES = ("TA542", "APT28", "FIN7", "Lazarus Group", "TA505", "Wizard Spider")
MALWARE_FAMILIES = (
    "Emotet",
    "AgentTesla",
    "Qakbot",
    "RedLine Stealer",
    "Formbook",
    "Cobalt Strike",
)
ATTACK_TECHNIQUES: dict[str, str] = {
    "T1027": "Obfuscated Files or Information",
    "T1040": "Network Sniffing",
    "T1053": "Scheduled Task/Job",
    "T1059": "Command and Scripting Interpreter",
    "T1071": "Application Layer Protocol",
    "T1082": "System Information Discovery",
    "T1105": "Ingress Tool Transfer",
    "T1110": "Brute Force",
    "T1140": "Deobfuscate/Decode Files or Information",
    "T1190": "Exploit Public-Facing Application",
    "T1204": "User Execution",
    "T1547": "Boot or Logon Autostart Execution",
    "T1566": "Phishing",
    "T1573": "Encrypted Channel",
    "T1595": "Active Scanning",
}


def attack_object(technique: str) -> dict[str, str]:
    """OTX's attack_ids entry: ``{"id", "name", "display_name"}``."""
    name = ATTACK_TECHNIQUES.get(technique, technique)
    return {"id": technique, "name": name, "display_name": f"{technique} - {name}"}


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def is_hostname(value: str) -> bool:
    """A syntactically valid DNS name with at least two labels and a non-numeric TLD."""
    labels = value.lower().rstrip(".").split(".")
    if len(labels) < 2 or len(value) > 253 or labels[-1].isdigit():
        return False
    return all(_LABEL.fullmatch(label) for label in labels)
