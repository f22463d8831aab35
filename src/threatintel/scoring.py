"""Evidence → verdict: a weighted, explainable score instead of worst-of voting.

    verdict = score(indicator, {"virustotal": vt, "otx": otx, "abuseipdb": ab, "ipinfo": ii})
    verdict = score(indicator, sources, ScoringPolicy(malicious_threshold=80), now=fixed_clock)

Each evidence source (VirusTotal, OTX, AbuseIPDB) that answered is turned into malice points,
benign points, a grade (none / weak / moderate / strong) and a lean between -1 (benign) and +1
(malicious). The score is the weighted sum of malice minus benign points, clamped to 0..100, then
capped by allowlists and held below the malicious threshold unless one source is strong, or, when
nothing vouches for the indicator (a high reputation, an allowlist), several moderate sources
agree. IPinfo only adds context. Failed sources lower the confidence and never count as clean.
docs/verdicts.md explains the model with worked examples; every number is a field of
ScoringPolicy, configurable as ``SCORING__<FIELD>``.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from threatintel.models import (
    Detections,
    Indicator,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)

EVIDENCE_SOURCES = ("virustotal", "otx", "abuseipdb")
CONTEXT_SOURCES = ("ipinfo",)
DISPLAY_NAMES = {
    "virustotal": "VirusTotal",
    "otx": "OTX",
    "abuseipdb": "AbuseIPDB",
    "ipinfo": "IPinfo",
}
NAME_MAX = 60  # adversary, malware and engine names are attacker-influenced: keep them short

_FAILURE_TEXT = {
    SourceStatus.QUOTA_EXHAUSTED: "quota exhausted",
    SourceStatus.RATE_LIMITED: "rate limited",
    SourceStatus.AUTH_FAILED: "authentication failed",
    SourceStatus.TIMEOUT: "timeout",
    SourceStatus.ERROR: "error",
    SourceStatus.CIRCUIT_OPEN: "circuit open after repeated failures",
}

# Evidence grades: malicious needs one STRONG source or enough MODERATE ones (see the gate).
NONE, WEAK, MODERATE, STRONG = 0, 1, 2, 3

# Reason groups, in output order.
_SUPPORTING, _ADJUSTMENT, _OPPOSING, _ANSWER, _CONTEXT = range(5)
# Ordering ranks (not points) of evidence that carries no points of its own. An allowlist caps
# the score, so it outranks any points a single benign signal can carry.
_ALLOWLIST_RANK, _CLEAN_RANK, _SILENT_RANK = 100.0, 0.5, 0.25


Points = Annotated[float, Field(ge=0, le=100)]
Share = Annotated[float, Field(ge=0, le=1)]
Weight = Annotated[float, Field(ge=0, le=5)]
Count = Annotated[int, Field(ge=0)]


class ScoringPolicy(BaseModel):
    """Thresholds and weights of the verdict model; each field is ``SCORING__<FIELD>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- labels ---------------------------------------------------------------------------
    malicious_threshold: int = Field(
        70, ge=1, le=100, description="Scores from here up are malicious."
    )
    suspicious_threshold: int = Field(
        30, ge=1, le=99, description="Scores from here up are suspicious."
    )
    harmless_min_sources: int = Field(
        2, ge=1, le=3, description="Clean answers needed to call a low score harmless."
    )
    corroboration_min_sources: int = Field(
        2, ge=1, le=3, description="Moderate sources that may reach malicious without a strong one."
    )
    allowlist_score_cap: int = Field(
        50, ge=0, le=100, description="Highest score when OTX or AbuseIPDB lists it as known-good."
    )

    # --- source weights: multipliers of each source's points; 0 ignores the source --------
    virustotal_weight: Weight = Field(1.0, description="Multiplier of VirusTotal points.")
    otx_weight: Weight = Field(1.0, description="Multiplier of OTX points.")
    abuseipdb_weight: Weight = Field(1.0, description="Multiplier of AbuseIPDB points.")

    # --- VirusTotal -----------------------------------------------------------------------
    vt_min_engines_malicious: int = Field(
        5, ge=1, le=100, description="Malicious engines needed for strong evidence."
    )
    vt_weak_engines: Count = Field(
        2, description="Up to this many malicious engines is weak evidence."
    )
    vt_engine_points: Points = Field(8, description="Points per engine below the strong level.")
    vt_strong_points: Points = Field(70, description="Points at vt_min_engines_malicious.")
    vt_extra_engine_points: Points = Field(1.5, description="Points per engine beyond that.")
    vt_max_points: Points = Field(90, description="Ceiling of the malicious-engine points.")
    vt_suspicious_engine_points: Points = Field(2, description="Points per suspicious engine.")
    vt_suspicious_max_points: Points = Field(10, description="Ceiling of suspicious points.")
    vt_trusted_engines: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Preferred engines (comma-separated or JSON); their detections count more."
    )
    vt_trusted_engine_weight: int = Field(
        3, ge=1, le=100, description="How many engines one trusted engine's detection counts as."
    )
    vt_reputation_benign: int = Field(
        50, description="Community reputation that is benign evidence."
    )
    vt_reputation_malicious: int = Field(
        -50, description="Community reputation that is malice evidence."
    )
    vt_reputation_points: Points = Field(15, description="Points of either reputation.")
    vt_reputation_extra_points: Points = Field(
        0.5, description="Benign points per reputation point beyond vt_reputation_benign."
    )
    vt_reputation_max_points: Points = Field(
        40, description="Ceiling of the benign reputation points."
    )

    # --- OTX ------------------------------------------------------------------------------
    otx_pulse_points: Points = Field(4, description="Points per pulse up to otx_pulse_weak_max.")
    otx_pulse_weak_max: Count = Field(5, description="Up to this many pulses is weak evidence.")
    otx_extra_pulse_points: Points = Field(1, description="Points per pulse beyond that.")
    otx_max_pulse_points: Points = Field(25, description="Ceiling of the pulse-count points.")
    otx_adversary_points: Points = Field(10, description="Points when pulses name an adversary.")
    otx_malware_points: Points = Field(10, description="Points when pulses name malware.")
    otx_attack_points: Points = Field(5, description="Points when pulses list ATT&CK techniques.")
    otx_recent_days: int = Field(365, ge=1, description="Days after which a pulse is stale.")
    otx_stale_factor: Share = Field(0.5, description="Share of OTX points kept when all are stale.")

    # --- AbuseIPDB ------------------------------------------------------------------------
    abuse_confidence_malicious: int = Field(
        75, ge=1, le=100, description="AbuseIPDB confidence for strong evidence."
    )
    abuse_confidence_suspicious: int = Field(
        25, ge=1, le=100, description="AbuseIPDB confidence for moderate evidence."
    )
    abuse_min_reports: Count = Field(5, description="Reports needed for strong evidence.")
    abuse_min_reporters: Count = Field(
        2, description="Distinct reporters needed for strong evidence."
    )
    abuse_recent_days: int = Field(
        30, ge=1, description="Max age in days of the last report for strong."
    )
    abuse_strong_points: Points = Field(70, description="Points of strong AbuseIPDB evidence.")
    abuse_moderate_points: Points = Field(
        35, description="Points of a moderate confidence, or a high one from thin or stale reports."
    )
    abuse_weak_points: Points = Field(10, description="Points of a low confidence with reports.")
    abuse_tor_points: Points = Field(10, description="Points for a Tor exit node.")

    # --- confidence -----------------------------------------------------------------------
    not_configured_weight: Share = Field(
        0.25, description="How much a source without an API key counts against coverage."
    )
    disagreement_penalty: Share = Field(
        0.5, description="Share of confidence lost when the answering sources fully disagree."
    )

    @field_validator("vt_trusted_engines", mode="before")
    @classmethod
    def _split_engines(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return text.split(",")
        return value

    @field_validator("vt_trusted_engines")
    @classmethod
    def _normalise_engines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.strip() for name in value if name.strip()))

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        pairs = [
            ("malicious_threshold", "suspicious_threshold"),
            ("vt_min_engines_malicious", "vt_weak_engines"),
            ("vt_reputation_benign", "vt_reputation_malicious"),
            ("abuse_confidence_malicious", "abuse_confidence_suspicious"),
        ]
        for high, low in pairs:
            if getattr(self, high) <= getattr(self, low):
                raise ValueError(f"{high} must be greater than {low}")
        return self


