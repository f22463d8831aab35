"""The HTML report: one self-contained file that works offline, from ``file://``, with no server.

    html = render_html(analysis)
    Path("report.html").write_text(html, encoding="utf-8")

Everything the page needs (CSS, script, chart, graph data) is inside the document: many SOCs are
air-gapped, and a report that loads nothing cannot leak that it was opened. Upstream text (pulse
names, tags, adversaries, API messages) is attacker-influenced, so:

- HTML is rendered by Jinja with autoescape on; no upstream value is ever marked safe.
- Control, bidi and zero-width characters are shown as escapes (``_visible.visible``, as in
  every human-facing format) in every ``{{ value }}`` and in the graph data, and upstream values
  sit in bidi-isolated elements, so right-to-left text cannot reorder what is around it ("…27"
  shown as "…72").
- Data for the script travels as JSON in ``<script type="application/json">`` with ``<``, ``>``
  and ``&`` written as ``\\u003c`` etc., so no value can close the element; the script reads it
  with ``JSON.parse`` and builds nodes with ``textContent`` only.
- A Content-Security-Policy allows exactly our one script (by hash) and no network at all, so even
  an escaping bug could neither run an injected script or handler nor fetch anything.
- Vendor GUI links are plain ``<a href>`` (never loaded) and only if they are http(s).
- URLs and domains inside upstream text are defanged (``audience.for_people``), so text copied
  from the page into a ticket or chat does not become a live link.

A briefing is made to be passed on: non-public indicators (private addresses, internal names)
are left out unless ``include_private=True``, and a visible line says how many.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, FunctionLoader, StrictUndefined
from markupsafe import Markup

from threatintel._version import __version__
from threatintel._visible import visible
from threatintel.indicators import DEFAULT_INTERNAL_DOMAINS
from threatintel.models import (
    Analysis,
    AttackRef,
    Enrichment,
    SourceResult,
    SourceStatus,
    VerdictLabel,
)
from threatintel.reports.audience import for_people, for_sharing, left_out_note

__all__ = [
    "MAX_GRAPH_NODES",
    "build_graph",
    "content_security_policy",
    "json_island",
    "render_html",
]

#: Beyond this the force layout gets slow and the picture unreadable; the page says what it hid.
MAX_GRAPH_NODES = 300

_TEMPLATE = "report.html.j2"
_CSS = "report.css"
_JS = "report.js"

#: Most severe first: the order of cards, chart bars and the verdict sort.
_VERDICT_ORDER: tuple[VerdictLabel, ...] = (
    VerdictLabel.MALICIOUS,
    VerdictLabel.SUSPICIOUS,
    VerdictLabel.UNKNOWN,
    VerdictLabel.HARMLESS,
)
_VERDICT_RANK = {label: len(_VERDICT_ORDER) - i for i, label in enumerate(_VERDICT_ORDER)}
_SKIPPED = frozenset(
    {SourceStatus.NOT_APPLICABLE, SourceStatus.NOT_CONFIGURED, SourceStatus.NOT_QUERIED_PRIVATE}
)
# JSON may carry these only inside strings, where the \u form means the same to JSON.parse;
# in their literal form they could end the <script> element (`</script>`) or open `<!--`.
_JSON_ESCAPES = (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"))
_SAFE_LINK = re.compile(r"https?://[^\s]+\Z", re.IGNORECASE)
_FLAGGED_SHOWN = 8
_CHART_BAR_WIDTH = 200


def render_html(
    analysis: Analysis,
    *,
    generated_at: datetime | None = None,
    include_private: bool = False,
    internal_domains: Sequence[str] = DEFAULT_INTERNAL_DOMAINS,
) -> str:
    """The whole report document; ``generated_at`` defaults to now (tests pin it)."""
    generated = generated_at or datetime.now(UTC)
    shared = for_sharing(
        analysis, include_private=include_private, internal_domains=internal_domains
    )
    analysis = for_people(shared.analysis)
    script = _asset(_JS)
    counts = Counter(e.verdict.label for e in analysis.enrichments)
    rows = [_row(i, e) for i, e in enumerate(analysis.enrichments, start=1)]
    template = _environment().get_template(_TEMPLATE)
    return template.render(
        analysis=analysis,
        version=__version__,
        generated=generated,
        csp=content_security_policy(script),
        css=Markup(_asset(_CSS)),  # our packaged file, checked in _asset, never upstream text
        script=Markup(script),
        data=json_island({"graph": build_graph(analysis)}),
        verdicts=_VERDICT_ORDER,
        counts=counts,
        chart=_chart(counts),
        cache_share=_cache_share(analysis),
        rows=rows,
        indicator_ids={r.enrichment.indicator.value: r.anchor for r in rows},
        left_out=left_out_note(shared.left_out) if shared.left_out else None,
    )


def content_security_policy(script: str) -> str:
    """No network, no plugins, and only the script whose hash we computed may run."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; "
        "img-src data:; "
        "base-uri 'none'; "
        "form-action 'none'"
    )


