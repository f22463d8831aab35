"""AlienVault OTX DirectConnect v1, `general` section (contracts §2)."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from threatintel import findings
from threatintel.errors import AuthenticationFailed
from threatintel.findings import Evaluator
from threatintel.models import (
    IP_TYPES,
    Geo,
    Indicator,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
)
from threatintel.providers.base import Call, HttpProvider, Json
from threatintel.providers.facts import QuotaWindow
from threatintel.providers.values import Kept, as_asn, as_country, as_int, as_str, from_iso
from threatintel.quota.base import Window

# Slug casing matters: IPv4/IPv6 capitalised, the rest lower-case (contracts §2.5.1).
_SLUGS: dict[IndicatorType, str] = {
    IndicatorType.IPV4: "IPv4",
    IndicatorType.IPV6: "IPv6",
    IndicatorType.DOMAIN: "domain",
    IndicatorType.URL: "url",
    IndicatorType.MD5: "file",
    IndicatorType.SHA1: "file",
    IndicatorType.SHA256: "file",
}
_GUI = {
    "IPv4": "ip",
    "IPv6": "ip",
    "domain": "domain",
    "hostname": "hostname",
    "url": "url",
    "file": "file",
}
#: Kept in a URL indicator as-is: OTX routes `/indicators/url/<value>/general` with the value
#: unencoded, `://` and `/` included; `?`, `#` and `%` must be escaped or they are lost.
_URL_SAFE = ":/@!$&'()*+,;=-._~"
MAX_PULSES = 50
#: Per pulse: its families, techniques and tags (real pulses carry a handful of each).
MAX_PER_PULSE = 20
MAX_TAGS = 30


def slug(indicator: Indicator) -> str:
    """OTX's section name for an indicator: sub-domains are `hostname`, not `domain`."""
    if indicator.type is IndicatorType.DOMAIN and indicator.registrable_domain not in (
        None,
        indicator.value,
    ):
        return "hostname"
    return _SLUGS[indicator.type]


class OTX(HttpProvider):
    name: ClassVar[str] = "otx"
    title: ClassVar[str] = "AlienVault OTX"
    display: ClassVar[str] = "OTX"
    windows: ClassVar[tuple[QuotaWindow, ...]] = (QuotaWindow(Window.per_hour, "otx_rate_limit"),)
    evaluator: ClassVar[Evaluator | None] = findings.otx
    supports: ClassVar[frozenset[IndicatorType]] = frozenset(_SLUGS)
    # The general section answers without a key (contracts §2.1).
    requires_key: ClassVar[bool] = False

    def request(self, indicator: Indicator, api_key: str | None) -> Call:
        value = quote(indicator.value, safe=_URL_SAFE)
        headers = {"accept": "application/json"}
        if api_key:
            headers["X-OTX-API-KEY"] = api_key
        return Call("GET", f"/indicators/{slug(indicator)}/{value}/general", headers=headers)

    def link(self, indicator: Indicator) -> str | None:
        return f"https://otx.alienvault.com/indicator/{_GUI[slug(indicator)]}/" + quote(
            indicator.value, safe=_URL_SAFE
        )

    def check(self, indicator: Indicator, response: httpx.Response) -> SourceResult | None:
        if response.status_code == 404:
            # Some unknown indicators get a bare 404 instead of zero pulses: both mean "no intel".
            return self.result(SourceStatus.NOT_FOUND, indicator, message="no OTX pulses")
        if response.status_code == 403:
            raise AuthenticationFailed(
                self.name, "OTX rejected the API key (HTTP 403)", status_code=403
            )
        return super().check(indicator, response)

    def parse(self, indicator: Indicator, body: Json) -> SourceResult:
        info: dict[str, Any] = body.get("pulse_info") or {}
        kept = Kept()
        raw_pulses = info.get("pulses")
        if not isinstance(raw_pulses, list):
            raw_pulses = []
        if len(raw_pulses) > MAX_PULSES:
            kept.dropped["pulses"] = len(raw_pulses) - MAX_PULSES
        pulses = [
            p for p in (_pulse(raw, kept) for raw in raw_pulses[:MAX_PULSES]) if p is not None
        ]
        count = as_int(info.get("count"))
        count = max(count if count is not None else 0, len(pulses))
        related_adversaries: list[str | None] = []
        related_families: list[str | None] = []
        related = info.get("related")
        if isinstance(related, dict):
            for group in list(related.values())[:MAX_PER_PULSE]:
                if isinstance(group, dict):
                    related_adversaries += kept.strings("adversaries", group.get("adversary"))
                    related_families += kept.strings(
                        "malware_families", group.get("malware_families")
                    )
        adversaries = kept.unique(
            "adversaries", [*(p.adversary for p in pulses), *related_adversaries]
        )
        families = kept.unique(
            "malware_families",
            [*(f for p in pulses for f in p.malware_families), *related_families],
        )
        attack_ids = kept.unique("attack_ids", (t for p in pulses for t in p.attack_ids))
        tags = kept.unique("tags", (t for p in pulses for t in p.tags[:10]), limit=MAX_TAGS)
        allowlisted = _allowlists(body, kept)
        created = [p.created for p in pulses if p.created]
        modified = [p.modified or p.created for p in pulses if p.modified or p.created]
        geo = _geo(body) if indicator.type in IP_TYPES else None
        if count == 0 and not allowlisted:
            return self.result(
                SourceStatus.NOT_FOUND,
                indicator,
                message="no OTX pulses",
                pulse_count=0,
                geo=geo,
                reputation=as_int(body.get("reputation")),
                truncated=kept.dropped,
            )
        return self.result(
            SourceStatus.OK,
            indicator,
            pulse_count=count,
            pulses=pulses,
            adversaries=adversaries,
            malware_families=families,
            attack_ids=attack_ids,
            tags=tags,
            allowlisted_by=allowlisted,
            reputation=as_int(body.get("reputation")),
            geo=geo,
            first_seen=min(created) if created else None,
            last_seen=max(d for d in modified if d) if modified else None,
            truncated=kept.dropped,
        )


