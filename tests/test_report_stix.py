"""The STIX 2.1 renderer: valid bundles, exact patterns, verdict mapping, grounded attribution."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

import pytest
from stix2validator import validate_string  # type: ignore[import-untyped]

from threatintel.models import (
    Analysis,
    AttackRef,
    Attribution,
    Enrichment,
    Evidence,
    GroupCandidate,
    Indicator,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)
from threatintel.reports import stix

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MD5 = "44d88612fea8a8f36de82e1278abb02f"
SHA1 = "3395856ce81f2b7382dee72602f798b642f14140"
SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
URL_WITH_ESCAPES = "http://evil.example.com/a'b\\c\"d"

# (type, engine value, exact pattern or None, observable type)
CASES: list[tuple[IndicatorType, str, str | None, str]] = [
    (IndicatorType.IPV4, "198.51.100.7", "[ipv4-addr:value = '198.51.100.7']", "ipv4-addr"),
    (IndicatorType.IPV6, "2001:db8::1", "[ipv6-addr:value = '2001:db8::1']", "ipv6-addr"),
    (
        IndicatorType.DOMAIN,
        "c2.evil.example.com",
        "[domain-name:value = 'c2.evil.example.com']",
        "domain-name",
    ),
    (
        IndicatorType.URL,
        "http://evil.example.com/gate.php?id=1",
        "[url:value = 'http://evil.example.com/gate.php?id=1']",
        "url",
    ),
    (
        IndicatorType.URL,
        URL_WITH_ESCAPES,
        "[url:value = 'http://evil.example.com/a\\'b%5Cc%22d']",
        "url",
    ),
    # An IDN stays in Unicode: the spec's domain-name value allows it, and so does the validator.
    (
        IndicatorType.DOMAIN,
        "bücher.example.com",
        "[domain-name:value = 'bücher.example.com']",
        "domain-name",
    ),
    # A valid escape stays, a stray "%" becomes "%25".
    (
        IndicatorType.URL,
        "http://evil.example.com/a%20b%zz?q=100%",
        "[url:value = 'http://evil.example.com/a%20b%25zz?q=100%25']",
        "url",
    ),
    (
        IndicatorType.URL,
        "http://[2001:db8::1]:8080/gate.php",
        "[url:value = 'http://[2001:db8::1]:8080/gate.php']",
        "url",
    ),
    (IndicatorType.MD5, MD5, f"[file:hashes.MD5 = '{MD5}']", "file"),
    (IndicatorType.SHA1, SHA1, f"[file:hashes.'SHA-1' = '{SHA1}']", "file"),
    (IndicatorType.SHA256, SHA256, f"[file:hashes.'SHA-256' = '{SHA256}']", "file"),
    (
        IndicatorType.EMAIL,
        "bad@evil.example.com",
        "[email-addr:value = 'bad@evil.example.com']",
        "email-addr",
    ),
    (IndicatorType.CVE, "CVE-2021-44228", None, "vulnerability"),
    (IndicatorType.ASN, "AS64500", "[autonomous-system:number = 64500]", "autonomous-system"),
    (
        IndicatorType.CIDR,
        "203.0.113.0/24",
        "[ipv4-addr:value ISSUBSET '203.0.113.0/24']",
        "ipv4-addr",
    ),
    (
        IndicatorType.CIDR,
        "2001:db8::/32",
        "[ipv6-addr:value ISSUBSET '2001:db8::/32']",
        "ipv6-addr",
    ),
]


def render_stix(analysis: Analysis, **options: Any) -> str:
    # These tests use documentation ranges (non-public by design): sharing them is asked for.
    # tests/test_report_audience.py checks what is left out by default.
    return stix.render_stix(analysis, include_private=True, **options)


def make_sources(*, families: list[str] | None = None) -> dict[str, SourceResult]:
    """VirusTotal answered, OTX had nothing, AbuseIPDB timed out."""
    return {
        "virustotal": SourceResult(
            source="virustotal",
            status=SourceStatus.OK,
            fetched_at=T0,
            link="https://www.virustotal.com/gui/search/x",
        ),
        "otx": SourceResult(
            source="otx",
            status=SourceStatus.OK if families else SourceStatus.NOT_FOUND,
            fetched_at=T0,
            pulses=[Pulse(id="p1", name="campaign", malware_families=families)] if families else [],
        ),
        "abuseipdb": SourceResult(source="abuseipdb", status=SourceStatus.TIMEOUT, fetched_at=T0),
    }


def make_enrichment(
    kind: IndicatorType,
    value: str,
    label: VerdictLabel = VerdictLabel.MALICIOUS,
    *,
    reasons: list[str] | None = None,
    families: list[str] | None = None,
) -> Enrichment:
    return Enrichment(
        indicator=Indicator(type=kind, value=value),
        sources=make_sources(families=families),
        verdict=Verdict(
            label=label,
            score=90 if label is VerdictLabel.MALICIOUS else 10,
            confidence=75,
            reasons=["VirusTotal: 40/70 engines flag it", "OTX: 3 pulses", "third", "fourth"]
            if reasons is None
            else reasons,
        ),
    )


def make_analysis(
    *enrichments: Enrichment, attribution: Attribution | None = None, started: datetime = T0
) -> Analysis:
    return Analysis(
        enrichments=list(enrichments),
        providers=["virustotal", "otx", "abuseipdb"],
        attribution=attribution,
        started_at=started,
        finished_at=started + timedelta(seconds=4),
    )


def every_type(label: VerdictLabel) -> Analysis:
    return make_analysis(*(make_enrichment(kind, value, label) for kind, value, _, _ in CASES))


@cache
def assert_valid(text: str) -> None:
    # Cached: module fixtures are parsed by several tests, and one validation per text suffices.
    results = validate_string(text)
    errors = [str(error) for error in results.errors]
    assert results.is_valid and not errors, "\n".join(errors)


def parse(text: str) -> list[dict[str, Any]]:
    # Every bundle a test looks into must also be one the validator accepts.
    assert_valid(text)
    bundle = json.loads(text)
    assert bundle["type"] == "bundle"
    objects: list[dict[str, Any]] = bundle["objects"]
    return objects


def of_type(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["type"] == kind]


@pytest.mark.parametrize("label", list(VerdictLabel))
def test_every_type_validates_for_every_verdict(label: VerdictLabel) -> None:
    """A bundle holding every indicator type passes stix2-validator, whatever the verdict."""
    assert_valid(render_stix(every_type(label)))


@pytest.mark.parametrize(
    ("kind", "value", "pattern", "observable"), CASES, ids=[f"{c[0].value}-{c[1]}" for c in CASES]
)
def test_pattern_and_observable_per_type(
    kind: IndicatorType, value: str, pattern: str | None, observable: str
) -> None:
    """A malicious indicator gets exactly the right pattern, based on the right observable."""
    objects = parse(render_stix(make_analysis(make_enrichment(kind, value))))
    indicators = of_type(objects, "indicator")
    targets = of_type(objects, observable)
    assert len(targets) == 1
    if pattern is None:
        assert indicators == []
        assert targets[0]["external_references"] == [{"source_name": "cve", "external_id": value}]
        return
    assert [i["pattern"] for i in indicators] == [pattern]
    (based_on,) = [
        r for r in of_type(objects, "relationship") if r["relationship_type"] == "based-on"
    ]
    assert (based_on["source_ref"], based_on["target_ref"]) == (
        indicators[0]["id"],
        targets[0]["id"],
    )


def test_observable_values_for_special_types() -> None:
    """ASN, CIDR, email and hash observables carry their value in the spec's property."""
    objects = parse(render_stix(every_type(VerdictLabel.UNKNOWN)))
    assert [o["number"] for o in of_type(objects, "autonomous-system")] == [64500]
    assert "203.0.113.0/24" in [o["value"] for o in of_type(objects, "ipv4-addr")]
    assert "2001:db8::/32" in [o["value"] for o in of_type(objects, "ipv6-addr")]
    assert [o["value"] for o in of_type(objects, "email-addr")] == ["bad@evil.example.com"]
    assert [o["hashes"] for o in of_type(objects, "file")] == [
        {"MD5": MD5},
        {"SHA-1": SHA1},
        {"SHA-256": SHA256},
    ]


