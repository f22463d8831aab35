"""MISP renderer: one analysis → the JSON text of one MISP event (``{"Event": {...}}``).

    text = render_misp(analysis)             # tlp:amber, distribution 0 (your organisation)
    text = render_misp(analysis, tlp="green")

The event: ``info`` counts the verdicts, ``date`` is the analysis day (UTC), ``analysis`` is 2
(completed), ``distribution`` 0 and ``published`` false, so nothing leaves the organisation until
someone decides it should. ``threat_level_id`` follows the worst verdict: 1 (high) for any
malicious, 2 (medium) for any suspicious, else 3 (low) when everything is harmless and 4
(undefined) when something is unknown.

One attribute per enrichment, every verdict included (harmless ones are context, not detections):

    ipv4 / ipv6 / cidr   ip-dst          (MISP takes a CIDR in ip-dst)
    domain               domain, or hostname when it is a sub-domain of its registrable domain
    url                  url
    md5 / sha1 / sha256  md5 / sha1 / sha256
    email                email           (the generic type: we do not know sender from recipient)
    cve                  vulnerability
    asn                  AS              (the number, which is what MISP stores)

Rejected candidates (``analysis.rejected``) are not intelligence and are left out. So are
non-public indicators (private addresses, internal names: ``audience.for_sharing``) unless
``include_private=True``; then ``info`` ends with how many, and a ``comment`` attribute (category
Other, not for IDS) explains it.

``to_ids`` is true only for malicious verdicts, and only for types a detection can use (not
vulnerability or AS). Each attribute's comment is the verdict with its top reason, as plain text
(reasons quote attacker-influenced pulse and adversary names). Tags: ``threatintel:verdict="..."``
on every attribute; ATT&CK galaxy tags (``misp-galaxy:mitre-intrusion-set="TA505 - G0092"``, and
mitre-malware / mitre-tool / mitre-attack-pattern) on the event for the group candidates, their
software and techniques, and the attribution's other software and techniques only when the
evidence of a non-harmless indicator names them; on an attribute only for the groups whose
candidate lists that indicator and for the software and techniques that indicator's own evidence
names. A harmless attribute gets no ATT&CK tag at all: an allowlisted ``www.google.com`` showing up
in an Emotet pulse is noise, not Emotet evidence (the same rule as the STIX renderer).

Uuids are uuid5: the event's from the analysis (times and indicators), each attribute's from the
event's uuid and the attribute, so re-rendering gives the same JSON while two analyses never share
an attribute uuid (MISP rejects an attribute uuid that already exists in another event).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from threatintel._visible import one_line
from threatintel._wording import plural
from threatintel.attribution import evidenced_names, fold, named
from threatintel.indicators import DEFAULT_INTERNAL_DOMAINS
from threatintel.models import (
    Analysis,
    AttackRef,
    Attribution,
    Enrichment,
    IndicatorType,
    VerdictLabel,
)
from threatintel.reports.audience import for_sharing, left_out_note

#: Never change this: event uuids are derived from it.
NAMESPACE = uuid.UUID("039b5c37-2acf-42a6-a7d9-942a1162f0c0")

Tlp = Literal["white", "green", "amber", "red"]
DEFAULT_TLP: Tlp = "amber"
DEFAULT_DISTRIBUTION = 0  # your organisation only
INHERIT_DISTRIBUTION = 5  # attributes follow the event
ANALYSIS_COMPLETED = 2
MAX_COMMENT = 500

THREAT_LEVELS: dict[VerdictLabel, int] = {
    VerdictLabel.MALICIOUS: 1,
    VerdictLabel.SUSPICIOUS: 2,
    VerdictLabel.UNKNOWN: 4,
    VerdictLabel.HARMLESS: 3,
}
# Worst first: the first label present decides the event's threat level.
_SEVERITY = (
    VerdictLabel.MALICIOUS,
    VerdictLabel.SUSPICIOUS,
    VerdictLabel.UNKNOWN,
    VerdictLabel.HARMLESS,
)
UNDEFINED_THREAT_LEVEL = 4

# (type, category) per indicator type; domain becomes hostname for sub-domains.
ATTRIBUTE_TYPES: dict[IndicatorType, tuple[str, str]] = {
    IndicatorType.IPV4: ("ip-dst", "Network activity"),
    IndicatorType.IPV6: ("ip-dst", "Network activity"),
    IndicatorType.CIDR: ("ip-dst", "Network activity"),
    IndicatorType.DOMAIN: ("domain", "Network activity"),
    IndicatorType.URL: ("url", "Network activity"),
    IndicatorType.MD5: ("md5", "Payload delivery"),
    IndicatorType.SHA1: ("sha1", "Payload delivery"),
    IndicatorType.SHA256: ("sha256", "Payload delivery"),
    IndicatorType.EMAIL: ("email", "Payload delivery"),
    IndicatorType.CVE: ("vulnerability", "External analysis"),
    IndicatorType.ASN: ("AS", "Network activity"),
}
# A vulnerability or an AS number is context: no IDS can match on it.
NOT_FOR_IDS = frozenset({"vulnerability", "AS"})

# How AV vendors join names into labels ("Ransom:Win32/Clop.A"); shorter words are suffixes.


def render_misp(
    analysis: Analysis,
    *,
    tlp: Tlp = DEFAULT_TLP,
    include_private: bool = False,
    internal_domains: Sequence[str] = DEFAULT_INTERNAL_DOMAINS,
) -> str:
    """The analysis as a MISP event (JSON text), ready for MISP's event import."""
    shared = for_sharing(
        analysis, include_private=include_private, internal_domains=internal_domains
    )
    analysis = shared.analysis
    started = _utc(analysis.started_at)
    finished = max(started, _utc(analysis.finished_at))
    event_uuid = uuid.uuid5(
        NAMESPACE,
        "|".join(
            [started.isoformat(), finished.isoformat()]
            + [f"{e.indicator.type.value}:{e.indicator.value}" for e in analysis.enrichments]
        ),
    )
    timestamp = str(int(finished.timestamp()))
    attribution = analysis.attribution
    event_tags = [f"tlp:{tlp}"]
    if attribution is not None:
        event_tags += [_group_tag(g.group) for g in attribution.groups]
        event_tags += [_attack_tag(r) for r in _attack_refs(attribution, analysis.enrichments)]
    event: dict[str, Any] = {
        "uuid": str(event_uuid),
        "info": _info(analysis),
        "date": started.date().isoformat(),
        "timestamp": timestamp,
        "threat_level_id": str(_threat_level(analysis)),
        "analysis": str(ANALYSIS_COMPLETED),
        "distribution": str(DEFAULT_DISTRIBUTION),
        "published": False,
        "Tag": [{"name": name} for name in _unique(event_tags)],
        "Attribute": [
            _attribute(enrichment, event_uuid, timestamp, attribution)
            for enrichment in analysis.enrichments
        ],
    }
    if shared.left_out:
        event["info"] += f"; {shared.left_out} non-public left out"
        event["Attribute"].append(_left_out(shared.left_out, event_uuid, timestamp))
    return json.dumps({"Event": event}, indent=2) + "\n"


