"""What each audience sees: sharing formats leave non-public indicators out, human-facing
formats defang URLs and domains inside upstream text, machine formats keep values exact."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from stix2validator import ValidationOptions, validate_string  # type: ignore[import-untyped]
from typer.testing import CliRunner

from support import sim_env
from threatintel.attribution import attribute
from threatintel.cli import app
from threatintel.indicators import refang
from threatintel.models import (
    AbuseReport,
    Analysis,
    Enrichment,
    Geo,
    Indicator,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)
from threatintel.reports import render
from threatintel.reports.audience import defang_text, for_sharing
from threatintel.simulator import SimulatorServer

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PROVIDERS = ["virustotal", "otx", "abuseipdb", "ipinfo"]
PUBLIC = "45.142.212.61"
#: Non-public by their own value: RFC 1918, an INTERNAL_DOMAINS name, a URL on such a host.
PRIVATE = ["10.0.0.5", "fileserver.corp.local", "http://intranet.corp.local/login"]
#: Internal only because the engine was told so (INTERNAL_DOMAINS=.acme.example).
CUSTOM_INTERNAL = "build.acme.example"
SHARING = ("stix", "misp", "html")

runner = CliRunner()


def _private_sources() -> dict[str, SourceResult]:
    return {
        name: SourceResult(
            source=name,
            status=SourceStatus.NOT_QUERIED_PRIVATE,
            message="not sent to third parties: internal domain (.acme.example)",
        )
        for name in PROVIDERS
    }


def _enrichment(
    kind: IndicatorType,
    value: str,
    sources: dict[str, SourceResult] | None = None,
    reasons: list[str] | None = None,
) -> Enrichment:
    return Enrichment(
        indicator=Indicator(type=kind, value=value),
        sources=sources or {},
        verdict=Verdict(
            label=VerdictLabel.MALICIOUS, score=90, confidence=80, reasons=reasons or ["flagged"]
        ),
    )


def mixed() -> Analysis:
    """One public address, three non-public by value and one by the engine's own decision."""
    return Analysis(
        providers=PROVIDERS,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
        enrichments=[
            _enrichment(IndicatorType.IPV4, PUBLIC),
            _enrichment(IndicatorType.IPV4, PRIVATE[0]),
            _enrichment(IndicatorType.DOMAIN, PRIVATE[1]),
            _enrichment(IndicatorType.URL, PRIVATE[2]),
            _enrichment(IndicatorType.DOMAIN, CUSTOM_INTERNAL, _private_sources()),
        ],
    )


def test_for_sharing_counts_what_it_leaves_out() -> None:
    """Private addresses, internal names, URLs on them and engine-refused names are left out."""
    shared = for_sharing(mixed())
    assert [e.indicator.value for e in shared.analysis.enrichments] == [PUBLIC]
    assert shared.left_out == 4
    everything = for_sharing(mixed(), include_private=True)
    assert everything.left_out == 0 and len(everything.analysis.enrichments) == 5


def test_configured_internal_domains_are_honoured() -> None:
    """A name is internal when the caller's INTERNAL_DOMAINS list says so."""
    analysis = Analysis(
        providers=PROVIDERS,
        enrichments=[_enrichment(IndicatorType.DOMAIN, "wiki.example.net"), mixed().enrichments[0]],
    )
    assert for_sharing(analysis).left_out == 0
    assert for_sharing(analysis, internal_domains=[".example.net"]).left_out == 1


@pytest.mark.parametrize("fmt", SHARING)
def test_sharing_formats_leave_non_public_indicators_out(fmt: str) -> None:
    """STIX, MISP and the HTML briefing hold no non-public value by default and say how many
    they left out; include_private=True puts them back."""
    text = render(mixed(), fmt)
    assert PUBLIC in text
    for value in [*PRIVATE, CUSTOM_INTERNAL, "corp.local"]:
        assert value not in text
    assert "4 non-public indicators were left out" in text
    included = render(mixed(), fmt, include_private=True)
    assert all(value in included for value in [*PRIVATE, CUSTOM_INTERNAL])
    assert "left out" not in included