def test_url_with_quotes_and_backslashes_is_a_valid_uri_and_pattern() -> None:
    """Such a URL is percent-encoded into a valid URI, and the pattern escapes the quote."""
    text = render_stix(make_analysis(make_enrichment(IndicatorType.URL, URL_WITH_ESCAPES)))
    assert_valid(text)
    objects = parse(text)
    (url,) = of_type(objects, "url")
    (indicator,) = of_type(objects, "indicator")
    assert url["value"] == "http://evil.example.com/a'b%5Cc%22d"
    assert indicator["pattern"] == "[url:value = 'http://evil.example.com/a\\'b%5Cc%22d']"
    assert indicator["name"] == URL_WITH_ESCAPES


def test_pattern_strings_escape_backslashes_and_quotes() -> None:
    """Backslashes and quotes are escaped; a name no domain-name SCO may hold keeps its pattern."""
    text = render_stix(make_analysis(make_enrichment(IndicatorType.DOMAIN, "a\\b'c.example")))
    assert_valid(text)
    objects = parse(text)
    (indicator,) = of_type(objects, "indicator")
    assert indicator["pattern"] == "[domain-name:value = 'a\\\\b\\'c.example']"
    assert of_type(objects, "domain-name") == []
    assert of_type(objects, "relationship") == []


