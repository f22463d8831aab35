"""STIX values for ``reports.stix``: deterministic ids, patterns and observables for one
indicator, safe text and URIs, and ATT&CK external references. Pure functions of the models.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import idna
import stix2  # type: ignore[import-untyped]

from threatintel._visible import one_line
from threatintel.models import (
    AttackRef,
    Indicator,
    IndicatorType,
    SourceResult,
)

#: Never change this: every non-SCO id is derived from it.
NAMESPACE = uuid.UUID("d7471d92-c362-4dd7-965c-010d5908bb0f")

MAX_TEXT = 1000

_PATTERN_PATHS: dict[IndicatorType, str] = {
    IndicatorType.IPV4: "ipv4-addr:value",
    IndicatorType.IPV6: "ipv6-addr:value",
    IndicatorType.DOMAIN: "domain-name:value",
    IndicatorType.URL: "url:value",
    IndicatorType.MD5: "file:hashes.MD5",
    IndicatorType.SHA1: "file:hashes.'SHA-1'",
    IndicatorType.SHA256: "file:hashes.'SHA-256'",
    IndicatorType.EMAIL: "email-addr:value",
}

_HASH_NAMES: dict[IndicatorType, str] = {
    IndicatorType.MD5: "MD5",
    IndicatorType.SHA1: "SHA-1",
    IndicatorType.SHA256: "SHA-256",
}

_ASN = re.compile(r"(?:AS)?([0-9]{1,10})", re.IGNORECASE)

_ATTACK_ID = re.compile(r"([GST][0-9]{4})(?:\.([0-9]{3}))?")

# Everything RFC 3986 allows outside the authority, besides what quote() never encodes.
_URI_SAFE = "!$&'()*+,;=:@/?%"

_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")

_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class _StixObject(Protocol):
    """The little this module needs from a stix2 object (the library has no type hints)."""

    @property
    def id(self) -> str: ...

    def serialize(self, *, indent: int | None = ...) -> str: ...


def _new(factory: Any, **properties: Any) -> _StixObject:
    obj: _StixObject = factory(**properties)
    return obj


def _utc(moment: datetime) -> datetime:
    # Naive datetimes in the models are UTC (utcnow is the default factory).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _id(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, f'{kind}:{key}')}"


def _plain(text: str, limit: int = MAX_TEXT) -> str:
    """Upstream text as one line of inert plain text: control, bidi and zero-width characters
    shown as escapes ("\\u202e"), as in every report a person reads (``_visible``)."""
    return one_line(text, limit)


def _uri(value: str) -> str:
    """The same URL as a valid RFC 3986 URI: percent-encode only what a URI cannot contain."""
    value = _STRAY_PERCENT.sub("%25", value)
    authority = _AUTHORITY.match(value)
    head = authority[0] if authority else ""
    rest, hash_, fragment = value[len(head) :].partition("#")
    # Brackets are legal only around an IPv6 host, and "#" only once.
    return (
        quote(head, safe=_URI_SAFE + "[]")
        + quote(rest, safe=_URI_SAFE)
        + hash_
        + quote(fragment, safe=_URI_SAFE)
    )


def _string(value: str) -> str:
    """A STIX pattern string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _asn_number(value: str) -> int | None:
    match = _ASN.fullmatch(value.strip())
    return int(match[1]) if match and int(match[1]) < 2**32 else None


def _hostname(value: str) -> bool:
    """Whether the value is a host name as the spec (and so the validator) understands it."""
    try:
        idna.encode(value)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


def _observable_value(indicator: Indicator) -> str:
    return _uri(indicator.value) if indicator.type is IndicatorType.URL else indicator.value


def _pattern(indicator: Indicator) -> str | None:
    kind, value = indicator.type, _observable_value(indicator)
    if kind in _PATTERN_PATHS:
        return f"[{_PATTERN_PATHS[kind]} = {_string(value)}]"
    if kind is IndicatorType.CIDR:
        family = "ipv6-addr" if ":" in value else "ipv4-addr"
        return f"[{family}:value ISSUBSET {_string(value)}]"
    if kind is IndicatorType.ASN:
        number = _asn_number(value)
        return None if number is None else f"[autonomous-system:number = {number}]"
    return None  # CVE: a vulnerability is not observable, so there is nothing to match


def _observable(indicator: Indicator, markings: list[str]) -> _StixObject | None:
    kind, value = indicator.type, _observable_value(indicator)
    common: dict[str, Any] = {"object_marking_refs": markings}
    if kind is IndicatorType.IPV4 or (kind is IndicatorType.CIDR and ":" not in value):
        return _new(stix2.IPv4Address, value=value, **common)
    if kind is IndicatorType.IPV6 or kind is IndicatorType.CIDR:
        return _new(stix2.IPv6Address, value=value, **common)
    if kind is IndicatorType.DOMAIN:
        # DNS allows names a domain-name SCO may not hold ("_dmarc.example.com"): such a value
        # keeps its indicator (a pattern may compare any string) but gets no observable.
        return _new(stix2.DomainName, value=value, **common) if _hostname(value) else None
    if kind is IndicatorType.URL:
        return _new(stix2.URL, value=value, **common)
    if kind in _HASH_NAMES:
        return _new(stix2.File, hashes={_HASH_NAMES[kind]: value}, **common)
    if kind is IndicatorType.EMAIL:
        return _new(stix2.EmailAddress, value=value, **common)
    if kind is IndicatorType.ASN:
        number = _asn_number(value)
        # The parser only emits AS<digits>; anything else has no valid STIX form, so skip it.
        return None if number is None else _new(stix2.AutonomousSystem, number=number, **common)
    return None


def _source_line(result: SourceResult) -> str:
    line = f"{result.source}: {result.status.value}"
    if result.detections is not None and result.detections.total:
        line += f", {result.detections.malicious}/{result.detections.total} engines malicious"
    if result.pulse_count is not None:
        line += f", {result.pulse_count} OTX pulses"
    if result.abuse is not None:
        line += f", abuse confidence {result.abuse.confidence}%"
    return line


def _attack_reference(ref: AttackRef, section: str) -> dict[str, str]:
    reference = {"source_name": "mitre-attack", "external_id": ref.attack_id}
    match = _ATTACK_ID.fullmatch(ref.attack_id)
    if match:
        path = match[1] + (f"/{match[2]}" if match[2] else "")
        reference["url"] = f"https://attack.mitre.org/{section}/{path}/"
    if ref.stix_id:
        reference["description"] = f"ATT&CK object {ref.stix_id}"
    return reference