def test_stix_left_out_note_is_valid() -> None:
    """The STIX bundle stays valid; a note on the threatintel identity carries the count."""
    text = render(mixed(), "stix")
    results = validate_string(text, ValidationOptions(version="2.1"))
    assert results.is_valid, [str(e) for e in results.errors]
    objects = json.loads(text)["objects"]
    note = next(o for o in objects if o["type"] == "note" and "left out" in o["abstract"])
    identity = next(o for o in objects if o["type"] == "identity" and o["name"] == "threatintel")
    assert note["object_refs"] == [identity["id"]]
    assert note["abstract"] == "4 non-public indicators left out"


def test_misp_left_out_comment_and_info() -> None:
    """MISP: the info ends with the count; a comment attribute (not for IDS) explains it."""
    event = json.loads(render(mixed(), "misp"))["Event"]
    assert event["info"].endswith("; 4 non-public left out")
    comment = next(a for a in event["Attribute"] if a["type"] == "comment")
    assert comment["to_ids"] is False and "--include-private" in comment["value"]
    assert [a["value"] for a in event["Attribute"] if a["type"] != "comment"] == [PUBLIC]


def test_html_says_what_it_left_out_visibly() -> None:
    """The briefing shows the count in a visible line of the summary."""
    text = render(mixed(), "html")
    match = re.search(r'<p class="note" id="left-out">([^<]*)</p>', text)
    assert match and match.group(1).startswith("4 non-public indicators were left out")


def test_attribution_follows_the_shared_indicators() -> None:
    """A group only a private indicator points to is not shared with the bundle."""
    apt28 = {
        "otx": SourceResult(
            source="otx",
            status=SourceStatus.OK,
            pulse_count=1,
            pulses=[Pulse(id="p", name="campaign", adversary="APT28")],
            adversaries=["APT28"],
        )
    }
    enrichments = [
        _enrichment(IndicatorType.IPV4, "10.0.0.5", apt28),
        _enrichment(IndicatorType.IPV4, PUBLIC),
    ]
    analysis = Analysis(
        providers=PROVIDERS, enrichments=enrichments, attribution=attribute(enrichments)
    )
    assert analysis.attribution is not None and analysis.attribution.groups
    types = {o["type"] for o in json.loads(render(analysis, "stix"))["objects"]}
    assert "intrusion-set" not in types
    shared = {
        o["type"] for o in json.loads(render(analysis, "stix", include_private=True))["objects"]
    }
    assert "intrusion-set" in shared


@pytest.mark.parametrize("fmt", SHARING)
def test_cli_include_private_flag(sim: SimulatorServer, tmp_path: Path, fmt: str) -> None:
    """`analyze --format stix|misp|html` leaves 10.0.0.5 out; --include-private keeps it."""
    env = sim_env(sim, REPORTS_DIR=str(tmp_path / "reports"))
    args = ["analyze", PUBLIC, "10.0.0.5", "--format", fmt, "-o"]
    shared = runner.invoke(app, [*args, str(tmp_path / "shared")], env=env)
    everything = runner.invoke(app, [*args, str(tmp_path / "all"), "--include-private"], env=env)
    assert shared.exit_code == everything.exit_code == 0, shared.output + everything.output
    assert "10.0.0.5" not in (tmp_path / "shared").read_text(encoding="utf-8")
    assert "10.0.0.5" in (tmp_path / "all").read_text(encoding="utf-8")


# --- defanging upstream text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see http://evil-c2.com/gate.php now", "see hxxp://evil-c2[.]com/gate.php now"),
        ("HTTPS://Evil-C2.com/x", "hxxps://Evil-C2[.]com/x"),
        ("beacon to www.evil-c2.co.uk.", "beacon to www[.]evil-c2[.]co[.]uk."),
        ("(c2: update.evil-c2.net)", "(c2: update[.]evil-c2[.]net)"),
        ("mail billing@evil-c2.com", "mail billing@evil-c2[.]com"),
        ("hxxp://evil-c2[.]com already defanged", "hxxp://evil-c2[.]com already defanged"),
        ("label Phishing.Generic, file invoice.pdf", "label Phishing.Generic, file invoice.pdf"),
        ("9/93 engines; score 0.5 v1.2.3", "9/93 engines; score 0.5 v1.2.3"),
        ("C2 at 45.142.212.61", "C2 at 45.142.212.61"),
    ],
)
def test_defang_text(text: str, expected: str) -> None:
    """URLs, domains and e-mail hosts in free text are defanged; labels, files, IPs are not."""
    assert defang_text(text) == expected
    assert refang(defang_text(text)).casefold() == refang(text).casefold()