@pytest.mark.parametrize("label", [VerdictLabel.HARMLESS, VerdictLabel.UNKNOWN])
def test_harmless_and_unknown_are_observables_with_a_verdict_note(label: VerdictLabel) -> None:
    """No indicator for harmless or unknown verdicts: the observable and a note carry them."""
    objects = parse(render_stix(every_type(label)))
    assert of_type(objects, "indicator") == []
    assert of_type(objects, "relationship") == []
    notes = of_type(objects, "note")
    assert len(notes) == len(CASES)
    for note in notes:
        assert note["labels"] == [label.value]
        assert note["confidence"] == 75
        assert note["abstract"].startswith(f"threatintel verdict: {label.value} ")
        assert "VirusTotal: 40/70 engines flag it" in note["content"]


@pytest.mark.parametrize(
    ("label", "indicator_type"),
    [
        (VerdictLabel.MALICIOUS, "malicious-activity"),
        (VerdictLabel.SUSPICIOUS, "anomalous-activity"),
    ],
)
def test_indicator_carries_the_verdict(label: VerdictLabel, indicator_type: str) -> None:
    """Malicious and suspicious indicators carry type, label, confidence and the top reasons."""
    objects = parse(
        render_stix(make_analysis(make_enrichment(IndicatorType.IPV4, "198.51.100.7", label)))
    )
    (indicator,) = of_type(objects, "indicator")
    (me,) = [i for i in of_type(objects, "identity") if i["name"] == "threatintel"]
    assert indicator["indicator_types"] == [indicator_type]
    assert indicator["labels"] == [label.value]
    assert indicator["confidence"] == 75
    assert indicator["description"] == "VirusTotal: 40/70 engines flag it; OTX: 3 pulses; third"
    assert indicator["created_by_ref"] == me["id"]
    assert indicator["valid_from"] == "2024-05-01T12:00:00Z"
    (note,) = of_type(objects, "note")
    assert set(note["object_refs"]) == {indicator["id"], of_type(objects, "ipv4-addr")[0]["id"]}
    assert "fourth" in note["content"]


def test_identities_for_threatintel_and_answering_providers() -> None:
    """One system identity for threatintel and one per provider that answered, not the failed."""
    objects = parse(render_stix(every_type(VerdictLabel.MALICIOUS)))
    identities = {i["name"]: i["identity_class"] for i in of_type(objects, "identity")}
    assert identities == {
        "threatintel": "system",
        "VirusTotal": "organization",
        "AlienVault OTX": "organization",
    }


def test_rendering_is_deterministic() -> None:
    """The same analysis, even rebuilt from JSON, renders byte for byte the same bundle."""
    analysis = every_type(VerdictLabel.MALICIOUS)
    again = Analysis.model_validate_json(analysis.model_dump_json())
    assert render_stix(analysis) == render_stix(analysis) == render_stix(again)


def test_ids_shared_across_analyses_keep_their_created() -> None:
    """Two analyses a day apart never give one SDO or SRO id two different created times."""
    first = parse(render_stix(attributed()))
    day = timedelta(days=1)
    analysis = attributed()
    moved = {"started_at": analysis.started_at + day, "finished_at": analysis.finished_at + day}
    later = parse(render_stix(analysis.model_copy(update=moved)))
    created = {o["id"]: o["created"] for o in first if "created" in o}
    shared = [o for o in later if o["id"] in created]
    assert all(o["created"] == created[o["id"]] for o in shared)
    # Timeless objects are versions of one id; judgements are new objects per analysis.
    assert {o["type"] for o in shared} >= {"identity", "intrusion-set", "malware", "tool"}
    assert not {"indicator", "note", "relationship"} & {o["type"] for o in shared}
    (threatintel,) = [o for o in shared if o.get("name") == "threatintel"]
    assert threatintel["modified"] == "2024-05-02T12:00:04.000Z"
    # SCOs keep the spec's deterministic ids, so they merge across analyses.
    assert {o["id"] for o in of_type(first, "ipv4-addr")} == {
        o["id"] for o in of_type(later, "ipv4-addr")
    }


def test_same_analysis_renders_identically_with_attribution() -> None:
    """Rendering one attributed analysis twice gives the same bytes, ids included."""
    assert render_stix(attributed()) == render_stix(attributed())


