"""Markdown for tickets: a summary, one section per indicator, the attribution.

Malicious and suspicious indicators are defanged (hxxp://evil[.]com) so a ticket system does
not turn them into live links, and so are the URLs and domains inside upstream text (pulse names,
tags, malware labels, host names: ``audience.for_people``). Every upstream string is escaped for
Markdown table cells and for the HTML most Markdown viewers also render: pulse names and tags are
attacker-controlled.
Control, bidi and zero-width characters are shown as escapes first (``_visible.visible``, the
cleaning step every human-facing format shares), so a U+202E in a pulse name cannot make "…27"
read as "…72": it reads "\\u202e27".
"""

from __future__ import annotations

import re
from collections import Counter

from threatintel._visible import visible
from threatintel._wording import plural
from threatintel.indicators import defang
from threatintel.models import (
    Analysis,
    Attribution,
    Enrichment,
    SourceResult,
    SourceStatus,
    VerdictLabel,
)
from threatintel.reports.audience import for_people

MAX_REASONS = 5
_DANGEROUS = (VerdictLabel.MALICIOUS, VerdictLabel.SUSPICIOUS)
# An upstream backslash is escaped too: left alone it would escape our own escape, so \*x\*
# would come out as \\*x\\*, a literal backslash before a live emphasis star.
_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "~": "\\~",
        "|": "\\|",
        "`": "\\`",
        "*": "\\*",
        "_": "\\_",
        "[": "\\[",
        "]": "\\]",
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
    }
)


def md(text: object) -> str:
    """Escape text for a Markdown table cell or paragraph."""
    return visible(text).translate(_ESCAPES)


def code_span(text: object) -> str:
    """Text as a CommonMark code span: shown literally, so it is fenced rather than escaped."""
    # Inside a code span backslash escapes and entities are not interpreted, so only the fence
    # matters: make it longer than any backtick run in the text so none can close it early.
    plain = visible(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", plain)), default=0) + 1)
    # CommonMark strips one space from each side when both are present, which undoes this pad;
    # without it a leading or trailing backtick would merge into the fence.
    if plain[:1] in ("`", " ") or plain[-1:] in ("`", " "):
        plain = f" {plain} "
    return f"{fence}{plain}{fence}"


def shown_value(enrichment: Enrichment) -> str:
    value = enrichment.indicator.value
    return defang(value) if enrichment.verdict.label in _DANGEROUS else value


def source_facts(result: SourceResult) -> str:
    """The few facts an analyst reads first, per source."""
    facts: list[str] = []
    if result.detections is not None:
        d = result.detections
        facts.append(f"{d.malicious}/{d.total} engines malicious")
    if result.pulse_count:
        facts.append(plural(result.pulse_count, "OTX pulse"))
    if result.adversaries:
        facts.append("adversary " + ", ".join(result.adversaries[:3]))
    if result.malware_families:
        facts.append("malware " + ", ".join(result.malware_families[:3]))
    if result.attack_ids:
        facts.append("ATT&CK " + ", ".join(result.attack_ids[:5]))
    if result.abuse is not None:
        a = result.abuse
        facts.append(f"confidence {a.confidence}% from {plural(a.total_reports, 'report')}")
        if a.is_tor:
            facts.append("Tor exit")
    if result.geo is not None:
        g = result.geo
        where = " ".join(p for p in (g.city, g.country) if p)
        owner = f"AS{g.asn} {g.organization or ''}".strip() if g.asn else (g.organization or "")
        facts.extend(p for p in (where, owner) if p)
    if result.cached and result.cache_age is not None:
        facts.append(f"cached {result.cache_age:.0f}s ago")
    if not facts and result.message:
        facts.append(result.message)
    return "; ".join(facts)


def _summary(analysis: Analysis) -> list[str]:
    counts = Counter(e.verdict.label for e in analysis.enrichments)
    answers = [r for e in analysis.enrichments for r in e.sources.values() if r.status.answered]
    cached = sum(r.cached for r in answers)
    share = f"{cached}/{len(answers)}" if answers else "0/0"
    lines = [
        "# threatintel report",
        "",
        f"Generated {analysis.finished_at:%Y-%m-%d %H:%M:%S} UTC in {analysis.duration:.1f}s; "
        f"sources: {', '.join(analysis.providers) or 'none'}; answers from cache: {share}.",
        "",
        "| verdict | indicators |",
        "|---|---:|",
    ]
    lines += [f"| {label.value} | {counts.get(label, 0)} |" for label in VerdictLabel]
    lines += [f"| **total** | **{len(analysis.enrichments)}** |", ""]
    return lines


def _indicator(enrichment: Enrichment) -> list[str]:
    verdict = enrichment.verdict
    lines = [
        f"### {md(shown_value(enrichment))}",
        "",
        f"**{verdict.label.value}** — score {verdict.score}, confidence {verdict.confidence} "
        f"({enrichment.indicator.type.value})",
        "",
    ]
    lines += [f"- {md(reason)}" for reason in verdict.reasons[:MAX_REASONS]]
    if verdict.reasons:
        lines.append("")
    lines += ["| source | status | facts |", "|---|---|---|"]
    for name, result in enrichment.sources.items():
        status = result.status.value
        if result.status is SourceStatus.QUOTA_EXHAUSTED and result.reset_at is not None:
            status += f" (resets {result.reset_at:%Y-%m-%d %H:%M} UTC)"
        lines.append(f"| {md(name)} | {md(status)} | {md(source_facts(result))} |")
    lines.append("")
    return lines


def _attribution(attribution: Attribution | None) -> list[str]:
    lines = ["## Attribution", ""]
    if attribution is None:
        return [*lines, "Not computed.", ""]
    lines.append(f"{md(attribution.summary)} (MITRE ATT&CK {md(attribution.attack_version)})")
    lines.append("")
    for candidate in attribution.groups:
        group = candidate.group
        lines += [
            f"### {md(group.attack_id)} {md(group.name)} — confidence {candidate.confidence}",
            "",
        ]
        lines += [f"- {md(reason)}" for reason in candidate.reasons]
        linked = ", ".join(md(defang(i)) for i in candidate.indicators)
        lines += [f"- indicators: {linked or 'none'}", ""]
    return lines


def render_markdown(analysis: Analysis) -> str:
    analysis = for_people(analysis)
    lines = _summary(analysis)
    lines += ["## Indicators", ""]
    for enrichment in analysis.enrichments:
        lines += _indicator(enrichment)
    lines += _attribution(analysis.attribution)
    if analysis.rejected:
        lines += ["## Skipped", ""]
        lines += [f"- {code_span(r.candidate)}: {md(r.reason)}" for r in analysis.rejected]
        lines.append("")
    return "\n".join(lines)