DEFAULT_POLICY = ScoringPolicy()


@dataclass(frozen=True, slots=True)
class _Reason:
    text: str
    group: int
    points: float = 0.0  # signed, weighted: + toward malice, - toward benign; orders evidence


@dataclass(slots=True)
class _Finding:
    """What one answering evidence source contributed, before weighting."""

    malice: float = 0.0
    benign: float = 0.0
    grade: int = NONE
    capable: bool = False  # the answer could have shown malice (a scan, a pulse search, a report)
    silent_lean: float = -1.0  # lean of a clean answer that carries no points
    allowlisted: bool = False
    vouch: str = ""  # what vouches for it (reputation, allowlist): holds it below malicious
    reasons: list[tuple[str, float, int]] = field(default_factory=list)  # text, points, group

    def add(self, text: str, points: float = 0.0, group: int = _SUPPORTING) -> None:
        self.reasons.append((text, points, group))

    @property
    def clean(self) -> bool:
        return self.capable and self.malice <= self.benign

    @property
    def lean(self) -> float:
        """-1 benign … +1 malicious."""
        if self.malice + self.benign > 0:
            return (self.malice - self.benign) / (self.malice + self.benign)
        if self.allowlisted:
            return -1.0
        return self.silent_lean if self.capable else 0.0