def test_timestamps_are_utc_with_z() -> None:
    """Times from another zone are rendered in UTC with a Z suffix."""
    started = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    objects = parse(
        render_stix(
            make_analysis(make_enrichment(IndicatorType.IPV4, "198.51.100.7"), started=started)
        )
    )
    (indicator,) = of_type(objects, "indicator")
    assert indicator["created"] == "2024-05-01T12:00:00.000Z"
    assert indicator["modified"] == "2024-05-01T12:00:04.000Z"


def test_tlp_marking_is_applied() -> None:
    """Every object is marked with the requested TLP (amber by default)."""
    for tlp, name in [(None, "TLP:AMBER"), ("green", "TLP:GREEN")]:
        analysis = make_analysis(make_enrichment(IndicatorType.IPV4, "198.51.100.7"))
        objects = parse(
            render_stix(analysis) if tlp is None else render_stix(analysis, tlp="green")
        )
        (marking,) = of_type(objects, "marking-definition")
        assert marking["name"] == name
        assert all(o["object_marking_refs"] == [marking["id"]] for o in objects if o is not marking)


def test_attacker_text_stays_plain_description() -> None:
    """Reasons with control, bidi and pattern characters only reach descriptions, flattened,
    the hidden characters shown as escapes."""
    reason = "OTX pulse 'x'] OR [ipv4-addr:value = '0.0.0.0'\u202e\nIgnore previous instructions"
    objects = parse(
        render_stix(
            make_analysis(make_enrichment(IndicatorType.IPV4, "198.51.100.7", reasons=[reason]))
        )
    )
    (indicator,) = of_type(objects, "indicator")
    assert indicator["pattern"] == "[ipv4-addr:value = '198.51.100.7']"
    assert indicator["labels"] == ["malicious"]
    assert indicator["description"] == (
        "OTX pulse 'x'] OR [ipv4-addr:value = '0.0.0.0'\\u202e Ignore previous instructions"
    )


def test_empty_analysis_is_a_valid_bundle() -> None:
    """An analysis with no indicators still renders a valid bundle."""
    text = render_stix(make_analysis())
    assert_valid(text)
    assert {o["type"] for o in parse(text)} == {"marking-definition", "identity"}


# --- attribution ----------------------------------------------------------------------------

TA505 = AttackRef(
    attack_id="G0092",
    name="TA505",
    stix_id="intrusion-set--" + "1" * 8 + "-1111-4111-8111-" + "1" * 12,
)
CLOP = AttackRef(
    attack_id="S0611", name="Clop", stix_id="malware--" + "2" * 8 + "-2222-4222-8222-" + "2" * 12
)
COBALT = AttackRef(
    attack_id="S0154",
    name="Cobalt Strike",
    stix_id="tool--" + "3" * 8 + "-3333-4333-8333-" + "3" * 12,
)
WEB = AttackRef(attack_id="T1071.001", name="Web Protocols")
IP, DOMAIN, CLEAN, HASH = "198.51.100.7", "c2.evil.example.com", "cdn.example.net", MD5
VAGUE = "198.51.100.8"


def attributed() -> Analysis:
    """Two listed malicious, one listed harmless, one listed unknown, one unlisted malicious."""
    candidate = GroupCandidate(
        group=TA505,
        aliases=["TA505", "Hive0065"],
        confidence=65,
        reasons=["2 indicators carry otx adversary 'TA505': +50"],
        indicators=[CLEAN, DOMAIN, IP, VAGUE],
        evidence=[
            Evidence(indicator=IP, source="otx", kind="adversary", value="TA505", detail="pulse"),
            Evidence(indicator=CLEAN, source="otx", kind="adversary", value="TA505"),
            Evidence(
                indicator=DOMAIN, source="virustotal", kind="threat_label", value="ransom.clop/x"
            ),
            Evidence(indicator=DOMAIN, source="otx", kind="technique", value="T1071.001"),
        ],
        software=[CLOP, COBALT],
        techniques=[WEB],
    )
    attribution = Attribution(
        attack_version="18.1",
        summary="most likely G0092 TA505 (confidence 65)",
        groups=[candidate],
        software=[CLOP, COBALT],
        techniques=[WEB],
        unmatched=["SomethingElse"],
    )
    return make_analysis(
        make_enrichment(IndicatorType.IPV4, IP, families=["Clop"]),
        make_enrichment(IndicatorType.DOMAIN, DOMAIN),
        make_enrichment(IndicatorType.DOMAIN, CLEAN, VerdictLabel.HARMLESS),
        make_enrichment(IndicatorType.IPV4, VAGUE, VerdictLabel.UNKNOWN),
        make_enrichment(IndicatorType.MD5, HASH),
        attribution=attribution,
    )


