"""The MISP renderer: event structure, attribute types, to_ids, verdict and ATT&CK galaxy tags."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

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
from threatintel.reports import misp

T0 = datetime(2024, 5, 1, 23, 30, tzinfo=UTC)
MD5 = "44d88612fea8a8f36de82e1278abb02f"
SHA1 = "3395856ce81f2b7382dee72602f798b642f14140"
SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"

# (type, value, registrable domain, MISP type, MISP category, MISP value)
CASES: list[tuple[IndicatorType, str, str | None, str, str, str]] = [
    (IndicatorType.IPV4, "198.51.100.7", None, "ip-dst", "Network activity", "198.51.100.7"),
    (IndicatorType.IPV6, "2001:db8::1", None, "ip-dst", "Network activity", "2001:db8::1"),
    (
        IndicatorType.DOMAIN,
        "example.com",
        "example.com",
        "domain",
        "Network activity",
        "example.com",
    ),
    (
        IndicatorType.DOMAIN,
        "c2.evil.example.com",
        "example.com",
        "hostname",
        "Network activity",
        "c2.evil.example.com",
    ),
    (
        IndicatorType.URL,
        "http://evil.example.com/a'b\\c",
        "example.com",
        "url",
        "Network activity",
        "http://evil.example.com/a'b\\c",
    ),
    (IndicatorType.MD5, MD5, None, "md5", "Payload delivery", MD5),
    (IndicatorType.SHA1, SHA1, None, "sha1", "Payload delivery", SHA1),
    (IndicatorType.SHA256, SHA256, None, "sha256", "Payload delivery", SHA256),
    (
        IndicatorType.EMAIL,
        "bad@evil.example.com",
        None,
        "email",
        "Payload delivery",
        "bad@evil.example.com",
    ),
    (
        IndicatorType.CVE,
        "CVE-2021-44228",
        None,
        "vulnerability",
        "External analysis",
        "CVE-2021-44228",
    ),
    (IndicatorType.ASN, "AS64500", None, "AS", "Network activity", "64500"),
    (IndicatorType.CIDR, "203.0.113.0/24", None, "ip-dst", "Network activity", "203.0.113.0/24"),
]


def render_misp(analysis: Analysis, **options: Any) -> str:
    # These tests use documentation ranges (non-public by design): sharing them is asked for.
    # tests/test_report_audience.py checks what is left out by default.
    return misp.render_misp(analysis, include_private=True, **options)


def make_enrichment(
    kind: IndicatorType,
    value: str,
    label: VerdictLabel = VerdictLabel.MALICIOUS,
    *,
    registrable: str | None = None,
    reasons: list[str] | None = None,
    families: list[str] | None = None,
) -> Enrichment:
    return Enrichment(
        indicator=Indicator(type=kind, value=value, registrable_domain=registrable),
        sources={
            "otx": SourceResult(
                source="otx",
                status=SourceStatus.OK,
                fetched_at=T0,
                malware_families=families or [],
            )
        },
        verdict=Verdict(
            label=label,
            score=90,
            confidence=70,
            reasons=["VirusTotal: 40/70 engines flag it", "second"] if reasons is None else reasons,
        ),
    )


def make_analysis(
    *enrichments: Enrichment, attribution: Attribution | None = None, started: datetime = T0
) -> Analysis:
    return Analysis(
        enrichments=list(enrichments),
        providers=["otx"],
        attribution=attribution,
        started_at=started,
        finished_at=started + timedelta(seconds=4),
    )


def every_type(label: VerdictLabel) -> Analysis:
    return make_analysis(
        *(make_enrichment(kind, value, label, registrable=reg) for kind, value, reg, *_ in CASES)
    )


def event_of(analysis: Analysis, **options: Any) -> dict[str, Any]:
    document = json.loads(render_misp(analysis, **options))
    assert list(document) == ["Event"]
    event: dict[str, Any] = document["Event"]
    return event


def tags(item: dict[str, Any]) -> list[str]:
    return [tag["name"] for tag in item["Tag"]]


def test_event_structure() -> None:
    """The event has MISP's fields with the documented defaults and one attribute per indicator."""
    event = event_of(every_type(VerdictLabel.SUSPICIOUS))
    assert event["info"] == "threatintel analysis: 12 indicators (12 suspicious)"
    assert event["date"] == "2024-05-01"
    assert event["timestamp"] == str(int((T0 + timedelta(seconds=4)).timestamp()))
    assert (event["analysis"], event["distribution"], event["published"]) == ("2", "0", False)
    assert event["threat_level_id"] == "2"
    assert tags(event) == ["tlp:amber"]
    assert uuid.UUID(event["uuid"]).version == 5
    assert len(event["Attribute"]) == len(CASES)
    for attribute in event["Attribute"]:
        assert uuid.UUID(attribute["uuid"]).version == 5
        assert attribute["distribution"] == "5"
        assert attribute["timestamp"] == event["timestamp"]