def score(
    indicator: Indicator,
    sources: Mapping[str, SourceResult],
    policy: ScoringPolicy = DEFAULT_POLICY,
    *,
    now: datetime | None = None,
) -> Verdict:
    """Merge the sources' answers about one indicator into a label, score, confidence, reasons."""
    if not indicator.queryable:
        reason = f"{indicator.type.value} indicators are recognised but not looked up"
        return Verdict(label=VerdictLabel.UNKNOWN, score=0, confidence=0, reasons=[reason])
    results = [(name, sources[name]) for name in _ordered(sources)]
    private = _private_reasons(results)
    if private:
        return Verdict(label=VerdictLabel.UNKNOWN, score=0, confidence=0, reasons=private)

    clock = _aware(now) if now is not None else datetime.now(UTC)
    reasons: list[_Reason] = []
    answered: list[tuple[float, _Finding]] = []
    allowlisted_by: list[str] = []
    expected = 0.0
    for name, result in results:
        display = DISPLAY_NAMES.get(name, name)
        status = result.status
        if name in CONTEXT_SOURCES:
            reasons.extend(_context(display, result))
            continue
        evaluate = _EVALUATORS.get(name)
        weight = float(getattr(policy, f"{name}_weight", 0.0))
        if evaluate is None or weight == 0:
            continue  # unknown sources and sources weighted out are ignored entirely
        if status.answered:
            finding = evaluate(result, policy, clock)
            answered.append((weight, finding))
            if finding.allowlisted:
                allowlisted_by.append(display)
            expected += weight
            for text, points, group in finding.reasons:
                reasons.append(_Reason(text, group, points * weight))
        elif status.failed:
            expected += weight
            text = f"{display}: {_FAILURE_TEXT[status]} — verdict based on fewer sources"
            reasons.append(_Reason(text, _ANSWER))
        elif status is SourceStatus.NOT_CONFIGURED:
            expected += weight * policy.not_configured_weight
            reasons.append(_Reason(f"{display}: not configured", _ANSWER))

    malice = sum(w * f.malice for w, f in answered)
    benign = sum(w * f.benign for w, f in answered)
    value = _round(min(100.0, max(0.0, malice - benign)))

    if value > policy.allowlist_score_cap and allowlisted_by:
        value = policy.allowlist_score_cap
        verb = "lists" if len(allowlisted_by) == 1 else "list"
        text = f"score capped at {value}: {' and '.join(allowlisted_by)} {verb} it as known-good"
        reasons.append(_Reason(text, _ADJUSTMENT))
    strong = any(f.grade >= STRONG for _, f in answered)
    vouches = [f.vouch for _, f in answered if f.vouch]
    if value >= policy.malicious_threshold and not strong and vouches:
        # Well-known infrastructure collects weak and moderate accusations from every direction
        # (engines that flag resolvers, pulses that list the DNS server malware used); agreeing
        # noise is still noise, so only a strong source may overrule a benign voucher.
        value = policy.malicious_threshold - 1
        verb = "vouches" if len(vouches) == 1 else "vouch"
        text = (
            f"held at {value}, below malicious: {' and '.join(vouches)} {verb} for it, "
            "and no source has strong evidence"
        )
        reasons.append(_Reason(text, _ADJUSTMENT))
    moderate = sum(1 for _, f in answered if f.grade >= MODERATE)
    needed = policy.corroboration_min_sources
    if value >= policy.malicious_threshold and not strong and moderate < needed:
        value = policy.malicious_threshold - 1
        text = (
            f"held at {value}, below malicious: no strong evidence, and {moderate} "
            f"source{'s' if moderate != 1 else ''} with moderate evidence where {needed} are needed"
        )
        reasons.append(_Reason(text, _ADJUSTMENT))

    clean = sum(1 for _, f in answered if f.clean)
    if value >= policy.malicious_threshold:
        label = VerdictLabel.MALICIOUS
    elif value >= policy.suspicious_threshold:
        label = VerdictLabel.SUSPICIOUS
    elif clean >= policy.harmless_min_sources:
        label = VerdictLabel.HARMLESS
    else:
        label = VerdictLabel.UNKNOWN
        if not answered:
            reasons.append(_Reason("no evidence source answered", _ADJUSTMENT))
        else:
            text = (
                f"{clean} clean answer{'s' if clean != 1 else ''}; "
                f"{policy.harmless_min_sources} needed to call it harmless"
            )
            reasons.append(_Reason(text, _ADJUSTMENT))

    direction = 1.0 if value >= policy.suspicious_threshold else -1.0
    # An unknown label has no side to support: its evidence is simply ranked by size.
    side = 0.0 if label is VerdictLabel.UNKNOWN else direction
    return Verdict(
        label=label,
        score=value,
        confidence=_confidence(answered, expected, direction, policy),
        reasons=_ordered_reasons(reasons, side),
    )


