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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import stix2  # type: ignore[import-untyped]

from threatintel._wording import plural
from threatintel.attribution import evidenced_names, named
from threatintel.indicators import DEFAULT_INTERNAL_DOMAINS
from threatintel.models import (
    Analysis,
    AttackRef,
    Attribution,
    Enrichment,
    GroupCandidate,
    IndicatorType,
    VerdictLabel,
)
from threatintel.providers import title_of
from threatintel.reports._stix_values import (
    NAMESPACE,
    _attack_reference,
    _id,
    _new,
    _observable,
    _pattern,
    _plain,
    _source_line,
    _StixObject,
    _uri,
    _utc,
)
from threatintel.reports.audience import for_sharing, left_out_note

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
INDICATOR_TYPES: dict[VerdictLabel, str] = {
    VerdictLabel.MALICIOUS: "malicious-activity",
    VerdictLabel.SUSPICIOUS: "anomalous-activity",
}
# How AV vendors join names into labels ("Ransom:Win32/Clop.A"); shorter words are suffixes.


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