@pytest.mark.parametrize(
    ("kind", "value", "registrable", "misp_type", "category", "misp_value"),
    CASES,
    ids=[f"{c[0].value}-{c[3]}" for c in CASES],
)
def test_attribute_type_per_indicator_type(
    kind: IndicatorType,
    value: str,
    registrable: str | None,
    misp_type: str,
    category: str,
    misp_value: str,
) -> None:
    """Each indicator type maps to its MISP attribute type, category and value."""
    event = event_of(make_analysis(make_enrichment(kind, value, registrable=registrable)))
    (attribute,) = event["Attribute"]
    assert (attribute["type"], attribute["category"], attribute["value"]) == (
        misp_type,
        category,
        misp_value,
    )


@pytest.mark.parametrize("label", list(VerdictLabel))
def test_to_ids_only_for_malicious(label: VerdictLabel) -> None:
    """to_ids is set only on malicious attributes that a detection can use."""
    event = event_of(every_type(label))
    flagged = {a["type"] for a in event["Attribute"] if a["to_ids"]}
    if label is VerdictLabel.MALICIOUS:
        assert flagged == {"ip-dst", "domain", "hostname", "url", "md5", "sha1", "sha256", "email"}
    else:
        assert flagged == set()


@pytest.mark.parametrize("label", list(VerdictLabel))
def test_verdict_tag_and_comment(label: VerdictLabel) -> None:
    """Every attribute carries its verdict as a machine tag and its top reason as comment."""
    event = event_of(every_type(label))
    for attribute in event["Attribute"]:
        assert tags(attribute) == [f'threatintel:verdict="{label.value}"']
        assert attribute["comment"] == (
            f"{label.value} (score 90, confidence 70): VirusTotal: 40/70 engines flag it"
        )


@pytest.mark.parametrize(
    ("labels", "level"),
    [
        ([VerdictLabel.HARMLESS, VerdictLabel.MALICIOUS, VerdictLabel.SUSPICIOUS], "1"),
        ([VerdictLabel.HARMLESS, VerdictLabel.SUSPICIOUS, VerdictLabel.UNKNOWN], "2"),
        ([VerdictLabel.HARMLESS, VerdictLabel.UNKNOWN], "4"),
        ([VerdictLabel.HARMLESS, VerdictLabel.HARMLESS], "3"),
        ([], "4"),
    ],
)
def test_threat_level_follows_the_worst_verdict(labels: list[VerdictLabel], level: str) -> None:
    """Malicious → high, suspicious → medium, all harmless → low, else undefined."""
    enrichments = [
        make_enrichment(IndicatorType.IPV4, f"198.51.100.{n}", label)
        for n, label in enumerate(labels)
    ]
    assert event_of(make_analysis(*enrichments))["threat_level_id"] == level


def test_tlp_is_configurable() -> None:
    """The TLP tag defaults to amber and follows the option."""
    analysis = make_analysis(make_enrichment(IndicatorType.IPV4, "198.51.100.7"))
    assert tags(event_of(analysis, tlp="green")) == ["tlp:green"]


def test_uuids_are_deterministic_and_per_event() -> None:
    """Re-rendering gives the same JSON; another analysis gets other event and attribute uuids."""
    analysis = every_type(VerdictLabel.MALICIOUS)
    again = Analysis.model_validate_json(analysis.model_dump_json())
    assert render_misp(analysis) == render_misp(analysis) == render_misp(again)
    later = event_of(
        every_type(VerdictLabel.MALICIOUS).model_copy(update={"started_at": T0 + timedelta(days=1)})
    )
    first = event_of(analysis)
    assert later["uuid"] != first["uuid"]
    assert not {a["uuid"] for a in first["Attribute"]} & {a["uuid"] for a in later["Attribute"]}


def test_attacker_text_is_flattened_in_comments() -> None:
    """Control and bidi characters in reasons reach the comment only as escapes, on one line."""
    reason = "OTX pulse 'evil\u202e'\nnext line\x00"
    event = event_of(
        make_analysis(make_enrichment(IndicatorType.IPV4, "198.51.100.7", reasons=[reason]))
    )
    assert event["Attribute"][0]["comment"] == (
        "malicious (score 90, confidence 70): OTX pulse 'evil\\u202e' next line\\x00"
    )