# --- evidence per source -----------------------------------------------------------------


def _virustotal(result: SourceResult, policy: ScoringPolicy, now: datetime) -> _Finding:
    """Engine counts (tiers by vt_min_engines_malicious) and the community reputation."""
    finding = _Finding()
    if result.status is SourceStatus.NOT_FOUND:
        finding.add("VirusTotal has never seen it", group=_ANSWER)
        return finding
    if result.detections is not None:
        _vt_detections(result.detections, result.threat_label, policy, finding)
    rep = result.reputation
    if rep is not None and rep >= policy.vt_reputation_benign:
        base = policy.vt_reputation_points
        beyond = (rep - policy.vt_reputation_benign) * policy.vt_reputation_extra_points
        points = min(base + beyond, max(base, policy.vt_reputation_max_points))
        text = f"VirusTotal community reputation {rep:+d}"
        if finding.grade >= STRONG and points > base:
            # Votes accumulate over years and lag behind a compromise; engines agreeing now do
            # not. Against strong detections a high reputation keeps only its base points.
            points = base
            text += f" — counted at {_number(base)} against strong detections"
        finding.benign += points
        finding.capable = True
        finding.vouch = f"VirusTotal community reputation {rep:+d}"
        finding.add(text, -points)
    elif rep is not None and rep <= policy.vt_reputation_malicious:
        finding.malice += policy.vt_reputation_points
        finding.grade = max(finding.grade, WEAK)
        finding.add(f"VirusTotal community reputation {rep}", policy.vt_reputation_points)
    if result.detections is None and rep is None:
        finding.add("VirusTotal returned no analysis", group=_ANSWER)
    return finding


