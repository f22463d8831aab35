"""STIX 2.1 renderer: one analysis → the JSON text of one bundle, built with the ``stix2`` library.

    text = render_stix(analysis)            # TLP:AMBER unless told otherwise
    text = render_stix(analysis, tlp="green")

What goes in, per enrichment (one normalised indicator):

    every indicator          an observable (SCO) carrying the value, and a ``note`` with the
                             verdict: labels=[label], confidence, the score and every reason
    malicious / suspicious   also an ``indicator`` (indicator_types malicious-activity /
                             anomalous-activity, confidence, labels=[label], the top reasons as
                             description) that is ``based-on`` the SCO
    harmless / unknown       the SCO and the note only: never an ``indicator``, because a consumer
                             would turn it into a detection

Observables per type: ipv4-addr, ipv6-addr, domain-name, url, file (hashes MD5 / SHA-1 / SHA-256),
email-addr, autonomous-system (ASN), ipv4-addr / ipv6-addr with the CIDR as value (CIDR, matched by
``ISSUBSET`` in the pattern). A domain the SCO may not hold (DNS allows ``_dmarc.example.com``,
a host name does not) keeps its indicator, when it has one, but gets no observable. A CVE is a
``vulnerability`` SDO with a ``cve`` external reference and no pattern: STIX patterns describe
observables, and a CVE is not one.

A ``url`` SCO value must be an RFC 3986 URI (the validator checks it), so characters a URI cannot
hold (backslash, double quote, non-ASCII, a stray ``%``) are percent-encoded; the pattern uses the
same value so it matches the SCO, and the indicator's name keeps the engine's spelling. Pattern
strings escape backslash and single quote as STIX patterning requires.

Verdicts go in notes rather than opinions: an opinion states agreement with the referenced
object's content, and an observable's content is only its value, so "disagree" would not mean
"harmless". The note's labels and confidence carry the verdict for machines, its text for people.

Attribution (when ``analysis.attribution`` is set): an ``intrusion-set`` per group candidate, a
``malware`` (is_family) or ``tool`` per software (a tool when ATT&CK's stix id says so), an
``attack-pattern`` per technique, each with a ``mitre-attack`` external reference (G/S/T id,
ATT&CK stix id in its description). Relationships, all with the candidate's confidence:

    intrusion-set  uses         malware / tool / attack-pattern of that candidate
    indicator      indicates    intrusion-set, only for indicators the candidate lists
    observable     related-to   intrusion-set, for listed unknown indicators (no STIX
                                indicator): the analyst's link without a detection
    indicator      indicates    malware / tool / attack-pattern, only when that indicator's own
                                evidence names it

A harmless indicator links to no ATT&CK object, whatever a candidate lists or its sources say:
an allowlisted ``www.google.com`` appearing in an Emotet pulse is noise, not Emotet evidence. For
the same reason a ``malware`` / ``tool`` / ``attack-pattern`` is emitted only when a group
candidate uses it or the evidence of a non-harmless indicator names it.

No threat-actor objects: nothing in the evidence says who the people are.

Ids and versions. STIX 2.1 says an object's ``created`` never changes between its versions, so
ids come in three kinds:

    SCOs          the spec's deterministic ids (stix2 computes them) and no ``created``, so they
                  merge with other producers'
    timeless SDOs the threatintel and provider identities, ATT&CK intrusion-set / malware / tool /
                  attack-pattern objects and CVE vulnerabilities: ``<type>--uuid5(NAMESPACE,
                  natural key)`` (provider name, ATT&CK id, CVE id) with the constant ``created``
                  EPOCH, and ``modified`` the analysis end, so every analysis renders a version of
                  the same object; the TLP markings are the spec's own predefined objects
    judgements    indicator, notes and relationships state what THIS analysis concluded: their
                  uuid5 key also holds the analysis key (its start and a hash of its JSON), with
                  ``created`` the analysis start and ``modified`` its end

So rendering one analysis twice is byte for byte the same, and two analyses never make two
versions of one id with different ``created``. The bundle id is derived from the content. Times
are UTC with Z. The validator warns (103) that these ids are not UUIDv4; that is the price of
determinism, which the spec allows.

Rejected candidates (``analysis.rejected``) are not intelligence and are left out. So are
non-public indicators (private addresses, internal names: ``audience.for_sharing``) unless
``include_private=True``; a ``note`` on the threatintel identity says how many were left out.

Upstream text (reasons quoting pulse names and adversary strings) is attacker-influenced: it only
goes into description, content and abstract fields, flattened to one line of plain text without
control or bidi characters; names, labels, patterns and references come from our own data.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote

import idna
import stix2  # type: ignore[import-untyped]

from threatintel._visible import one_line
from threatintel._wording import plural
from threatintel.attribution import evidenced_names, named
from threatintel.indicators import DEFAULT_INTERNAL_DOMAINS
from threatintel.models import (
    Analysis,
    AttackRef,
    Attribution,
    Enrichment,
    GroupCandidate,
    Indicator,
    IndicatorType,
    SourceResult,
    VerdictLabel,
)
from threatintel.providers import title_of
from threatintel.reports.audience import for_sharing, left_out_note

#: Never change this: every non-SCO id is derived from it.
NAMESPACE = uuid.UUID("d7471d92-c362-4dd7-965c-010d5908bb0f")
#: Never change this either: the ``created`` of every timeless SDO (identities, ATT&CK objects,
#: vulnerabilities), whose ids do not depend on the analysis. ATT&CK's first public release.
EPOCH = datetime(2015, 5, 14, tzinfo=UTC)

Tlp = Literal["white", "green", "amber", "red"]
DEFAULT_TLP: Tlp = "amber"
TLP_MARKINGS: dict[str, Any] = {
    "white": stix2.TLP_WHITE,
    "green": stix2.TLP_GREEN,
    "amber": stix2.TLP_AMBER,
    "red": stix2.TLP_RED,
}

MAX_REASONS = 3  # in an indicator's description; the note has them all
MAX_TEXT = 1000
INDICATOR_TYPES: dict[VerdictLabel, str] = {
    VerdictLabel.MALICIOUS: "malicious-activity",
    VerdictLabel.SUSPICIOUS: "anomalous-activity",
}
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
# How AV vendors join names into labels ("Ransom:Win32/Clop.A"); shorter words are suffixes.


class _StixObject(Protocol):
    """The little this module needs from a stix2 object (the library has no type hints)."""

    @property
    def id(self) -> str: ...

    def serialize(self, *, indent: int | None = ...) -> str: ...


def _new(factory: Any, **properties: Any) -> _StixObject:
    obj: _StixObject = factory(**properties)
    return obj


def render_stix(
    analysis: Analysis,
    *,
    tlp: Tlp = DEFAULT_TLP,
    include_private: bool = False,
    internal_domains: Sequence[str] = DEFAULT_INTERNAL_DOMAINS,
) -> str:
    """The analysis as a STIX 2.1 bundle (JSON text) that passes stix2-validator."""
    shared = for_sharing(
        analysis, include_private=include_private, internal_domains=internal_domains
    )
    analysis = shared.analysis
    builder = _Builder(analysis, TLP_MARKINGS[tlp])
    for enrichment in analysis.enrichments:
        builder.add_enrichment(enrichment)
    if analysis.attribution is not None:
        builder.add_attribution(analysis.attribution)
    if shared.left_out:
        builder.add_left_out(shared.left_out)
    return builder.serialize()


# --- values ---------------------------------------------------------------------------------


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


# --- the bundle -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Link:
    confidence: int | None
    description: str | None


class _Builder:
    """Collects objects once each, in a stable order, then serialises the bundle."""

    def __init__(self, analysis: Analysis, marking: Any) -> None:
        self.created = _utc(analysis.started_at)
        self.modified = max(self.created, _utc(analysis.finished_at))
        # Judgement ids hold this: the start keeps it readable, the hash tells apart two analyses
        # that started at the same instant (their objects would otherwise clash in one version).
        digest = hashlib.sha256(analysis.model_dump_json().encode()).hexdigest()
        self.scope = f"{self.created.isoformat()}|{digest}"
        self.markings = [marking.id]
        self.objects: dict[str, _StixObject] = {marking.id: marking}
        self.links: dict[tuple[str, str, str], _Link] = {}
        # Indicator value → (STIX indicator id or None, observable id or None).
        self.emitted: dict[str, tuple[str | None, str | None]] = {}
        self.analysis = analysis
        self.me = self._identity("threatintel", "threatintel", "system")
        for name in self._answering_providers():
            self._identity(
                name,
                title_of(name),
                "organization",
                f"Threat-intelligence source queried by threatintel (provider '{name}').",
            )

    def _answering_providers(self) -> list[str]:
        answered = {
            name
            for enrichment in self.analysis.enrichments
            for name, result in enrichment.sources.items()
            if result.status.answered
        }
        ordered = [name for name in self.analysis.providers if name in answered]
        return ordered + sorted(answered - set(ordered))

    def _add(self, obj: _StixObject) -> str:
        self.objects.setdefault(obj.id, obj)
        return obj.id

    def _sdo(
        self, factory: Any, kind: str, key: str, *, timeless: bool = False, **properties: Any
    ) -> str:
        """A timeless object is one id shared by all analyses; any other is this analysis's."""
        object_id = _id(kind, key if timeless else f"{self.scope}|{key}")
        created = EPOCH if timeless else self.created
        if object_id not in self.objects:
            self._add(
                _new(
                    factory,
                    id=object_id,
                    created=created,
                    # An analysis dated before EPOCH would otherwise predate the first version.
                    modified=max(created, self.modified),
                    object_marking_refs=self.markings,
                    **properties,
                )
            )
        return object_id

    def _identity(
        self, key: str, name: str, identity_class: str, description: str | None = None
    ) -> str:
        return self._sdo(
            stix2.Identity,
            "identity",
            key,
            timeless=True,
            name=name,
            identity_class=identity_class,
            description=description,
        )

    def _link(
        self,
        source: str,
        relationship: str,
        target: str,
        confidence: int | None = None,
        description: str | None = None,
    ) -> None:
        link = self.links.setdefault((source, relationship, target), _Link(None, description))
        if confidence is not None and (link.confidence is None or confidence > link.confidence):
            link.confidence = confidence

    def add_enrichment(self, enrichment: Enrichment) -> None:
        indicator, verdict = enrichment.indicator, enrichment.verdict
        observable = _observable(indicator, self.markings)
        target = None if observable is None else self._add(observable)
        if indicator.type is IndicatorType.CVE:
            target = self._sdo(
                stix2.Vulnerability,
                "vulnerability",
                indicator.value,
                timeless=True,
                name=indicator.value,
                created_by_ref=self.me,
                external_references=[{"source_name": "cve", "external_id": indicator.value}],
            )
        pattern = _pattern(indicator)
        indicator_id = None
        if verdict.label in INDICATOR_TYPES and pattern is not None:
            reasons = [_plain(r) for r in verdict.reasons[:MAX_REASONS]]
            indicator_id = self._sdo(
                stix2.Indicator,
                "indicator",
                f"{indicator.type.value}:{indicator.value}",
                name=_plain(indicator.value),
                description="; ".join(reasons) or f"{verdict.label.value} by threatintel",
                indicator_types=[INDICATOR_TYPES[verdict.label]],
                pattern=pattern,
                pattern_type="stix",
                valid_from=self.created,
                confidence=verdict.confidence,
                labels=[verdict.label.value],
                created_by_ref=self.me,
                external_references=self._source_links(enrichment) or None,
            )
            if target is not None:
                self._link(indicator_id, "based-on", target)
        self.emitted[indicator.value] = (indicator_id, target)
        refs = [ref for ref in (target, indicator_id) if ref is not None]
        if refs:
            self._sdo(
                stix2.Note,
                "note",
                f"verdict:{indicator.type.value}:{indicator.value}",
                abstract=(
                    f"threatintel verdict: {verdict.label.value} "
                    f"(score {verdict.score}/100, confidence {verdict.confidence}/100)"
                ),
                content="\n".join(
                    [f"- {_plain(reason)}" for reason in verdict.reasons]
                    + [_source_line(r) for _, r in sorted(enrichment.sources.items())]
                )
                or "no reasons recorded",
                authors=["threatintel"],
                labels=[verdict.label.value],
                confidence=verdict.confidence,
                object_refs=refs,
                created_by_ref=self.me,
            )

    def _source_links(self, enrichment: Enrichment) -> list[dict[str, str]]:
        return [
            {"source_name": name, "url": _uri(result.link)}
            for name, result in sorted(enrichment.sources.items())
            if result.link and result.status.answered
        ]

    def _attack_object(self, ref: AttackRef) -> str:
        common: dict[str, Any] = {"name": ref.name, "created_by_ref": self.me}
        if ref.attack_id.startswith("T"):
            section, factory, kind = "techniques", stix2.AttackPattern, "attack-pattern"
        elif ref.stix_id and ref.stix_id.startswith("tool--"):
            section, factory, kind = "software", stix2.Tool, "tool"
        else:
            section, factory, kind = "software", stix2.Malware, "malware"
            common["is_family"] = True
        references = [_attack_reference(ref, section)]
        return self._sdo(
            factory, kind, ref.attack_id, timeless=True, external_references=references, **common
        )

    def _intrusion_set(self, candidate: GroupCandidate) -> str:
        group = candidate.group
        return self._sdo(
            stix2.IntrusionSet,
            "intrusion-set",
            group.attack_id,
            timeless=True,
            name=group.name,
            aliases=[a for a in candidate.aliases if a != group.name] or None,
            created_by_ref=self.me,
            external_references=[_attack_reference(group, "groups")],
        )

    def _grounded(self, attribution: Attribution) -> list[AttackRef]:
        """The attribution's own software and techniques that non-harmless evidence names."""
        names: set[str] = set()
        for enrichment in self.analysis.enrichments:
            if enrichment.verdict.label is not VerdictLabel.HARMLESS:
                names |= evidenced_names(enrichment, attribution)
        return list(named([*attribution.software, *attribution.techniques], names))

    def add_attribution(self, attribution: Attribution) -> None:
        harmless = {
            e.indicator.value
            for e in self.analysis.enrichments
            if e.verdict.label is VerdictLabel.HARMLESS
        }
        sets: list[str] = []
        for candidate in attribution.groups:
            group = self._intrusion_set(candidate)
            sets.append(group)
            for ref in [*candidate.software, *candidate.techniques]:
                self._link(group, "uses", self._attack_object(ref), candidate.confidence)
            for value in candidate.indicators:
                if value in harmless:
                    # A known-good indicator is noise in a candidate's list, not its evidence.
                    continue
                indicator_id, observable_id = self.emitted.get(value, (None, None))
                evidence = "; ".join(
                    _plain(
                        f"{e.source} {e.kind} '{e.value}'" + (f" ({e.detail})" if e.detail else "")
                    )
                    for e in candidate.evidence
                    if e.indicator == value
                )
                if indicator_id is not None:
                    self._link(indicator_id, "indicates", group, candidate.confidence, evidence)
                elif observable_id is not None:
                    self._link(observable_id, "related-to", group, candidate.confidence, evidence)
        grounded = [self._attack_object(ref) for ref in self._grounded(attribution)]
        self._link_evidenced(attribution)
        self._attribution_note(attribution, sets or grounded)

    def _link_evidenced(self, attribution: Attribution) -> None:
        known = {r.attack_id: r for g in attribution.groups for r in [*g.software, *g.techniques]}
        known |= {r.attack_id: r for r in self._grounded(attribution)}
        for enrichment in self.analysis.enrichments:
            indicator_id = self.emitted.get(enrichment.indicator.value, (None, None))[0]
            # Only malicious / suspicious indicators have a STIX indicator; the explicit check
            # keeps a harmless one unlinked even if that ever changes.
            if indicator_id is None or enrichment.verdict.label is VerdictLabel.HARMLESS:
                continue
            value = enrichment.indicator.value
            for ref in named(known.values(), evidenced_names(enrichment, attribution)):
                confidence = max(
                    (
                        g.confidence
                        for g in attribution.groups
                        if value in g.indicators and ref in [*g.software, *g.techniques]
                    ),
                    default=None,
                )
                self._link(indicator_id, "indicates", self._attack_object(ref), confidence)

    def _attribution_note(self, attribution: Attribution, refs: list[str]) -> None:
        if not refs:
            return
        lines = [f"ATT&CK release {_plain(attribution.attack_version, 40)}"]
        for candidate in attribution.groups:
            group = candidate.group
            lines.append(f"{group.attack_id} {group.name}: confidence {candidate.confidence}")
            lines += [f"- {_plain(reason)}" for reason in candidate.reasons]
        if attribution.unmatched:
            lines.append(
                "names matching no ATT&CK object: " + _plain(", ".join(attribution.unmatched))
            )
        self._sdo(
            stix2.Note,
            "note",
            "attribution:" + ",".join(sorted(refs)),
            abstract=_plain(f"ATT&CK attribution: {attribution.summary}", 300),
            content="\n".join(lines),
            authors=["threatintel"],
            object_refs=refs,
            created_by_ref=self.me,
        )

    def add_left_out(self, count: int) -> None:
        self._sdo(
            stix2.Note,
            "note",
            "left-out",
            abstract=f"{plural(count, 'non-public indicator')} left out",
            content=left_out_note(count),
            authors=["threatintel"],
            object_refs=[self.me],
            created_by_ref=self.me,
        )

    def serialize(self) -> str:
        for (source, relationship, target), link in self.links.items():
            self._sdo(
                stix2.Relationship,
                "relationship",
                f"{source}|{relationship}|{target}",
                relationship_type=relationship,
                source_ref=source,
                target_ref=target,
                confidence=link.confidence,
                description=link.description or None,
                created_by_ref=self.me,
            )
        objects = list(self.objects.values())
        content = "\n".join(obj.serialize() for obj in objects)
        bundle = _new(stix2.Bundle, objects=objects, id=f"bundle--{uuid.uuid5(NAMESPACE, content)}")
        # Not pretty=True: stix2's property ordering for it is quadratic and takes seconds.
        return bundle.serialize(indent=2) + "\n"
