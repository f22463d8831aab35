"""Evidence → verdict: a weighted, explainable score instead of worst-of voting.

    verdict = score(indicator, {result.source: result for result in results})
    verdict = score(indicator, sources, ScoringPolicy(malicious_threshold=80), now=fixed_clock)

Each evidence source (VirusTotal, OTX, AbuseIPDB) that answered is turned into malice points,
benign points, a grade (none / weak / moderate / strong) and a lean between -1 (benign) and +1
(malicious) by the evaluator its provider class names (findings.py). The score is the weighted
sum of malice minus benign points, clamped to 0..100, then capped by allowlists and held below
the malicious threshold unless one source is strong, or, when nothing vouches for the indicator
(a popularity rank, a high reputation, an allowlist, an anycast or CDN network), several
moderate sources agree. IPinfo adds context and known-good network signals, never malice.
Failed sources lower the confidence and never count as clean. docs/verdicts.md explains the
model with worked examples; every number is a field of
ScoringPolicy (policy.py), configurable as ``SCORING__<FIELD>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from threatintel._wording import plural
from threatintel.findings import (
    ADJUSTMENT,
    ANSWER,
    CONTEXT,
    FAILURE_TEXT,
    MODERATE,
    OPPOSING,
    STRONG,
    SUPPORTING,
    Evaluator,
    Finding,
    aware,
    clip,
    network,
)
from threatintel.models import Indicator, SourceResult, SourceStatus, Verdict, VerdictLabel
from threatintel.policy import DEFAULT_POLICY, ScoringPolicy
from threatintel.providers import PROVIDERS, display_name

__all__ = ["DEFAULT_POLICY", "ScoringPolicy", "display_name", "score"]


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
    plan = _plan(sources)
    results = [(step, sources[step.name]) for step in plan]
    for _, result in results:
        if result.status in _HEARD:
            break
    else:
        private = _private_reasons([result for _, result in results])
        if private:
            return Verdict(label=VerdictLabel.UNKNOWN, score=0, confidence=0, reasons=private)

    clock = aware(now) if now is not None else datetime.now(UTC)
    reasons: list[tuple[str, int, float]] = []  # text, group, signed weighted points
    answered: list[tuple[float, Finding]] = []
    allowlisted_by: list[str] = []
    known_good = Finding()  # who runs the address: benign points and vouchers, never malice
    expected = 0.0
    for step, result in results:
        if step.role is None:
            continue  # an unknown source is ignored entirely
        status = result.status
        display = step.display
        if step.role == "context":
            if status not in _HEARD:
                continue  # not asked (an IPinfo lookup of a domain): no context to add
            found, line = network(display, result, policy)
            known_good.benign += found.benign
            known_good.vouches += found.vouches
            reasons.extend((text, group, points) for text, points, group in found.reasons)
            if line:
                reasons.append((line, CONTEXT, 0.0))
            continue
        evaluate = step.evaluator
        weight = float(getattr(policy, step.weight_field, step.default_weight))
        if evaluate is None or weight == 0:
            continue  # sources without evidence and sources weighted out are ignored
        if status in _ANSWERED:
            finding = evaluate(indicator, result, policy, clock)
            answered.append((weight, finding))
            if finding.allowlisted:
                allowlisted_by.append(display)
            expected += weight
            for text, points, group in finding.reasons:
                reasons.append((text, group, points * weight))
        elif status in _FAILED:
            expected += weight
            text = f"{display}: {FAILURE_TEXT[status]} — verdict based on fewer sources"
            reasons.append((text, ANSWER, 0.0))
        elif status is SourceStatus.PENDING:
            # Not in yet at the caller's deadline: missing evidence, like a failure, but no fault.
            expected += weight
            reasons.append((f"{display}: answer still pending", ANSWER, 0.0))
        elif status is SourceStatus.NOT_CONFIGURED:
            expected += weight * policy.not_configured_weight
            reasons.append((f"{display}: not configured", ANSWER, 0.0))

    # One pass over the findings; sum() over lists keeps sum()'s own arithmetic.
    malices: list[float] = []
    benigns: list[float] = []
    vouches: list[str] = []
    strong = False
    moderate = clean = 0
    for w, f in answered:
        malices.append(w * f.malice)
        benigns.append(w * f.benign)
        vouches += f.vouches
        grade = f.grade
        strong = strong or grade >= STRONG
        moderate += grade >= MODERATE
        clean += f.clean
    vouches += known_good.vouches
    malice = sum(malices)
    benign = sum(benigns) + known_good.benign
    value = _round(min(100.0, max(0.0, malice - benign)))

    if value > policy.allowlist_score_cap and allowlisted_by:
        value = policy.allowlist_score_cap
        verb = "lists" if len(allowlisted_by) == 1 else "list"
        text = f"score capped at {value}: {' and '.join(allowlisted_by)} {verb} it as known-good"
        reasons.append((text, ADJUSTMENT, 0.0))
    if value >= policy.malicious_threshold and not strong and vouches:
        # Well-known infrastructure collects weak and moderate accusations from every direction
        # (engines that flag resolvers, pulses that list the DNS server malware used); agreeing
        # noise is still noise, so only a strong source may overrule a benign voucher.
        value = policy.malicious_threshold - 1
        verb = "vouches" if len(vouches) == 1 else "vouch"
        text = (
            f"held at {value}, below malicious: {_and(vouches)} {verb} for it, "
            "and no source has strong evidence"
        )
        reasons.append((text, ADJUSTMENT, 0.0))
    needed = policy.corroboration_min_sources
    if value >= policy.malicious_threshold and not strong and moderate < needed:
        value = policy.malicious_threshold - 1
        text = (
            f"held at {value}, below malicious: no strong evidence, and "
            f"{plural(moderate, 'source')} with moderate evidence where {needed} are needed"
        )
        reasons.append((text, ADJUSTMENT, 0.0))

    if value >= policy.malicious_threshold:
        label = VerdictLabel.MALICIOUS
    elif value >= policy.suspicious_threshold:
        label = VerdictLabel.SUSPICIOUS
    elif clean >= policy.harmless_min_sources:
        label = VerdictLabel.HARMLESS
    else:
        label = VerdictLabel.UNKNOWN
        if not answered:
            reasons.append(("no evidence source answered", ADJUSTMENT, 0.0))
        else:
            text = (
                f"{plural(clean, 'clean answer')}; "
                f"{policy.harmless_min_sources} needed to call it harmless"
            )
            reasons.append((text, ADJUSTMENT, 0.0))

    direction = 1.0 if value >= policy.suspicious_threshold else -1.0
    # An unknown label has no side to support: its evidence is simply ranked by size.
    side = 0.0 if label is VerdictLabel.UNKNOWN else direction
    return Verdict(
        label=label,
        score=value,
        confidence=_confidence(answered, expected, direction, policy),
        reasons=_ordered_reasons(reasons, side),
    )


# --- combining ---------------------------------------------------------------------------


def _confidence(
    answered: list[tuple[float, Finding]],
    expected: float,
    direction: float,
    policy: ScoringPolicy,
) -> int:
    """Coverage of the expected sources times how well the answering ones agree."""
    if not answered or expected <= 0:
        return 0
    total = sum([w for w, _ in answered])
    if total <= 0:
        return 0
    coverage = min(total / expected, 1.0)
    agreement = sum([w * (1 + direction * f.lean) / 2 for w, f in answered]) / total
    return _round(100 * coverage * (1 - policy.disagreement_penalty * (1 - agreement)))


def _ordered_reasons(reasons: list[tuple[str, int, float]], direction: float) -> list[str]:
    """Evidence for the outcome first (biggest first), adjustments, evidence against, the rest."""
    ranked = sorted(
        [
            (
                OPPOSING if group == SUPPORTING and points * direction < 0 else group,
                -abs(points),
                seq,
                text,
            )
            for seq, (text, group, points) in enumerate(reasons)
        ]
    )  # seq is unique: the text never decides
    return list(dict.fromkeys([item[3] for item in ranked]))


def _private_reasons(results: list[SourceResult]) -> list[str]:
    """'not queried: …' when no source was asked because the indicator is private."""
    if any(r.status in _HEARD for r in results):
        return []
    messages = [
        clip(r.message, 120) if r.message else "private or reserved address"
        for r in results
        if r.status is SourceStatus.NOT_QUERIED_PRIVATE
    ]
    return [f"not queried: {m}" for m in dict.fromkeys(messages)]


# --- the sources of one verdict, worked out once per set of source names --------------------

#: Statuses that are an answer, and those that are an answer or a failure (SourceStatus's
#: ``answered`` and ``failed``, as sets: a member test instead of a property call per source).
_ANSWERED = frozenset(s for s in SourceStatus if s.answered)
_FAILED = frozenset(s for s in SourceStatus if s.failed)
_HEARD = _ANSWERED | _FAILED


@dataclass(frozen=True, slots=True)
class _Step:
    """One source of a verdict with the registry's facts about it (role None: unregistered)."""

    name: str
    display: str
    role: str | None
    evaluator: Evaluator | None
    weight_field: str
    default_weight: float


