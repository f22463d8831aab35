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
    Finding,
    aware,
    clip,
    network,
)
from threatintel.models import Indicator, SourceResult, SourceStatus, Verdict, VerdictLabel
from threatintel.policy import DEFAULT_POLICY, ScoringPolicy
from threatintel.providers import PROVIDERS, display_name

__all__ = ["DEFAULT_POLICY", "ScoringPolicy", "display_name", "score"]


@dataclass(frozen=True, slots=True)
class _Reason:
    text: str
    group: int
    points: float = 0.0  # signed, weighted: + toward malice, - toward benign; orders evidence


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

    clock = aware(now) if now is not None else datetime.now(UTC)
    reasons: list[_Reason] = []
    answered: list[tuple[float, Finding]] = []
    allowlisted_by: list[str] = []
    known_good = Finding()  # who runs the address: benign points and vouchers, never malice
    expected = 0.0
    for name, result in results:
        display = display_name(name)
        status = result.status
        facts = PROVIDERS.get(name)
        if facts is None:
            continue  # an unknown source is ignored entirely
        if facts.role == "context":
            found, line = network(display, result, policy)
            known_good.benign += found.benign
            known_good.vouches += found.vouches
            reasons.extend(_Reason(text, group, points) for text, points, group in found.reasons)
            if line:
                reasons.append(_Reason(line, CONTEXT))
            continue
        evaluate = facts.evaluator
        weight = float(getattr(policy, f"{name}_weight", facts.default_weight))
        if evaluate is None or weight == 0:
            continue  # sources without evidence and sources weighted out are ignored
        if status.answered:
            finding = evaluate(indicator, result, policy, clock)
            answered.append((weight, finding))
            if finding.allowlisted:
                allowlisted_by.append(display)
            expected += weight
            for text, points, group in finding.reasons:
                reasons.append(_Reason(text, group, points * weight))
        elif status.failed:
            expected += weight
            text = f"{display}: {FAILURE_TEXT[status]} — verdict based on fewer sources"
            reasons.append(_Reason(text, ANSWER))
        elif status is SourceStatus.PENDING:
            # Not in yet at the caller's deadline: missing evidence, like a failure, but no fault.
            expected += weight
            reasons.append(_Reason(f"{display}: answer still pending", ANSWER))
        elif status is SourceStatus.NOT_CONFIGURED:
            expected += weight * policy.not_configured_weight
            reasons.append(_Reason(f"{display}: not configured", ANSWER))

    malice = sum(w * f.malice for w, f in answered)
    benign = sum(w * f.benign for w, f in answered) + known_good.benign
    value = _round(min(100.0, max(0.0, malice - benign)))

    if value > policy.allowlist_score_cap and allowlisted_by:
        value = policy.allowlist_score_cap
        verb = "lists" if len(allowlisted_by) == 1 else "list"
        text = f"score capped at {value}: {' and '.join(allowlisted_by)} {verb} it as known-good"
        reasons.append(_Reason(text, ADJUSTMENT))
    strong = any(f.grade >= STRONG for _, f in answered)
    vouches = [v for _, f in answered for v in f.vouches] + known_good.vouches
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
        reasons.append(_Reason(text, ADJUSTMENT))
    moderate = sum(1 for _, f in answered if f.grade >= MODERATE)
    needed = policy.corroboration_min_sources
    if value >= policy.malicious_threshold and not strong and moderate < needed:
        value = policy.malicious_threshold - 1
        text = (
            f"held at {value}, below malicious: no strong evidence, and "
            f"{plural(moderate, 'source')} with moderate evidence where {needed} are needed"
        )
        reasons.append(_Reason(text, ADJUSTMENT))

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
            reasons.append(_Reason("no evidence source answered", ADJUSTMENT))
        else:
            text = (
                f"{plural(clean, 'clean answer')}; "
                f"{policy.harmless_min_sources} needed to call it harmless"
            )
            reasons.append(_Reason(text, ADJUSTMENT))

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
        if group == SUPPORTING and reason.points * direction < 0:
            group = OPPOSING
        return group, -abs(reason.points), seq

    ranked = sorted(enumerate(reasons), key=key)
    return list(dict.fromkeys(reason.text for _, reason in ranked))


def _private_reasons(results: list[tuple[str, SourceResult]]) -> list[str]:
    """'not queried: …' when no source was asked because the indicator is private."""
    statuses = [r.status for _, r in results]
    if any(s.answered or s.failed for s in statuses):
        return []
    messages = [
        clip(r.message, 120) if r.message else "private or reserved address"
        for _, r in results
        if r.status is SourceStatus.NOT_QUERIED_PRIVATE
    ]
    return [f"not queried: {m}" for m in dict.fromkeys(messages)]


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