# --- attribution ----------------------------------------------------------------------------

TA505 = AttackRef(attack_id="G0092", name="TA505")
CLOP = AttackRef(
    attack_id="S0611", name="Clop", stix_id="malware--" + "2" * 8 + "-2222-4222-8222-" + "2" * 12
)
COBALT = AttackRef(
    attack_id="S0154",
    name="Cobalt Strike",
    stix_id="tool--" + "3" * 8 + "-3333-4333-8333-" + "3" * 12,
)
WEB = AttackRef(attack_id="T1071.001", name="Web Protocols")
GROUP_TAG = 'misp-galaxy:mitre-intrusion-set="TA505 - G0092"'
CLOP_TAG = 'misp-galaxy:mitre-malware="Clop - S0611"'
COBALT_TAG = 'misp-galaxy:mitre-tool="Cobalt Strike - S0154"'
WEB_TAG = 'misp-galaxy:mitre-attack-pattern="Web Protocols - T1071.001"'


def attributed() -> dict[str, Any]:
    """Listed IP (Clop family), listed domain (technique evidence), an unlisted hash."""
    candidate = GroupCandidate(
        group=TA505,
        confidence=65,
        indicators=["198.51.100.7", "c2.evil.example.com"],
        evidence=[
            Evidence(indicator="198.51.100.7", source="otx", kind="adversary", value="TA505"),
            Evidence(
                indicator="c2.evil.example.com", source="otx", kind="technique", value="T1071.001"
            ),
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
    )
    return event_of(
        make_analysis(
            make_enrichment(IndicatorType.IPV4, "198.51.100.7", families=["Clop"]),
            make_enrichment(IndicatorType.DOMAIN, "c2.evil.example.com", registrable="example.com"),
            make_enrichment(IndicatorType.MD5, MD5),
            attribution=attribution,
        )
    )


def test_event_carries_the_whole_attribution_as_galaxy_tags() -> None:
    """The event is tagged with the group, its software and its techniques."""
    assert tags(attributed()) == ["tlp:amber", GROUP_TAG, CLOP_TAG, COBALT_TAG, WEB_TAG]


def test_attributes_carry_only_grounded_galaxy_tags() -> None:
    """An attribute gets the group only when listed, software and techniques only when evidenced."""
    by_value = {a["value"]: tags(a) for a in attributed()["Attribute"]}
    verdict = 'threatintel:verdict="malicious"'
    assert by_value == {
        "198.51.100.7": [verdict, GROUP_TAG, CLOP_TAG],
        "c2.evil.example.com": [verdict, GROUP_TAG, WEB_TAG],
        MD5: [verdict],
    }


def test_harmless_indicator_gets_no_attack_tags() -> None:
    """An allowlisted domain in an Emotet pulse tags neither its attribute nor the event."""
    emotet = AttackRef(attack_id="S0367", name="Emotet")
    phishing = AttackRef(attack_id="T1566", name="Phishing")
    google = make_enrichment(
        IndicatorType.DOMAIN, "www.google.com", VerdictLabel.HARMLESS, registrable="google.com"
    )
    otx = SourceResult(
        source="otx",
        status=SourceStatus.OK,
        fetched_at=T0,
        allowlisted_by=["alexa"],
        pulses=[Pulse(id="p1", name="emotet", malware_families=["Emotet"], attack_ids=["T1566"])],
    )
    google = google.model_copy(update={"sources": {"otx": otx}})
    attribution = Attribution(
        attack_version="18.1", summary="no group", software=[emotet], techniques=[phishing]
    )
    event = event_of(make_analysis(google, attribution=attribution))
    assert tags(event) == ["tlp:amber"]
    (attribute,) = event["Attribute"]
    assert tags(attribute) == ['threatintel:verdict="harmless"']


def test_harmless_attribute_listed_by_a_candidate_gets_no_group_tag() -> None:
    """A harmless indicator a candidate lists carries only its verdict tag."""
    candidate = GroupCandidate(
        group=TA505, confidence=40, indicators=["cdn.example.net"], software=[CLOP]
    )
    attribution = Attribution(
        attack_version="18.1", summary="weak", groups=[candidate], software=[CLOP]
    )
    clean = make_enrichment(
        IndicatorType.DOMAIN, "cdn.example.net", VerdictLabel.HARMLESS, families=["Clop"]
    )
    (attribute,) = event_of(make_analysis(clean, attribution=attribution))["Attribute"]
    assert tags(attribute) == ['threatintel:verdict="harmless"']