#: Source-name tuples (in the mapping's order) → their steps, with the registry they were
#: worked out from: a warm run scores 10,000 indicators over a handful of such tuples.
_PLANS: dict[tuple[str, ...], tuple[dict[str, object], list[_Step]]] = {}
_PLANS_MAX = 256


def _plan(sources: Mapping[str, SourceResult]) -> list[_Step]:
    """The sources in scoring order with their facts; recomputed when the registry changes
    (tests and plug-ins register providers at run time)."""
    key = tuple(sources)
    cached = _PLANS.get(key)
    if cached is not None and cached[0] == PROVIDERS:
        return cached[1]
    steps = []
    for name in _ordered(sources):
        facts = PROVIDERS.get(name)
        if facts is None:
            steps.append(_Step(name, name, None, None, "", 0.0))
        else:
            steps.append(
                _Step(
                    name,
                    display_name(name),
                    facts.role,
                    facts.evaluator,
                    f"{name}_weight",
                    facts.default_weight,
                )
            )
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = (dict(PROVIDERS), steps)
    return steps


# --- small helpers -----------------------------------------------------------------------


def _ordered(sources: Mapping[str, SourceResult]) -> list[str]:
    """Evidence sources in registry order, then context sources, then any others."""
    evidence: list[str] = []
    context: list[str] = []
    for name, cls in PROVIDERS.items():
        if name in sources:
            if cls.role == "evidence":
                evidence.append(name)
            elif cls.role == "context":
                context.append(name)
    known = evidence + context
    if len(known) == len(sources):
        return known
    return known + sorted(name for name in sources if name not in known)


def _and(items: list[str]) -> str:
    """ "a", "a and b", "a, b and 2 more": vouchers can pile up on popular infrastructure."""
    if len(items) <= 2:
        return " and ".join(items)
    return f"{items[0]}, {items[1]} and {len(items) - 2} more"


def _round(value: float) -> int:
    return max(0, min(100, math.floor(value + 0.5)))