def _vt_detections(
    det: Detections, threat_label: str | None, policy: ScoringPolicy, finding: _Finding
) -> None:
    m, s = max(det.malicious, 0), max(det.suspicious, 0)
    total = max(det.total, m + s + max(det.harmless, 0) + max(det.undetected, 0))
    finding.capable = total > 0
    if not total:
        finding.add("VirusTotal has no engine results for it", group=_ANSWER)
        return
    # flagged_by mixes malicious and suspicious engines, so trusted hits count at most m times.
    trusted = {name.casefold() for name in policy.vt_trusted_engines}
    hits = [name for name in det.flagged_by if name.casefold() in trusted]
    effective = m + (policy.vt_trusted_engine_weight - 1) * min(len(hits), m)
    shown = [f"{n} [trusted]" if n in hits else n for n in dict.fromkeys([*hits, *det.flagged_by])]
    engines = f" ({_names(shown, 3, limit=40)})" if shown else ""
    sus_points = min(s * policy.vt_suspicious_engine_points, policy.vt_suspicious_max_points)
    extra = f" (+{s} suspicious)" if s and m else ""
    label = f"; label {_clip(threat_label)}" if threat_label else ""
    head = f"{m}/{total} VirusTotal engines"
    if effective >= policy.vt_min_engines_malicious:
        beyond = effective - policy.vt_min_engines_malicious
        points = policy.vt_strong_points + policy.vt_extra_engine_points * beyond
        points = min(points, policy.vt_max_points)
        text = f"{head} flag it malicious{engines if hits else ''}{extra}{label}"
        finding.grade = STRONG
    elif effective > policy.vt_weak_engines:
        points = effective * policy.vt_engine_points
        needed = policy.vt_min_engines_malicious
        text = f"{head} flag it malicious{engines}{extra} — below the {needed} needed for strong"
        text += f" evidence{label}"
        finding.grade = MODERATE
    elif m:
        points = effective * policy.vt_engine_points
        text = f"{head} flag it{engines}{extra} — too few to trust alone{label}"
        finding.grade = WEAK
    elif s:
        points = 0.0
        text = f"{s}/{total} VirusTotal engines call it suspicious{engines}"
        finding.grade = WEAK
    else:
        finding.add(f"{head} flag it", -_CLEAN_RANK)
        return
    points += sus_points
    finding.malice += points
    finding.add(text, points)


def _otx(result: SourceResult, policy: ScoringPolicy, now: datetime) -> _Finding:
    """Pulses grow from weak to moderate with count and named threats; allowlists vouch."""
    finding = _Finding(capable=True, silent_lean=-0.5)  # OTX silence is the weakest signal
    pulses = max(result.pulse_count or 0, len(result.pulses))
    adversaries = _unique([*result.adversaries, *(p.adversary or "" for p in result.pulses)])
    families = (f for p in result.pulses for f in p.malware_families)
    malware = _unique([*result.malware_families, *families])
    attack = _unique([*result.attack_ids, *(t for p in result.pulses for t in p.attack_ids)])
    plural = "s" if pulses != 1 else ""
    if result.allowlisted_by:
        finding.allowlisted = True
        finding.vouch = "the OTX allowlist"
        noise = f"; {pulses} pulse{plural} discounted" if pulses else ""
        text = f"OTX lists it as known-good ({_names(result.allowlisted_by, 3)}){noise}"
        finding.add(text, -_ALLOWLIST_RANK)
        return finding
    if pulses == 0:
        finding.add("in no OTX pulses", -_SILENT_RANK)
        return finding

    weak = min(pulses, policy.otx_pulse_weak_max)
    extra = max(pulses - policy.otx_pulse_weak_max, 0)
    points = min(
        weak * policy.otx_pulse_points + extra * policy.otx_extra_pulse_points,
        policy.otx_max_pulse_points,
    )
    parts = [f"in {pulses} OTX pulse{plural}"]
    if adversaries:
        points += policy.otx_adversary_points
        parts.append(f"adversary {_names(adversaries, 3)}")
    if malware:
        points += policy.otx_malware_points
        parts.append(f"malware {_names(malware, 3)}")
    if attack:
        points += policy.otx_attack_points
        parts.append(f"ATT&CK {_names(attack, 3, limit=20)}")
    named = bool(adversaries or malware or attack)
    finding.grade = MODERATE if named or pulses > policy.otx_pulse_weak_max else WEAK

    dates = [d for p in result.pulses if (d := p.modified or p.created) is not None]
    age = _age_days(max(dates, key=_aware), now) if dates else None
    text = "; ".join(parts)
    if age is not None and age > policy.otx_recent_days:
        points *= policy.otx_stale_factor
        finding.grade = max(finding.grade - 1, WEAK)
        text += f" — newest pulse {age} days old, counted at {policy.otx_stale_factor:.0%}"
    elif finding.grade == WEAK:
        text += " — weak evidence alone"
    finding.malice += points
    finding.add(text, points)
    return finding


