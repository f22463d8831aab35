"""Explicit evidence for one scenario entry: what each vendor should say, beyond its truth.

A truth ("malicious", "noisy"...) picks plausible bodies at random; a labelled verdict set needs
to state the evidence itself, as analysts meet it. Every table is optional, and every key in it;
what is left out keeps the truth's generated value::

    [indicators."8.8.8.8"]
    truth = "noisy"
    vt = { malicious = 1, harmless = 64, reputation = 530, votes = [180, 30] }
    otx = { context_pulses = 40, validation = ["whitelist"] }
    abuseipdb = { confidence = 0, reports = 12, reporters = 9, usage = "Content Delivery Network" }
    ipinfo = { anycast = true, org = "AS15169 Google LLC" }

    [[indicators."evil.example".otx.pulses]]       # pulses about the indicator itself
    name = "Emotet C2 evil.example"
    age_days = 12        # days since the pulse was modified
    indicators = 14      # the pulse's indicator_count
    malware = ["Emotet"]

``vt``: ``malicious``, ``suspicious`` (engine counts, 0 when left out), ``harmless`` (the
other engines say undetected), ``reputation``, ``votes`` ([harmless, malicious]), ``rank`` (a
domain's popularity rank), ``trusted`` (a file's trusted_verdict organisation), ``found =
false`` for a 404.
``otx``: ``pulses`` (above), ``context_pulses`` (big lists that merely mention it: sandbox
traffic, resolver lists), ``validation`` (allowlist sources), ``false_positive``.
``abuseipdb``: ``confidence``, ``reports``, ``reporters``, ``last_days``, ``whitelisted``,
``usage``, ``tor``. ``ipinfo``: ``anycast``, ``org`` ("AS15169 Google LLC"), ``country``; the
owner and country are the network's, so every vendor that reports them says the same (a hostile
``org`` reaches VirusTotal's as_owner, AbuseIPDB's isp and IPinfo's org).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class EvidenceError(ValueError):
    """An evidence table is malformed; the message names the key."""


@dataclass(frozen=True, slots=True)
class VTEvidence:
    malicious: int | None = None
    suspicious: int | None = None
    harmless: int | None = None
    reputation: int | None = None
    votes: tuple[int, int] | None = None  # (harmless, malicious)
    rank: int | None = None
    trusted: str | None = None
    found: bool = True


@dataclass(frozen=True, slots=True)
class PulseEvidence:
    name: str
    age_days: int = 30
    indicators: int = 20
    adversary: str = ""
    malware: tuple[str, ...] = ()
    attack_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OTXEvidence:
    pulses: tuple[PulseEvidence, ...] = ()
    context_pulses: int = 0
    validation: tuple[str, ...] = ()
    false_positive: bool = False


@dataclass(frozen=True, slots=True)
class AbuseEvidence:
    confidence: int | None = None
    reports: int | None = None
    reporters: int | None = None
    last_days: int = 1
    whitelisted: bool | None = None
    usage: str | None = None
    tor: bool | None = None


@dataclass(frozen=True, slots=True)
class IPinfoEvidence:
    anycast: bool | None = None
    org: str | None = None  # "AS15169 Google LLC"
    country: str | None = None  # verbatim, even when it is not a country code

    def asn_and_name(self) -> tuple[int, str] | None:
        if not self.org:
            return None
        head, _, name = self.org.partition(" ")
        if head[:2].upper() != "AS" or not head[2:].isdigit() or not name:
            raise EvidenceError(f"ipinfo.org must read 'AS<number> <name>', not {self.org!r}")
        return int(head[2:]), name


@dataclass(frozen=True, slots=True)
class Evidence:
    vt: VTEvidence | None = None
    otx: OTXEvidence | None = None
    abuseipdb: AbuseEvidence | None = None
    ipinfo: IPinfoEvidence | None = None


EVIDENCE_KEYS = frozenset({"vt", "otx", "abuseipdb", "ipinfo"})


def parse_evidence(entry: Mapping[str, Any]) -> Evidence | None:
    """The evidence tables of one scenario entry, or None when it states none."""
    if not EVIDENCE_KEYS & set(entry):
        return None
    vt = _table(entry, "vt")
    otx = _table(entry, "otx")
    abuse = _table(entry, "abuseipdb")
    ipinfo = _table(entry, "ipinfo")
    evidence = Evidence(
        vt=_vt(vt) if vt is not None else None,
        otx=_otx(otx) if otx is not None else None,
        abuseipdb=_abuse(abuse) if abuse is not None else None,
        ipinfo=_ipinfo(ipinfo) if ipinfo is not None else None,
    )
    if evidence.ipinfo is not None:
        evidence.ipinfo.asn_and_name()  # validates the spelling now, not at request time
    return evidence


def _table(entry: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    table = entry.get(name)
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise EvidenceError(f"{name} must be a table")
    return table


_VT_KEYS = frozenset(
    {"malicious", "suspicious", "harmless", "reputation", "votes", "rank", "trusted", "found"}
)


def _vt(table: Mapping[str, Any]) -> VTEvidence:
    _known(table, "vt", _VT_KEYS)
    votes = table.get("votes")
    if votes is not None and (
        not isinstance(votes, list) or len(votes) != 2 or not all(_is_int(v) for v in votes)
    ):
        raise EvidenceError("vt.votes must be [harmless, malicious]")
    return VTEvidence(
        malicious=_count(table, "vt", "malicious"),
        suspicious=_count(table, "vt", "suspicious"),
        harmless=_count(table, "vt", "harmless"),
        reputation=_opt(table, "reputation", int),
        votes=(int(votes[0]), int(votes[1])) if votes is not None else None,
        rank=_count(table, "vt", "rank"),
        trusted=_opt(table, "trusted", str),
        found=_opt(table, "found", bool) is not False,
    )


_PULSE_KEYS = frozenset({"name", "age_days", "indicators", "adversary", "malware", "attack_ids"})


def _otx(table: Mapping[str, Any]) -> OTXEvidence:
    _known(table, "otx", frozenset({"pulses", "context_pulses", "validation", "false_positive"}))
    raw = table.get("pulses", [])
    if not isinstance(raw, list) or not all(isinstance(p, Mapping) for p in raw):
        raise EvidenceError("otx.pulses must be a list of tables")
    pulses = []
    for item in raw:
        _known(item, "otx.pulses", _PULSE_KEYS)
        name = _opt(item, "name", str)
        if not name:
            raise EvidenceError("every otx pulse needs a name")
        pulses.append(
            PulseEvidence(
                name=name,
                age_days=_count(item, "otx.pulses", "age_days") or 0,
                indicators=max(1, _count(item, "otx.pulses", "indicators") or 20),
                adversary=_opt(item, "adversary", str) or "",
                malware=_strings(item, "malware"),
                attack_ids=_strings(item, "attack_ids"),
            )
        )
    return OTXEvidence(
        pulses=tuple(pulses),
        context_pulses=_count(table, "otx", "context_pulses") or 0,
        validation=_strings(table, "validation"),
        false_positive=_opt(table, "false_positive", bool) is True,
    )


def _ipinfo(table: Mapping[str, Any]) -> IPinfoEvidence:
    _known(table, "ipinfo", frozenset({"anycast", "org", "country"}))
    return IPinfoEvidence(
        anycast=_opt(table, "anycast", bool),
        org=_opt(table, "org", str),
        country=_opt(table, "country", str),
    )


def _abuse(table: Mapping[str, Any]) -> AbuseEvidence:
    keys = {"confidence", "reports", "reporters", "last_days", "whitelisted", "usage", "tor"}
    _known(table, "abuseipdb", frozenset(keys))
    confidence = _count(table, "abuseipdb", "confidence")
    if confidence is not None and confidence > 100:
        raise EvidenceError("abuseipdb.confidence must be 0..100")
    return AbuseEvidence(
        confidence=confidence,
        reports=_count(table, "abuseipdb", "reports"),
        reporters=_count(table, "abuseipdb", "reporters"),
        last_days=_count(table, "abuseipdb", "last_days") or 0,
        whitelisted=_opt(table, "whitelisted", bool),
        usage=_opt(table, "usage", str),
        tor=_opt(table, "tor", bool),
    )


def _known(table: Mapping[str, Any], name: str, keys: frozenset[str]) -> None:
    unknown = set(table) - keys
    if unknown:
        raise EvidenceError(f"{name}: unknown keys {sorted(unknown)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(table: Mapping[str, Any], name: str, key: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise EvidenceError(f"{name}.{key} must be a whole number ≥ 0")
    return int(value)


def _opt(table: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EvidenceError(f"{key} must be a {kind.__name__}")
    return value


def _strings(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise EvidenceError(f"{key} must be a list of strings")
    return tuple(value)