def json_island(data: Any) -> Markup:
    """JSON that is safe as the text of a ``<script type="application/json">`` element."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    for char, escaped in _JSON_ESCAPES:
        text = text.replace(char, escaped)
    return Markup(text)  # safe: no character that could end the element is left


# --- the table rows ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SourceView:
    result: SourceResult
    state: str  # CSS class: ok | none | skipped | failed
    status: str
    facts: list[tuple[str, str]]
    link: str | None


@dataclass(frozen=True, slots=True)
class _Row:
    anchor: str
    index: int
    enrichment: Enrichment
    rank: int
    search: str
    sources: list[_SourceView]


def _row(index: int, enrichment: Enrichment) -> _Row:
    sources = [_source_view(r) for r in enrichment.sources.values()]
    words = [enrichment.indicator.value, enrichment.indicator.type.value]
    words.append(enrichment.verdict.label.value)
    words += enrichment.inputs
    for result in enrichment.sources.values():
        words += result.tags + result.adversaries + result.malware_families + result.attack_ids
        for pulse in result.pulses:
            words += [pulse.name, pulse.adversary or "", *pulse.malware_families, *pulse.tags]
        if result.geo is not None:
            words += [result.geo.country or "", result.geo.organization or ""]
            words.append(f"as{result.geo.asn}" if result.geo.asn else "")
    return _Row(
        anchor=f"ind-{index}",
        index=index,
        enrichment=enrichment,
        rank=_VERDICT_RANK[enrichment.verdict.label],
        search=" ".join(w for w in words if w).lower(),
        sources=sources,
    )


def _source_view(result: SourceResult) -> _SourceView:
    if result.status.failed:
        state = "failed"
    elif result.status in _SKIPPED:
        state = "skipped"
    else:
        state = "ok" if result.status is SourceStatus.OK else "none"
    # A javascript: or data: "vendor link" would run on click; only web pages are links.
    link = result.link if result.link and _SAFE_LINK.match(result.link) else None
    return _SourceView(result, state, result.status.value.replace("_", " "), _facts(result), link)


def _facts(result: SourceResult) -> list[tuple[str, str]]:
    """The key facts one source gave, as (label, text) pairs; pulses are listed separately."""
    out: list[tuple[str, str]] = []
    d = result.detections
    if d is not None:
        out.append(
            ("detections", f"{d.malicious} malicious, {d.suspicious} suspicious of {d.total}")
        )
        if d.flagged_by:
            more = len(d.flagged_by) - _FLAGGED_SHOWN
            shown = ", ".join(d.flagged_by[:_FLAGGED_SHOWN])
            out.append(("flagged by", shown + (f" and {more} more" if more > 0 else "")))
    if result.reputation is not None:
        out.append(("reputation", str(result.reputation)))
    if result.threat_label:
        out.append(("threat label", result.threat_label))
    if result.pulse_count is not None:
        out.append(("pulses", str(result.pulse_count)))
    for label, values in (
        ("adversaries", result.adversaries),
        ("malware", result.malware_families),
        ("ATT&CK", result.attack_ids),
        ("categories", result.categories),
        ("tags", result.tags),
        ("allowlisted by", result.allowlisted_by),
    ):
        if values:
            out.append((label, ", ".join(values)))
    a = result.abuse
    if a is not None:
        out.append(("abuse confidence", f"{a.confidence}%"))
        out.append(("reports", f"{a.total_reports} from {a.distinct_reporters} reporters"))
        for label, value in (("usage", a.usage_type), ("ISP", a.isp)):
            if value:
                out.append((label, value))
        if a.is_tor:
            out.append(("tor", "exit node"))
        if a.last_reported is not None:
            out.append(("last reported", _format_utc(a.last_reported)))
    g = result.geo
    if g is not None:
        place = ", ".join(p for p in (g.city, g.region, g.country) if p)
        if place:
            out.append(("location", place))
        if g.asn is not None:
            out.append(("ASN", f"AS{g.asn}" + (f" {g.organization}" if g.organization else "")))
        elif g.organization:
            out.append(("organisation", g.organization))
        for label, value in (("network", g.network), ("hostname", g.hostname)):
            if value:
                out.append((label, value))
        if g.anycast:
            out.append(("anycast", "yes"))
    for label, when in (("first seen", result.first_seen), ("last seen", result.last_seen)):
        if when is not None:
            out.append((label, _format_utc(when)))
    return out


def _format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cache_share(analysis: Analysis) -> str:
    answers = [r for e in analysis.enrichments for r in e.sources.values() if r.status.answered]
    if not answers:
        return "no answers"
    cached = sum(r.cached for r in answers)
    return f"{cached}/{len(answers)} answers ({cached * 100 // len(answers)}%)"


@dataclass(frozen=True, slots=True)
class _Bar:
    label: str
    count: int
    width: int
    y: int


def _chart(counts: Counter[VerdictLabel]) -> list[_Bar]:
    """Bars for the server-side SVG chart: it shows even with scripts off."""
    top = max(counts.values(), default=0) or 1
    return [
        _Bar(label.value, counts[label], round(_CHART_BAR_WIDTH * counts[label] / top), 8 + 30 * i)
        for i, label in enumerate(_VERDICT_ORDER)
    ]


# --- the relationship graph ------------------------------------------------------------------


def _indicator_id(value: str) -> str:
    # Exact, not case-folded: "Evil.exe" and "evil.exe" (or two URL paths) are different indicators.
    return f"indicator:{visible(value)}"


class _GraphBuilder:
    """Nodes keyed by kind and a case-folded name, so "Emotet" from two sources is one node.

    Indicators are the exception: they are keyed on their exact value (see ``_indicator_id``).
    Every string is cleaned here because the island goes to the page as data, past the template.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, str]] = {}
        self.edges: set[tuple[str, str]] = set()

    def node(self, kind: str, key: str, label: str, **extra: str) -> str:
        node_id = _indicator_id(key) if kind == "indicator" else f"{kind}:{visible(key).casefold()}"
        clean = {name: visible(value) for name, value in extra.items()}
        self.nodes.setdefault(
            node_id, {"id": node_id, "kind": kind, "label": visible(label), **clean}
        )
        return node_id

    def edge(self, a: str, b: str) -> None:
        if a != b:
            self.edges.add((a, b) if a < b else (b, a))


