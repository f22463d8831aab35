"""AlienVault OTX DirectConnect v1, `general` section (contracts §2)."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from threatintel.errors import AuthenticationFailed
from threatintel.models import (
    IP_TYPES,
    Geo,
    Indicator,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
)
from threatintel.providers.base import (
    Call,
    HttpProvider,
    Json,
    as_asn,
    as_country,
    as_int,
    as_str,
    from_iso,
    str_list,
)

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
        raw_pulses = info.get("pulses")
        if not isinstance(raw_pulses, list):
            raw_pulses = []
        pulses = [p for p in (_pulse(raw) for raw in raw_pulses[:MAX_PULSES]) if p is not None]
        count = as_int(info.get("count"))
        count = max(count if count is not None else 0, len(pulses))
        adversaries: list[str] = []
        families: list[str] = []
        attack_ids: list[str] = []
        tags: list[str] = []
        for pulse in pulses:
            if pulse.adversary:
                _add(adversaries, [pulse.adversary])
            _add(families, pulse.malware_families)
            _add(attack_ids, pulse.attack_ids)
            _add(tags, pulse.tags[:10])
        related = info.get("related")
        if isinstance(related, dict):
            for group in related.values():
                if isinstance(group, dict):
                    _add(adversaries, str_list(group.get("adversary")))
                    _add(families, str_list(group.get("malware_families")))
        allowlisted = _allowlists(body)
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
            )
        return self.result(
            SourceStatus.OK,
            indicator,
            pulse_count=count,
            pulses=pulses,
            adversaries=adversaries,
            malware_families=families,
            attack_ids=attack_ids,
            tags=tags[:30],
            allowlisted_by=allowlisted,
            reputation=as_int(body.get("reputation")),
            geo=geo,
            first_seen=min(created) if created else None,
            last_seen=max(d for d in modified if d) if modified else None,
        )


def _add(target: list[str], values: list[str]) -> None:
    for value in values:
        if value not in target:
            target.append(value)


def _named(values: Any, key: str) -> list[str]:
    """OTX lists hold objects ({"id", "display_name"}) in responses; tolerate plain strings."""
    out: list[str] = []
    if not isinstance(values, list):
        return out
    for value in values:
        text = as_str(value.get(key)) if isinstance(value, dict) else as_str(value)
        if text and text not in out:
            out.append(text)
    return out


def _pulse(raw: Any) -> Pulse | None:
    if not isinstance(raw, dict):
        return None
    return Pulse(
        id=as_str(raw.get("id")) or "",
        name=as_str(raw.get("name")) or "(unnamed pulse)",
        adversary=as_str(raw.get("adversary"), limit=100),
        malware_families=_named(raw.get("malware_families"), "display_name"),
        attack_ids=_named(raw.get("attack_ids"), "id"),
        tags=str_list(raw.get("tags")),
        tlp=as_str(raw.get("TLP") or raw.get("tlp")),
        created=from_iso(raw.get("created")),
        modified=from_iso(raw.get("modified")),
        indicator_count=_size(raw.get("indicator_count")),
    )


def _size(value: Any) -> int | None:
    count = as_int(value)
    return count if count is not None and count >= 0 else None


def _allowlists(body: Json) -> list[str]:
    """OTX `validation` entries (e.g. "Whitelisted domain" from majestic) and false positives."""
    found: list[str] = []
    for entry in body.get("validation") or []:
        if isinstance(entry, dict):
            source = as_str(entry.get("source"))
            name = as_str(entry.get("name")) or "validation"
            label = f"{name} ({source})" if source else name
            if label not in found:
                found.append(label)
    for entry in body.get("false_positive") or []:
        if entry and "known false positive" not in found:
            found.append("known false positive")
    return found


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