def _utc(moment: datetime) -> datetime:
    # Naive datetimes in the models are UTC (utcnow is the default factory).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _plain(text: str, limit: int = MAX_COMMENT) -> str:
    """Upstream text as one line of inert plain text: control, bidi and zero-width characters
    shown as escapes ("\\u202e"), as in every report a person reads (``_visible``)."""
    return one_line(text, limit)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _info(analysis: Analysis) -> str:
    counts = {label: 0 for label in VerdictLabel}
    for enrichment in analysis.enrichments:
        counts[enrichment.verdict.label] += 1
    parts = ", ".join(f"{n} {label.value}" for label, n in counts.items() if n)
    total = len(analysis.enrichments)
    return f"threatintel analysis: {plural(total, 'indicator')}" + (f" ({parts})" if parts else "")


def _threat_level(analysis: Analysis) -> int:
    present = {e.verdict.label for e in analysis.enrichments}
    for label in _SEVERITY:
        if label in present:
            return THREAT_LEVELS[label]
    return UNDEFINED_THREAT_LEVEL


def _attribute_type(enrichment: Enrichment) -> tuple[str, str]:
    indicator = enrichment.indicator
    kind, category = ATTRIBUTE_TYPES[indicator.type]
    registrable = indicator.registrable_domain
    if indicator.type is IndicatorType.DOMAIN and registrable and indicator.value != registrable:
        return "hostname", category
    return kind, category


