"""The provider registry: one plain dict, in the order results are shown."""

from __future__ import annotations

from threatintel.providers.abuseipdb import AbuseIPDB
from threatintel.providers.base import Call, HttpProvider, Provider
from threatintel.providers.ipinfo import IPinfo
from threatintel.providers.otx import OTX
from threatintel.providers.virustotal import VirusTotal

PROVIDERS: dict[str, type[HttpProvider]] = {
    VirusTotal.name: VirusTotal,
    OTX.name: OTX,
    AbuseIPDB.name: AbuseIPDB,
    IPinfo.name: IPinfo,
}

__all__ = [
    "OTX",
    "PROVIDERS",
    "AbuseIPDB",
    "Call",
    "HttpProvider",
    "IPinfo",
    "Provider",
    "VirusTotal",
]