LIVE = ["http://evil-c2.com/gate", "evil-c2.com", "drop.evil-c2.net", "scan.evil-c2.org"]


def hostile_upstream() -> Analysis:
    """A public IP whose upstream text names live attacker links everywhere it can."""
    sources = {
        "virustotal": SourceResult(
            source="virustotal",
            status=SourceStatus.OK,
            tags=["evil-c2.com"],
            threat_label="trojan.evil-c2.com",
            link="https://www.virustotal.com/gui/ip-address/45.142.212.61",
        ),
        "otx": SourceResult(
            source="otx",
            status=SourceStatus.OK,
            pulse_count=1,
            pulses=[Pulse(id="p", name="C2 http://evil-c2.com/gate", tags=["drop.evil-c2.net"])],
            malware_families=["loader from drop.evil-c2.net"],
        ),
        "abuseipdb": SourceResult(
            source="abuseipdb",
            status=SourceStatus.OK,
            abuse=AbuseReport(confidence=90, domain="evil-c2.com", isp="evil-c2.com hosting"),
        ),
        "ipinfo": SourceResult(
            source="ipinfo",
            status=SourceStatus.OK,
            geo=Geo(country="NL", asn=1, organization="scan.evil-c2.org", hostname="evil-c2.com"),
        ),
    }
    return Analysis(
        providers=PROVIDERS,
        enrichments=[
            _enrichment(
                IndicatorType.IPV4,
                PUBLIC,
                sources,
                reasons=["in a pulse named 'C2 http://evil-c2.com/gate'", "see drop.evil-c2.net"],
            )
        ],
    )


def live_links(text: str) -> list[str]:
    """The attacker links that a ticket system, spreadsheet or chat would make clickable."""
    return [m.group() for m in re.finditer(r"https?://evil|evil-c2\.(com|net|org)", text)]


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "html"])
def test_human_formats_defang_upstream_text(fmt: str) -> None:
    """Table, Markdown, CSV and HTML show upstream links defanged, never live."""
    text = render(hostile_upstream(), fmt)
    assert not live_links(text), live_links(text)
    assert "evil-c2[.]com" in text.replace("\\[", "[").replace("\\]", "]")


def test_csv_keeps_the_indicator_exact_and_defangs_the_reasons() -> None:
    """CSV: the indicator column stays exact for lookups; upstream text is defanged."""
    (row,) = csv.DictReader(io.StringIO(render(hostile_upstream(), "csv")))
    assert row["indicator"] == PUBLIC
    assert row["reasons"].startswith("in a pulse named 'C2 hxxp://evil-c2[.]com/gate'")
    assert row["organization"] == "scan[.]evil-c2[.]org"


def test_html_keeps_vendor_links_live() -> None:
    """The vendor GUI link is ours, not upstream text: it stays a working href."""
    text = render(hostile_upstream(), "html")
    assert 'href="https://www.virustotal.com/gui/ip-address/45.142.212.61"' in text


@pytest.mark.parametrize("fmt", ["json", "jsonl", "stix", "misp"])
def test_machine_formats_keep_values_exact(fmt: str) -> None:
    """JSON, JSON Lines, STIX and MISP carry upstream values exactly as they came."""
    text = render(hostile_upstream(), fmt)
    assert "[.]" not in text and "hxxp" not in text
    if fmt in ("json", "jsonl", "stix"):
        assert "http://evil-c2.com/gate" in text


def _values(analysis: Analysis) -> Any:
    return json.loads(analysis.model_dump_json())


def test_defanging_does_not_touch_the_analysis() -> None:
    """Rendering for people works on a copy: the caller's analysis is unchanged."""
    analysis = hostile_upstream()
    before = _values(analysis)
    for fmt in ("table", "markdown", "csv", "html"):
        render(analysis, fmt)
    assert _values(analysis) == before