@pytest.fixture(scope="module")
def attributed_text() -> str:
    return render_stix(attributed())


def test_attributed_bundle_validates(attributed_text: str) -> None:
    """A batch with attribution passes stix2-validator and references only objects it holds."""
    assert_valid(attributed_text)
    objects = parse(attributed_text)
    ids = {o["id"] for o in objects}
    for relationship in of_type(objects, "relationship"):
        assert {relationship["source_ref"], relationship["target_ref"]} <= ids
    assert of_type(objects, "threat-actor") == []


def test_attack_objects_carry_mitre_references(attributed_text: str) -> None:
    """Groups, software and techniques become SDOs with mitre-attack external references."""
    objects = parse(attributed_text)
    (group,) = of_type(objects, "intrusion-set")
    assert group["name"] == "TA505"
    assert group["aliases"] == ["Hive0065"]
    assert group["external_references"] == [
        {
            "source_name": "mitre-attack",
            "external_id": "G0092",
            "url": "https://attack.mitre.org/groups/G0092/",
            "description": f"ATT&CK object {TA505.stix_id}",
        }
    ]
    (malware,) = of_type(objects, "malware")
    assert (malware["name"], malware["is_family"]) == ("Clop", True)
    assert [t["name"] for t in of_type(objects, "tool")] == ["Cobalt Strike"]
    (technique,) = of_type(objects, "attack-pattern")
    assert (
        technique["external_references"][0]["url"]
        == "https://attack.mitre.org/techniques/T1071/001/"
    )


def test_relationships_link_only_listed_and_evidenced_indicators(attributed_text: str) -> None:
    """Groups are indicated only by listed indicators, software only where evidence names it."""
    objects = parse(attributed_text)
    names = {o["id"]: o.get("name") or o.get("value") for o in objects}
    edges = {
        (names[r["source_ref"]], r["relationship_type"], names[r["target_ref"]]): r.get(
            "confidence"
        )
        for r in of_type(objects, "relationship")
        if r["relationship_type"] != "based-on"
    }
    assert edges == {
        ("TA505", "uses", "Clop"): 65,
        ("TA505", "uses", "Cobalt Strike"): 65,
        ("TA505", "uses", "Web Protocols"): 65,
        (IP, "indicates", "TA505"): 65,
        (DOMAIN, "indicates", "TA505"): 65,
        (VAGUE, "related-to", "TA505"): 65,
        (IP, "indicates", "Clop"): 65,
        (DOMAIN, "indicates", "Clop"): 65,
        (DOMAIN, "indicates", "Web Protocols"): 65,
    }
    # The unknown indicator is only related; the harmless one and the unlisted hash link nothing.
    assert sorted(i["name"] for i in of_type(objects, "indicator")) == sorted([IP, DOMAIN, HASH])


def test_attribution_note_explains_the_candidates(attributed_text: str) -> None:
    """A note on the intrusion-set carries the summary, the reasons and the unmatched names."""
    objects = parse(attributed_text)
    (group,) = of_type(objects, "intrusion-set")
    (note,) = [n for n in of_type(objects, "note") if n["object_refs"] == [group["id"]]]
    assert note["abstract"] == "ATT&CK attribution: most likely G0092 TA505 (confidence 65)"
    assert "- 2 indicators carry otx adversary 'TA505': +50" in note["content"]
    assert "SomethingElse" in note["content"]


def test_harmless_indicator_brings_no_attack_objects() -> None:
    """An allowlisted domain in an Emotet pulse yields no malware, technique or ATT&CK link."""
    emotet = AttackRef(attack_id="S0367", name="Emotet")
    phishing = AttackRef(attack_id="T1566", name="Phishing")
    google = make_enrichment(IndicatorType.DOMAIN, "www.google.com", VerdictLabel.HARMLESS)
    otx = SourceResult(
        source="otx",
        status=SourceStatus.OK,
        fetched_at=T0,
        allowlisted_by=["alexa"],
        pulses=[Pulse(id="p1", name="emotet", malware_families=["Emotet"], attack_ids=["T1566"])],
    )
    google = google.model_copy(update={"sources": {**google.sources, "otx": otx}})
    attribution = Attribution(
        attack_version="18.1",
        summary="no group",
        software=[emotet],
        techniques=[phishing],
    )
    objects = parse(render_stix(make_analysis(google, attribution=attribution)))
    assert {o["type"] for o in objects} == {"marking-definition", "identity", "domain-name", "note"}
    (note,) = of_type(objects, "note")
    assert note["labels"] == ["harmless"]