def build_graph(analysis: Analysis, *, limit: int = MAX_GRAPH_NODES) -> dict[str, Any]:
    """Indicators linked to the ASNs, countries, malware, adversaries and techniques seen.

    Past ``limit`` nodes, indicators are kept first, then attribution groups, then the
    best-connected rest; ``total`` tells the page how many it hid.
    """
    g = _GraphBuilder()
    for i, enrichment in enumerate(analysis.enrichments, start=1):
        value = enrichment.indicator.value
        ind = g.node(
            "indicator",
            value,
            value,
            verdict=enrichment.verdict.label.value,
            anchor=f"ind-{i}",
        )
        for result in enrichment.sources.values():
            if result.status is not SourceStatus.OK:
                continue
            _link_source(g, ind, result)
    if analysis.attribution is not None:
        for candidate in analysis.attribution.groups:
            ref = candidate.group
            group = g.node("group", ref.attack_id, f"{ref.attack_id} {ref.name}")
            names = {visible(n).casefold() for n in (ref.name, *candidate.aliases)}
            for indicator in candidate.indicators:
                if _indicator_id(indicator) in g.nodes:
                    g.edge(group, _indicator_id(indicator))
            for technique in candidate.techniques:
                g.edge(group, g.node("technique", technique.attack_id, _ref_label(technique)))
            for software in candidate.software:
                g.edge(group, g.node("malware", software.name, software.name))
            for node_id, node in list(g.nodes.items()):
                if node["kind"] == "adversary" and node["label"].casefold() in names:
                    g.edge(group, node_id)
    degree: Counter[str] = Counter()
    for a, b in g.edges:
        degree[a] += 1
        degree[b] += 1
    priority = {"indicator": 0, "group": 1}
    ordered = sorted(
        enumerate(g.nodes),
        key=lambda item: (priority.get(g.nodes[item[1]]["kind"], 2), -degree[item[1]], item[0]),
    )
    kept = [node_id for _, node_id in ordered[:limit]]
    index = {node_id: i for i, node_id in enumerate(kept)}
    return {
        "nodes": [g.nodes[node_id] | {"degree": degree[node_id]} for node_id in kept],
        "edges": sorted(
            sorted((index[a], index[b])) for a, b in g.edges if a in index and b in index
        ),
        "total": len(g.nodes),
    }