def _galaxy_name(ref: AttackRef) -> str:
    # The cluster value sits inside double quotes in the tag.
    return f"{ref.name} - {ref.attack_id}".replace('"', "")


def _group_tag(ref: AttackRef) -> str:
    return f'misp-galaxy:mitre-intrusion-set="{_galaxy_name(ref)}"'


def _attack_tag(ref: AttackRef) -> str:
    if ref.attack_id.startswith("T"):
        galaxy = "mitre-attack-pattern"
    elif ref.stix_id and ref.stix_id.startswith("tool--"):
        galaxy = "mitre-tool"
    else:
        galaxy = "mitre-malware"
    return f'misp-galaxy:{galaxy}="{_galaxy_name(ref)}"'


def _attack_refs(attribution: Attribution, enrichments: Iterable[Enrichment]) -> list[AttackRef]:
    """Software and techniques of the candidates and of non-harmless evidence, groups' first."""
    refs: dict[str, AttackRef] = {}
    for group in attribution.groups:
        for ref in [*group.software, *group.techniques]:
            refs.setdefault(ref.attack_id, ref)
    names: set[str] = set()
    for enrichment in enrichments:
        if enrichment.verdict.label is not VerdictLabel.HARMLESS:
            names |= evidenced_names(enrichment, attribution)
    # The attribution's own list may come from harmless evidence too; keep only what is grounded.
    for ref in named([*attribution.software, *attribution.techniques], names):
        refs.setdefault(ref.attack_id, ref)
    return list(refs.values())


def _attack_tags(enrichment: Enrichment, attribution: Attribution) -> list[str]:
    if enrichment.verdict.label is VerdictLabel.HARMLESS:
        # Known-good indicators turn up in campaign pulses; tagging them would mislabel them.
        return []
    value = enrichment.indicator.value
    tags = [_group_tag(g.group) for g in attribution.groups if value in g.indicators]
    names = evidenced_names(enrichment, attribution)
    tags += [
        _attack_tag(ref)
        for ref in _attack_refs(attribution, [enrichment])
        if fold(ref.attack_id) in names or fold(ref.name) in names
    ]
    return tags


def _left_out(count: int, event_uuid: uuid.UUID, timestamp: str) -> dict[str, Any]:
    """A comment attribute: how many indicators stayed inside the organisation, and why."""
    text = left_out_note(count)
    return {
        "uuid": str(uuid.uuid5(event_uuid, f"comment:{text}")),
        "type": "comment",
        "category": "Other",
        "value": text,
        "to_ids": False,
        "distribution": str(INHERIT_DISTRIBUTION),
        "comment": "threatintel: non-public indicators are not shared by default",
        "timestamp": timestamp,
        "disable_correlation": True,
        "Tag": [],
    }


def _attribute(
    enrichment: Enrichment,
    event_uuid: uuid.UUID,
    timestamp: str,
    attribution: Attribution | None,
) -> dict[str, Any]:
    indicator, verdict = enrichment.indicator, enrichment.verdict
    kind, category = _attribute_type(enrichment)
    value = indicator.value
    if kind == "AS" and value[:2].upper() == "AS":
        value = value[2:]
    comment = f"{verdict.label.value} (score {verdict.score}, confidence {verdict.confidence})"
    if verdict.reasons:
        comment += ": " + verdict.reasons[0]
    tags = [f'threatintel:verdict="{verdict.label.value}"']
    if attribution is not None:
        tags += _attack_tags(enrichment, attribution)
    return {
        "uuid": str(uuid.uuid5(event_uuid, f"{kind}:{value}")),
        "type": kind,
        "category": category,
        "value": value,
        "to_ids": verdict.label is VerdictLabel.MALICIOUS and kind not in NOT_FOR_IDS,
        "distribution": str(INHERIT_DISTRIBUTION),
        "comment": _plain(comment),
        "timestamp": timestamp,
        "disable_correlation": False,
        "Tag": [{"name": name} for name in _unique(tags)],
    }
