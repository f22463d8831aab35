"""The provider registry: one plain dict, in the order results are shown.

Each entry carries its vendor's facts (``HttpProvider``'s class attributes): display names,
the indicator types it serves, its quota windows and the settings holding their limits, its
key's setting, its scoring evaluator. The engine, scoring, reports and the CLI read them from
here, so a fifth source is one module (plus its simulator) and one line below. A test or a
plug-in registers one the same way: ``PROVIDERS[Example.name] = Example``.
"""

from __future__ import annotations

from threatintel.providers.abuseipdb import AbuseIPDB
from threatintel.providers.base import Call, HttpProvider, Provider
from threatintel.providers.facts import Limits, QuotaWindow
from threatintel.providers.ipinfo import IPinfo
from threatintel.providers.otx import OTX
from threatintel.providers.virustotal import VirusTotal

PROVIDERS: dict[str, type[HttpProvider]] = {
    VirusTotal.name: VirusTotal,
    OTX.name: OTX,
    AbuseIPDB.name: AbuseIPDB,
    IPinfo.name: IPinfo,
}


def title_of(name: str) -> str:
    """The vendor's full name ("AlienVault OTX"); an unregistered source shows its own name."""
    cls = PROVIDERS.get(name)
    return cls.title if cls is not None else name


def display_name(name: str) -> str:
    """The vendor as verdict reasons name it ("OTX")."""
    cls = PROVIDERS.get(name)
    return cls.display if cls is not None else name


def short_name(name: str) -> str:
    """The vendor as the terminal's narrow columns name it ("VT")."""
    cls = PROVIDERS.get(name)
    return cls.abbrev if cls is not None else name


__all__ = [
    "OTX",
    "PROVIDERS",
    "AbuseIPDB",
    "Call",
    "HttpProvider",
    "IPinfo",
    "Limits",
    "Provider",
    "QuotaWindow",
    "VirusTotal",
    "display_name",
    "short_name",
    "title_of",
]
