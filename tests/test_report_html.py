"""The HTML report: structure, a strict CSP, nothing loaded from the network, upstream text escaped.

``sample_analysis()`` is also what the Chromium test (tests/browser/) opens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from threatintel._visible import visible
from threatintel.models import (
    AbuseReport,
    Analysis,
    AttackRef,
    Attribution,
    Detections,
    Enrichment,
    Evidence,
    Geo,
    GroupCandidate,
    Indicator,
    IndicatorType,
    Pulse,
    Rejected,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)
from threatintel.reports import html as html_report
from threatintel.reports.html import build_graph, json_island

#: Attacker-controlled text as it could arrive in pulse names, tags, adversaries and reasons.
HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_IMG = '"><img src=x onerror=alert(1)>'
HOSTILE_CLOSE = "</script><script>alert(2)</script>"
HOSTILE_ISLAND = "</script><!--<script>alert(3)//"
HOSTILE = (HOSTILE_SCRIPT, HOSTILE_IMG, HOSTILE_CLOSE, HOSTILE_ISLAND)
#: Right-to-left override, isolates, a zero-width mark, ESC and a C1 control: unstripped, the RLO
#: shows "build 127" as "build 172" in Chromium.
HOSTILE_BIDI = "build 1\u202e27\u2066\u200f\x1b[0m\x85"
#: What the analyst sees instead: every such character as its escape, order kept.
SHOWN_BIDI = "build 1\\u202e27\\u2066\\u200f\\x1b[0m\\x85"
#: The characters the reports must never pass on (C0 but tab and newline, C1, bidi, zero-width).
UNSAFE_CHARS = (
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n"]
    + [chr(c) for c in range(0x7F, 0xA0)]
    + [chr(c) for c in range(0x200B, 0x2010)]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\ufeff"]
)

GENERATED = datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)


def render_html(analysis: Analysis, **options: Any) -> str:
    # The sample holds documentation ranges and a private address: sharing them is asked for.
    # tests/test_report_audience.py checks what a briefing leaves out by default.
    return html_report.render_html(analysis, include_private=True, **options)


_T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
PROVIDERS = ["virustotal", "otx", "abuseipdb", "ipinfo"]


def _src(source: str, status: SourceStatus = SourceStatus.OK, **fields: object) -> SourceResult:
    link = f"https://{source}.example/gui/{len(fields)}" if status is SourceStatus.OK else None
    values: dict[str, object] = {"link": link, "fetched_at": _T0} | fields
    return SourceResult.model_validate({"source": source, "status": status} | values)


def _enrichment(
    kind: IndicatorType,
    value: str,
    label: VerdictLabel,
    score: int,
    confidence: int,
    reasons: list[str],
    *sources: SourceResult,
) -> Enrichment:
    by_name = {s.source: s for s in sources}
    for name in PROVIDERS:
        by_name.setdefault(name, _src(name, SourceStatus.NOT_APPLICABLE))
    return Enrichment(
        indicator=Indicator(type=kind, value=value),
        inputs=[value],
        sources={name: by_name[name] for name in PROVIDERS},
        verdict=Verdict(label=label, score=score, confidence=confidence, reasons=reasons),
    )


def sample_analysis() -> Analysis:
    """Ten indicators across verdicts and types, pulses, geo, failures and one attributed group."""
    c2_pulse = Pulse(
        id="p1",
        name=HOSTILE_SCRIPT,
        adversary="APT28",
        malware_families=["CHOPSTICK", HOSTILE_ISLAND, HOSTILE_BIDI],
        attack_ids=["T1071.001", "T1090"],
        tags=["c2", HOSTILE_CLOSE, HOSTILE_BIDI],
        tlp="white",
    )
    phish_pulse = Pulse(
        id="p2",
        name=HOSTILE_IMG,
        adversary=HOSTILE_IMG,
        malware_families=["CHOPSTICK"],
        attack_ids=["T1566.002"],
        tags=["phishing"],
    )
    enrichments = [
        _enrichment(
            IndicatorType.IPV4,
            "185.220.101.4",
            VerdictLabel.MALICIOUS,
            92,
            88,
            [f"OTX: in pulse {HOSTILE_SCRIPT}", "VirusTotal: 12/90 engines flag it"],
            _src(
                "virustotal",
                detections=Detections(malicious=12, suspicious=1, undetected=77, total=90),
            ),
            _src("otx", pulse_count=2, pulses=[c2_pulse, phish_pulse]),
            _src(
                "abuseipdb",
                abuse=AbuseReport(confidence=100, total_reports=845, distinct_reporters=97),
            ),
            _src("ipinfo", geo=Geo(country="DE", asn=205100, organization="F3 Netze e.V.")),
        ),
        _enrichment(
            IndicatorType.DOMAIN,
            "evil-updates.example.com",
            VerdictLabel.MALICIOUS,
            85,
            70,
            [f"adversary named upstream: {HOSTILE_IMG}"],
            _src("virustotal", detections=Detections(malicious=8, total=93), link="javascript:x"),
            _src("otx", pulse_count=1, pulses=[phish_pulse]),
        ),
        _enrichment(
            IndicatorType.URL,
            "http://evil-updates.example.com/payload.bin",
            VerdictLabel.SUSPICIOUS,
            55,
            60,
            ["VirusTotal: 2/90 engines flag it"],
            _src("virustotal", detections=Detections(malicious=2, total=90)),
            _src("otx", SourceStatus.NOT_FOUND),
        ),
        _enrichment(
            IndicatorType.MD5,
            "44d88612fea8a8f36de82e1278abb02f",
            VerdictLabel.MALICIOUS,
            98,
            90,
            ["VirusTotal: 60/72 engines flag it"],
            _src(
                "virustotal",
                detections=Detections(malicious=60, total=72, flagged_by=["ESET", "Kaspersky"]),
                threat_label="trojan.eicar/test",
            ),
        ),
        _enrichment(
            IndicatorType.IPV4,
            "8.8.8.8",
            VerdictLabel.HARMLESS,
            3,
            80,
            ["on an allowlist: Google Public DNS"],
            _src("virustotal", detections=Detections(harmless=70, total=90)),
            _src("abuseipdb", abuse=AbuseReport(confidence=0)),
            _src("ipinfo", geo=Geo(country="US", asn=15169, organization="Google LLC")),
        ),
        _enrichment(
            IndicatorType.DOMAIN,
            "example.org",
            VerdictLabel.HARMLESS,
            10,
            50,
            ["no source reports it"],
            _src("virustotal", detections=Detections(harmless=60, total=90)),
            _src("otx", SourceStatus.NOT_FOUND),
        ),
        _enrichment(
            IndicatorType.IPV4,
            "203.0.113.50",
            VerdictLabel.SUSPICIOUS,
            48,
            40,
            ["AbuseIPDB: confidence 45%", "OTX: rate limited"],
            _src("otx", SourceStatus.RATE_LIMITED, message=f"429 from OTX {HOSTILE_IMG}"),
            _src("abuseipdb", abuse=AbuseReport(confidence=45, total_reports=12)),
            _src("ipinfo", geo=Geo(country="NL", asn=14061, organization="DigitalOcean, LLC")),
        ),
        _enrichment(
            IndicatorType.IPV6,
            "2001:db8::1",
            VerdictLabel.UNKNOWN,
            20,
            10,
            ["VirusTotal: timed out"],
            _src("virustotal", SourceStatus.TIMEOUT, message="no answer in 10 s"),
            _src("ipinfo", SourceStatus.NOT_FOUND),
        ),
        _enrichment(
            IndicatorType.SHA256,
            "a" * 64,
            VerdictLabel.UNKNOWN,
            25,
            5,
            ["OTX: daily quota exhausted"],
            _src("virustotal", SourceStatus.NOT_FOUND),
            _src("otx", SourceStatus.QUOTA_EXHAUSTED, message="quota resets at midnight UTC"),
        ),
        _enrichment(
            IndicatorType.IPV4,
            "10.0.0.5",
            VerdictLabel.UNKNOWN,
            0,
            0,
            ["private address: not sent to any source"],
            *(_src(n, SourceStatus.NOT_QUERIED_PRIVATE) for n in PROVIDERS),
        ),
    ]
    apt28 = GroupCandidate(
        group=AttackRef(attack_id="G0007", name="APT28"),
        aliases=["Fancy Bear", "Sofacy"],
        confidence=72,
        reasons=["2 indicators in pulses naming APT28", f"pulse {HOSTILE_SCRIPT}"],
        indicators=["185.220.101.4", "evil-updates.example.com"],
        evidence=[
            Evidence(
                indicator="185.220.101.4",
                source="otx",
                kind="adversary",
                value="APT28",
                detail=HOSTILE_SCRIPT,
            ),
            Evidence(
                indicator="evil-updates.example.com",
                source="otx",
                kind="malware_family",
                value="CHOPSTICK",
                detail=HOSTILE_IMG,
            ),
        ],
        software=[AttackRef(attack_id="S0023", name="CHOPSTICK")],
        techniques=[AttackRef(attack_id="T1071.001", name="Web Protocols")],
    )
    return Analysis(
        enrichments=enrichments,
        rejected=[
            Rejected(candidate="1.2.3", reason="not a complete IPv4 address"),
            Rejected(candidate=HOSTILE_CLOSE, reason="not an indicator"),
        ],
        providers=PROVIDERS,
        attribution=Attribution(
            attack_version="18.1",
            summary="One group is supported by the evidence.",
            groups=[apt28],
            software=apt28.software,
            techniques=apt28.techniques,
            unmatched=[HOSTILE_IMG],
        ),
        started_at=_T0,
        finished_at=_T0 + timedelta(seconds=3.25),
    )


class _Page(HTMLParser):
    """Every start tag with its attributes, the visible text, and each script's content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self._in_script: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "script":
            self._in_script = values
            self.scripts.append((values, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture(scope="module")
def html() -> str:
    """The sample report, rendered once for the module."""
    return render_html(sample_analysis(), generated_at=GENERATED)


@pytest.fixture(scope="module")
def page(html: str) -> _Page:
    """The sample report, parsed."""
    return _parse(html)


def _ids(page: _Page) -> set[str]:
    return {attrs["id"] for _, attrs in page.tags if "id" in attrs}


def test_report_has_every_section(page: _Page) -> None:
    """Header, cards, chart, controls, table, attribution, graph and skipped list are all there."""
    assert {
        "theme-toggle",
        "summary",
        "indicators",
        "filter",
        "verdict-filter",
        "indicator-table",
        "attribution",
        "graph",
        "graph-svg",
        "rejected",
        "data",
    } <= _ids(page)
    rows = [a for t, a in page.tags if t == "tbody" and "ind" in a.get("class", "").split()]
    assert len(rows) == 10
    sortable = {a["data-sort"] for t, a in page.tags if t == "button" and "data-sort" in a}
    assert sortable == {"indicator", "type", "verdict", "score", "confidence"}
    bars = [a for t, a in page.tags if t == "rect" and "bar" in a.get("class", "")]
    assert len(bars) == 4
    text = " ".join(page.text)
    for expected in ("2026-11-26 12:00:05 UTC", "3.25 s", "virustotal, otx, abuseipdb, ipinfo"):
        assert expected in text
    assert "APT28" in text and "72% confidence" in text and "F3 Netze e.V." in text


def test_cards_count_each_verdict(page: _Page, html: str) -> None:
    """Each verdict card shows how many indicators got that verdict."""
    cards = re.findall(
        r'data-verdict="(\w*)">\s*<span class="n">(\d+)</span>', html, flags=re.MULTILINE
    )
    assert dict(cards) == {"": "10", "malicious": "3", "suspicious": "2", "unknown": "3"} | {
        "harmless": "2"
    }


def test_csp_allows_only_the_report_script_and_no_network(page: _Page, html: str) -> None:
    """The CSP meta comes first, forbids every fetch, and lets only our script run, by hash."""
    metas = [a for t, a in page.tags if t == "meta"]
    assert metas[0] == {"charset": "utf-8"}
    csp = metas[1]
    assert csp["http-equiv"] == "Content-Security-Policy"
    policy = dict(d.strip().split(" ", 1) for d in csp["content"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["img-src"] == "data:"
    (code,) = [text for attrs, text in page.scripts if "type" not in attrs]
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"
    assert "unsafe" not in policy["script-src"]


def test_nothing_is_loaded_from_anywhere(page: _Page) -> None:
    """No element fetches anything; the only remote URLs are plain vendor links for a human."""
    fetching = ("src", "srcset", "data", "poster", "background", "action", "formaction")
    for tag, attrs in page.tags:
        for name in fetching:
            assert name not in attrs or attrs[name].startswith("data:"), (tag, attrs)
        if tag == "link":
            assert attrs["href"].startswith("data:"), attrs
        if tag == "a":
            href = attrs["href"]
            assert href.startswith(("#", "https://")), attrs
            if href.startswith("https://"):
                assert attrs["rel"] == "noopener noreferrer"
        assert tag not in {"iframe", "object", "embed", "img", "base", "form", "audio", "video"}
    for attrs, code in page.scripts:
        assert "src" not in attrs
        assert not re.search(r"\b(fetch|XMLHttpRequest|WebSocket|EventSource|import)\s*\(", code)
    (css,) = [d for d in page.text if "--bg:" in d]
    assert "url(" not in css and "@import" not in css


def test_hostile_strings_never_appear_as_markup(html: str, page: _Page) -> None:
    """Attacker text never reaches the source raw, so it adds no tags, handlers or scripts."""
    for hostile in HOSTILE:
        assert hostile not in html
    assert "<img" not in html and "alert(" not in "".join(t for _, t in page.scripts[1:])
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert not any("javascript:" in value.lower() for value in attrs.values()), (tag, attrs)


def test_hostile_strings_show_as_text(page: _Page) -> None:
    """The same strings are still there for the analyst to read, as literal text."""
    text = "".join(page.text)
    for hostile in (HOSTILE_SCRIPT, HOSTILE_IMG, HOSTILE_CLOSE):
        assert hostile in text


def test_data_island_cannot_be_broken_out_of(page: _Page) -> None:
    """The JSON island holds no raw `<`, `>` or `&`, yet parses back to the hostile labels."""
    island = next(text for attrs, text in page.scripts if attrs.get("id") == "data")
    assert not set("<>&") & set(island)
    labels = {node["label"] for node in json.loads(island)["graph"]["nodes"]}
    assert {HOSTILE_ISLAND, HOSTILE_IMG} <= labels


def test_json_island_escapes_every_element_ending_character() -> None:
    """`</script>`, `<!--` and `&` are written as \\u escapes that JSON reads back unchanged."""
    value = {"a": "</script><!--&-->", "b": ["\u2028", "é"]}
    island = str(json_island(value))
    assert island.isascii() and not set("<>&") & set(island)
    assert json.loads(island) == value


def test_only_web_vendor_links_become_links(html: str) -> None:
    """A `javascript:` vendor link is dropped; https ones open without a referrer."""
    assert "javascript:x" not in html
    link = 'href="https://virustotal.example/gui/1" target="_blank" rel="noopener noreferrer"'
    assert link in html


def test_source_facts_and_failures_are_shown(page: _Page) -> None:
    """Per-source status, the safe message and key facts (detections, abuse, geo) are listed."""
    text = " ".join(" ".join(page.text).split())
    for expected in (
        "rate limited",
        "quota exhausted",
        "quota resets at midnight UTC",
        "12 malicious, 1 suspicious of 90",
        "845 from 97 reporters",
        "AS205100 F3 Netze e.V.",
        "ESET, Kaspersky",
        "T1071.001, T1090",
        "not a complete IPv4 address",
    ):
        assert expected in text, expected


def test_attribution_states_insufficient_evidence_or_absence() -> None:
    """No groups says "Insufficient evidence"; no attribution at all says it was not computed."""
    base = sample_analysis()
    empty = Attribution(attack_version="18.1", summary="insufficient evidence")
    insufficient = render_html(base.model_copy(update={"attribution": empty}))
    assert "Insufficient evidence" in insufficient
    absent = render_html(base.model_copy(update={"attribution": None}))
    assert "Attribution was not computed" in absent


def test_empty_analysis_renders() -> None:
    """An analysis with nothing in it is still a valid page with an empty graph."""
    html = render_html(Analysis())
    assert "No indicators were analysed." in html and "Nothing was skipped." in html
    page = _parse(html)
    island = next(text for attrs, text in page.scripts if attrs.get("id") == "data")
    assert json.loads(island) == {"graph": {"nodes": [], "edges": [], "total": 0}}


def test_graph_links_indicators_to_what_sources_say() -> None:
    """The first indicator reaches its ASN, country, malware, adversary, techniques and group."""
    graph = build_graph(sample_analysis())
    ids = [n["id"] for n in graph["nodes"]]
    first = ids.index("indicator:185.220.101.4")
    linked = {ids[b] for a, b in graph["edges"] if a == first} | {
        ids[a] for a, b in graph["edges"] if b == first
    }
    assert {
        "asn:205100",
        "country:de",
        "malware:chopstick",
        "adversary:apt28",
        "technique:t1071.001",
        "technique:t1090",
        "group:g0007",
    } <= linked
    group = ids.index("group:g0007")
    assert sorted([group, ids.index("adversary:apt28")]) in graph["edges"]


def test_graph_is_capped_indicators_first() -> None:
    """Past the limit the graph keeps indicators first and says how many nodes it had."""
    graph = build_graph(sample_analysis(), limit=12)
    kinds = [n["kind"] for n in graph["nodes"]]
    assert len(kinds) == 12 and kinds[:10] == ["indicator"] * 10 and kinds[10] == "group"
    assert graph["total"] > 12
    assert all(0 <= a < 12 and 0 <= b < 12 for a, b in graph["edges"])


def test_page_text_shows_controls_bidi_and_zero_width_as_escapes() -> None:
    """Every unsafe character becomes its escape; tab, newline and ordinary text are kept."""
    shown = visible("".join(UNSAFE_CHARS), lines=True)
    assert not set(UNSAFE_CHARS) & set(shown)
    assert shown.count("\\") == len(UNSAFE_CHARS)
    assert visible("a\tb\nc é ש", lines=True) == "a\tb\nc é ש"


def test_bidi_and_control_characters_never_reach_the_page(html: str, page: _Page) -> None:
    """Neither the markup nor the JSON island carries them; the text shows in logical order."""
    assert not set(UNSAFE_CHARS) & set(html)
    assert SHOWN_BIDI in page.text
    island = next(text for attrs, text in page.scripts if attrs.get("id") == "data")
    labels = [node["label"] for node in json.loads(island)["graph"]["nodes"]]
    assert SHOWN_BIDI in labels
    assert not set(UNSAFE_CHARS) & set("".join(labels))


def test_upstream_text_is_bidi_isolated(html: str) -> None:
    """Inline upstream values sit in elements the stylesheet isolates, or in <bdi>."""
    assert re.search(r"code, b, bdi, \.tag, \.pulse-name[^{]*\{ unicode-bidi: isolate; \}", html)
    assert '<span class="tag">' + SHOWN_BIDI + "</span>" in html
    assert "Also known as <bdi>Fancy Bear</bdi>, <bdi>Sofacy</bdi>" in html


def test_graph_keeps_indicators_that_differ_only_in_case() -> None:
    """Two URLs differing only in case are two nodes, each linked to its own attributed group."""
    base = sample_analysis()
    upper, lower = "http://evil.example/Payload", "http://evil.example/payload"
    urls = [
        _enrichment(IndicatorType.URL, value, VerdictLabel.SUSPICIOUS, 50, 50, [])
        for value in (upper, lower)
    ]
    assert base.attribution is not None
    group = base.attribution.groups[0].model_copy(update={"indicators": [upper]})
    attribution = base.attribution.model_copy(update={"groups": [group]})
    analysis = base.model_copy(update={"enrichments": urls, "attribution": attribution})
    graph = build_graph(analysis)
    ids = [n["id"] for n in graph["nodes"]]
    assert ids.count(f"indicator:{upper}") == 1 and ids.count(f"indicator:{lower}") == 1
    labels = {n["label"] for n in graph["nodes"] if n["kind"] == "indicator"}
    assert labels == {upper, lower}
    edge = sorted([ids.index("group:g0007"), ids.index(f"indicator:{upper}")])
    assert edge in graph["edges"]
    assert sorted([ids.index("group:g0007"), ids.index(f"indicator:{lower}")]) not in graph["edges"]