def _link_source(g: _GraphBuilder, ind: str, result: SourceResult) -> None:
    geo = result.geo
    if geo is not None:
        if geo.asn is not None:
            label = f"AS{geo.asn}" + (f" {geo.organization}" if geo.organization else "")
            g.edge(ind, g.node("asn", str(geo.asn), label))
        if geo.country:
            g.edge(ind, g.node("country", geo.country, geo.country.upper()))
    adversaries = list(result.adversaries)
    malware = list(result.malware_families)
    techniques = list(result.attack_ids)
    for pulse in result.pulses:
        if pulse.adversary:
            adversaries.append(pulse.adversary)
        malware += pulse.malware_families
        techniques += pulse.attack_ids
    for name in adversaries:
        g.edge(ind, g.node("adversary", name, name))
    for name in malware:
        g.edge(ind, g.node("malware", name, name))
    for attack_id in techniques:
        g.edge(ind, g.node("technique", attack_id, attack_id.upper()))


def _ref_label(ref: AttackRef) -> str:
    return f"{ref.attack_id} {ref.name}"


# --- templates ---------------------------------------------------------------------------------


def _read(name: str) -> str:
    return (files("threatintel.reports") / "templates" / name).read_text(encoding="utf-8")


@cache
def _asset(name: str) -> str:
    """A packaged CSS or JS file, refused if it could end the element it is inlined into."""
    text = _read(name)
    if "</" in text or "<!--" in text:
        raise ValueError(f"{name} must not contain '</' or '<!--': it is inlined into the page")
    return text


def _load_template(name: str) -> str | None:
    return _read(name) if name == _TEMPLATE else None


def _finalize(value: object) -> object:
    """What every ``{{ value }}`` prints: upstream strings cleaned, our own Markup untouched."""
    # One place for the whole template, so a field added later cannot be forgotten; Markup is
    # only ever our packaged CSS/JS and the island, which build_graph has cleaned already.
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value, lines=True)
    return value


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FunctionLoader(_load_template),
        autoescape=True,  # the whole point: upstream strings are text, never markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters["utc"] = _format_utc
    return env