def _abuseipdb(result: SourceResult, policy: ScoringPolicy, now: datetime) -> _Finding:
    """Confidence, backed by enough recent reports from enough reporters; Tor; whitelisting."""
    finding = _Finding(capable=True)
    report = result.abuse
    if report is None:
        if result.status is SourceStatus.NOT_FOUND:
            finding.add("no AbuseIPDB reports", -_CLEAN_RANK)
        else:
            finding.capable = False
            finding.add("AbuseIPDB returned no report", group=_ANSWER)
        return finding
    if report.usage_type:
        finding.add(f"AbuseIPDB usage type: {_clip(report.usage_type)}", group=_CONTEXT)
    if report.is_whitelisted:
        finding.allowlisted = True
        finding.vouch = "the AbuseIPDB whitelist"
        finding.add("AbuseIPDB lists it as whitelisted", -_ALLOWLIST_RANK)
        return finding
    if report.is_tor:
        finding.malice += policy.abuse_tor_points
        finding.grade = WEAK
        finding.add("Tor exit node (AbuseIPDB)", policy.abuse_tor_points)

    conf, reports, reporters = report.confidence, report.total_reports, report.distinct_reporters
    if reports <= 0 or conf <= 0:
        old = f" ({reports} old report{'s' if reports != 1 else ''})" if reports > 0 else ""
        text = f"AbuseIPDB confidence 0%{old}" if old else "no AbuseIPDB reports"
        finding.add(text, -_CLEAN_RANK)
        return finding

    age = _age_days(report.last_reported, now) if report.last_reported else None
    last = f", last {_ago(age)}" if age is not None else ""
    base = f"AbuseIPDB confidence {conf}% from {reports} report{'s' if reports != 1 else ''}"
    by = f" by {reporters} user{'s' if reporters != 1 else ''}" if reporters else ""
    if conf >= policy.abuse_confidence_malicious:
        thin = reports < policy.abuse_min_reports or reporters < policy.abuse_min_reporters
        stale = age is not None and age > policy.abuse_recent_days
        if not thin and not stale:
            points, finding.grade, tail = policy.abuse_strong_points, STRONG, ""
        else:
            points, finding.grade = policy.abuse_moderate_points, MODERATE
            tail = " — too few reports to trust alone" if thin else " — but not recently"
    elif conf >= policy.abuse_confidence_suspicious:
        points, finding.grade, tail = policy.abuse_moderate_points, MODERATE, ""
    else:
        points, tail = policy.abuse_weak_points, " — weak evidence alone"
        finding.grade = max(finding.grade, WEAK)
    finding.malice += points
    finding.add(f"{base}{by}{last}{tail}", points)
    return finding


_EVALUATORS: dict[str, Callable[[SourceResult, ScoringPolicy, datetime], _Finding]] = {
    "virustotal": _virustotal,
    "otx": _otx,
    "abuseipdb": _abuseipdb,
}


