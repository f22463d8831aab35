"""What each audience of a report may see.

    for_people(analysis)             upstream text defanged: table, Markdown, CSV and HTML
    for_sharing(analysis)            non-public indicators left out: STIX, MISP, HTML briefings
    defang_text(text)                the URLs, domains and e-mail addresses in free text made
                                     unclickable: "see http://evil.com" → "see hxxp://evil[.]com"

People read reports in ticket systems, chat and mail, which turn anything that looks like a link
into a live one. The indicators themselves are defanged by each renderer's own rule; upstream
text (pulse names, tags, malware labels, an ISP's domain, a host name) can name attacker
infrastructure too, and is defanged here, once, for every human-facing format. Machine formats
(JSON, JSON Lines, STIX, MISP) keep every value exact.

Sharing formats leave the organisation: private and reserved addresses and internal names (and
URLs and e-mail addresses on such hosts) stay out unless asked for, and the report says how many
were left out. An indicator is non-public when its own value says so (``non_public_reason`` with
the configured ``INTERNAL_DOMAINS``) or when the engine refused to send it to a source for that
reason (``not_queried_private``), which also covers names that only a custom list made internal.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from threatintel._defang import DEFANGED_SCHEMES
from threatintel._wording import plural
from threatintel.attribution import attribute
from threatintel.indicators import DEFAULT_INTERNAL_DOMAINS, extract, non_public_reason
from threatintel.models import (
    AbuseReport,
    Analysis,
    Attribution,
    Enrichment,
    Geo,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
)

__all__ = ["Shared", "defang_text", "for_people", "for_sharing", "left_out_note", "non_public"]

_M = TypeVar("_M", bound=BaseModel)
_LINKABLE = frozenset({IndicatorType.URL, IndicatorType.DOMAIN, IndicatorType.EMAIL})
# Cheap pre-check: without a dot between two letters or digits, or a scheme, nothing can link.
_MAYBE_LINK = re.compile(r"[^\W_]\.[^\W_]|://")
_RUN = re.compile(r"\S+")
_SCHEME = re.compile(r"(?<![A-Za-z0-9])(https?|ftps?)(?=://)", re.I | re.A)
# A dot between two characters that are neither space, dot nor bracket: not one already defanged.
_BARE_DOT = re.compile(r"(?<=[^\s.\[\]()])\.(?=[^\s.\[\]()])")


@functools.lru_cache(maxsize=8192)
def defang_text(text: str) -> str:
    """Free text with every URL, domain and e-mail address in it defanged; nothing else changes.

    Detection is the parser's own (``extract``), so a malware label such as "Phishing.Generic"
    or a file name stays as it is; ``refang`` gives back the original links.
    """
    if not _MAYBE_LINK.search(text):
        return text
    return _RUN.sub(_defang_run, text)


def _defang_run(match: re.Match[str]) -> str:
    run = match.group()
    hosts = set()
    for indicator in extract(run).indicators:
        if indicator.type not in _LINKABLE:
            continue
        if indicator.type is IndicatorType.URL:
            hosts.add(indicator.host or "")
        else:
            hosts.add(indicator.value.rpartition("@")[2])
    hosts.discard("")
    if not hosts:
        return run
    run = _SCHEME.sub(lambda m: DEFANGED_SCHEMES[m.group(1).lower()], run)
    # The parser normalises (lower case, IDNA, refanged): find each host as it is spelt here.
    spelt = re.compile("|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True)), re.I)
    defanged = spelt.sub(lambda m: m.group().replace(".", "[.]"), run)
    if defanged == run:
        # Spelt differently here (Unicode for an IDNA name, half-defanged): break every bare dot.
        defanged = _BARE_DOT.sub("[.]", run)
    return defanged


def _updated(model: _M, update: dict[str, Any]) -> _M:
    """The model itself when nothing changes (most upstream text holds no link), else a copy."""
    changed = {k: v for k, v in update.items() if v != getattr(model, k)}
    return model.model_copy(update=changed) if changed else model


def _texts(values: Sequence[str]) -> list[str]:
    return [defang_text(v) for v in values]


def _maybe(value: str | None) -> str | None:
    return None if value is None else defang_text(value)


def _pulse(pulse: Pulse) -> Pulse:
    return _updated(
        pulse,
        {
            "name": defang_text(pulse.name),
            "adversary": _maybe(pulse.adversary),
            "malware_families": _texts(pulse.malware_families),
            "tags": _texts(pulse.tags),
        },
    )


def _abuse(abuse: AbuseReport | None) -> AbuseReport | None:
    if abuse is None:
        return None
    return _updated(
        abuse,
        {
            "isp": _maybe(abuse.isp),
            "domain": _maybe(abuse.domain),
            "usage_type": _maybe(abuse.usage_type),
        },
    )


def _geo(geo: Geo | None) -> Geo | None:
    if geo is None:
        return None
    return _updated(
        geo, {"organization": _maybe(geo.organization), "hostname": _maybe(geo.hostname)}
    )


def _source(result: SourceResult) -> SourceResult:
    return _updated(
        result,
        {
            "message": _maybe(result.message),
            "tags": _texts(result.tags),
            "categories": _texts(result.categories),
            "threat_label": _maybe(result.threat_label),
            "pulses": [_pulse(p) for p in result.pulses],
            "adversaries": _texts(result.adversaries),
            "malware_families": _texts(result.malware_families),
            "allowlisted_by": _texts(result.allowlisted_by),
            "abuse": _abuse(result.abuse),
            "geo": _geo(result.geo),
        },
    )


def _enrichment(enrichment: Enrichment) -> Enrichment:
    verdict = enrichment.verdict
    return _updated(
        enrichment,
        {
            "sources": {name: _source(r) for name, r in enrichment.sources.items()},
            "verdict": _updated(verdict, {"reasons": _texts(verdict.reasons)}),
        },
    )


def _attribution(attribution: Attribution | None) -> Attribution | None:
    if attribution is None:
        return None
    groups = [
        group.model_copy(
            update={
                "reasons": _texts(group.reasons),
                "evidence": [
                    e.model_copy(update={"value": defang_text(e.value), "detail": _maybe(e.detail)})
                    for e in group.evidence
                ],
            }
        )
        for group in attribution.groups
    ]
    return attribution.model_copy(
        update={
            "summary": defang_text(attribution.summary),
            "groups": groups,
            "unmatched": _texts(attribution.unmatched),
        }
    )


def for_people(analysis: Analysis) -> Analysis:
    """The analysis with upstream text defanged; indicator values, ids and links are untouched.

    Indicator values keep their renderer's rule (Markdown defangs dangerous ones; CSV keeps them
    exact for lookups), and vendor GUI links stay live: they are ours, not upstream text.
    """
    return analysis.model_copy(
        update={
            "enrichments": [_enrichment(e) for e in analysis.enrichments],
            "attribution": _attribution(analysis.attribution),
        }
    )


# --- sharing ---------------------------------------------------------------------------------


def non_public(
    enrichment: Enrichment, internal_domains: Sequence[str] = DEFAULT_INTERNAL_DOMAINS
) -> str | None:
    """Why this indicator must stay inside the organisation, or None if it may be shared."""
    reason = non_public_reason(enrichment.indicator, internal_domains)
    if reason:
        return reason
    for result in enrichment.sources.values():
        if result.status is SourceStatus.NOT_QUERIED_PRIVATE:
            return result.message or "not public"
    return None


@dataclass(frozen=True, slots=True)
class Shared:
    """The analysis to share and how many non-public indicators were left out of it."""

    analysis: Analysis
    left_out: int


def for_sharing(
    analysis: Analysis,
    *,
    include_private: bool = False,
    internal_domains: Sequence[str] = DEFAULT_INTERNAL_DOMAINS,
) -> Shared:
    """Leave non-public indicators out (unless ``include_private``); attribution follows suit."""
    if include_private:
        return Shared(analysis, 0)
    kept = [e for e in analysis.enrichments if non_public(e, internal_domains) is None]
    left_out = len(analysis.enrichments) - len(kept)
    if not left_out:
        return Shared(analysis, 0)
    # Recomputed rather than filtered: its reasons count indicators, and a candidate that only
    # private evidence supported must not be shared either.
    attribution = None if analysis.attribution is None else attribute(kept)
    return Shared(
        analysis.model_copy(update={"enrichments": kept, "attribution": attribution}), left_out
    )


def left_out_note(left_out: int) -> str:
    """The sentence every sharing format carries when it left indicators out."""
    counted = plural(left_out, "non-public indicator was", "non-public indicators were")
    return (
        f"{counted} left out (private or reserved addresses, internal "
        "names); render with --include-private (include_private=True) to share them."
    )