def _named(values: Any, key: str) -> list[str | None]:
    """OTX lists hold objects ({"id", "display_name"}) in responses; tolerate plain strings."""
    if not isinstance(values, list):
        return []
    return [as_str(v.get(key)) if isinstance(v, dict) else as_str(v) for v in values]


def _pulse(raw: Any, kept: Kept) -> Pulse | None:
    if not isinstance(raw, dict):
        return None
    return Pulse(
        id=as_str(raw.get("id")) or "",
        name=as_str(raw.get("name")) or "(unnamed pulse)",
        adversary=as_str(raw.get("adversary"), limit=100),
        malware_families=kept.unique(
            "pulse_malware_families",
            _named(raw.get("malware_families"), "display_name"),
            limit=MAX_PER_PULSE,
        ),
        attack_ids=kept.unique(
            "pulse_attack_ids", _named(raw.get("attack_ids"), "id"), limit=MAX_PER_PULSE
        ),
        tags=kept.strings("pulse_tags", raw.get("tags"), limit=MAX_PER_PULSE),
        tlp=as_str(raw.get("TLP") or raw.get("tlp")),
        created=from_iso(raw.get("created")),
        modified=from_iso(raw.get("modified")),
        indicator_count=_size(raw.get("indicator_count")),
    )


def _size(value: Any) -> int | None:
    count = as_int(value)
    return count if count is not None and count >= 0 else None


def _allowlists(body: Json, kept: Kept) -> list[str]:
    """OTX `validation` entries (e.g. "Whitelisted domain" from majestic) and false positives."""
    labels: list[str | None] = []
    validation = body.get("validation")
    for entry in validation if isinstance(validation, list) else []:
        if isinstance(entry, dict):
            source = as_str(entry.get("source"))
            name = as_str(entry.get("name")) or "validation"
            labels.append(f"{name} ({source})" if source else name)
    false_positive = body.get("false_positive")
    if isinstance(false_positive, list) and any(false_positive):
        labels.append("known false positive")
    return kept.unique("allowlisted_by", labels)


def _geo(body: Json) -> Geo | None:
    asn_text = as_str(body.get("asn"))
    asn = org = None
    if asn_text and asn_text.upper().startswith("AS"):
        number, _, org = asn_text[2:].partition(" ")
        asn = as_asn(number)
    lat, lon = body.get("latitude"), body.get("longitude")
    country = as_country(body.get("country_code")) or as_country(body.get("country_code2"))
    if not any((asn, country, body.get("city"))):
        return None
    return Geo(
        city=as_str(body.get("city")),
        region=as_str(body.get("region")) or as_str(body.get("subdivision")),
        country=country,
        asn=asn,
        organization=org or None,
        latitude=float(lat) if isinstance(lat, int | float) and not isinstance(lat, bool) else None,
        longitude=float(lon)
        if isinstance(lon, int | float) and not isinstance(lon, bool)
        else None,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