def _context(display: str, result: SourceResult) -> list[_Reason]:
    """IPinfo and the like: who runs the address. Never moves the score or the confidence."""
    if result.status.failed:
        text = f"{display}: {_FAILURE_TEXT[result.status]} — no network context"
        return [_Reason(text, _CONTEXT)]
    geo = result.geo
    if not result.status.answered or geo is None:
        return []
    parts: list[str] = []
    if geo.anycast:
        parts.append("anycast network")
    org = _clip(geo.organization) if geo.organization else ""
    if geo.asn is not None and not org.upper().startswith("AS"):
        org = f"AS{geo.asn} {org}".strip()
    if org:
        parts.append(org)
    place = ", ".join(_clip(p, 40) for p in (geo.city, geo.country) if p)
    if place:
        parts.append(place)
    return [_Reason(f"{display}: {'; '.join(parts)}", _CONTEXT)] if parts else []


# --- combining ---------------------------------------------------------------------------


def _confidence(
    answered: list[tuple[float, _Finding]],
    expected: float,
    direction: float,
    policy: ScoringPolicy,
) -> int:
    """Coverage of the expected sources times how well the answering ones agree."""
    total = sum(w for w, _ in answered)
    if total <= 0 or expected <= 0:
        return 0
    coverage = min(total / expected, 1.0)
    agreement = sum(w * (1 + direction * f.lean) / 2 for w, f in answered) / total
    return _round(100 * coverage * (1 - policy.disagreement_penalty * (1 - agreement)))


def _ordered_reasons(reasons: list[_Reason], direction: float) -> list[str]:
    """Evidence for the outcome first (biggest first), adjustments, evidence against, the rest."""

    def key(item: tuple[int, _Reason]) -> tuple[int, float, int]:
        seq, reason = item
        group = reason.group
        if group == _SUPPORTING and reason.points * direction < 0:
            group = _OPPOSING
        return group, -abs(reason.points), seq

    ranked = sorted(enumerate(reasons), key=key)
    return list(dict.fromkeys(reason.text for _, reason in ranked))


def _private_reasons(results: list[tuple[str, SourceResult]]) -> list[str]:
    """'not queried: …' when no source was asked because the indicator is private."""
    statuses = [r.status for _, r in results]
    if any(s.answered or s.failed for s in statuses):
        return []
    messages = [
        _clip(r.message, 120) if r.message else "private or reserved address"
        for _, r in results
        if r.status is SourceStatus.NOT_QUERIED_PRIVATE
    ]
    return [f"not queried: {m}" for m in dict.fromkeys(messages)]


# --- small helpers -----------------------------------------------------------------------


def _ordered(sources: Mapping[str, SourceResult]) -> list[str]:
    known = [name for name in (*EVIDENCE_SOURCES, *CONTEXT_SOURCES) if name in sources]
    return known + sorted(name for name in sources if name not in known)


def _round(value: float) -> int:
    return max(0, min(100, math.floor(value + 0.5)))


def _number(value: float) -> str:
    """Points as people write them: 15, 2.5."""
    return f"{value:g}"


def _aware(moment: datetime) -> datetime:
    """Naive timestamps (OTX sends them) are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _age_days(moment: datetime, now: datetime) -> int:
    return max((_aware(now) - _aware(moment)).days, 0)


def _ago(days: int) -> str:
    if days == 0:
        return "today"
    return f"{days} day{'s' if days != 1 else ''} ago"


def _clip(text: str | None, limit: int = NAME_MAX) -> str:
    """One short printable line: vendor and attacker strings must not carry layout or bulk."""
    if not text:
        return ""
    printable = "".join(
        ch if unicodedata.category(ch)[0] != "C" else " " for ch in text[: limit * 4]
    )
    line = " ".join(printable.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        clipped = _clip(name)
        if clipped and clipped.casefold() not in seen:
            seen[clipped.casefold()] = clipped
    return list(seen.values())


def _names(names: Iterable[str], shown: int, *, limit: int = NAME_MAX) -> str:
    unique = [n for n in (_clip(name, limit) for name in names) if n]
    unique = list(dict.fromkeys(unique))
    more = len(unique) - shown
    return ", ".join(unique[:shown]) + (f", +{more} more" if more > 0 else "")
