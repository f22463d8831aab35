"""attribute(): OTX and VirusTotal names mapped onto the bundled ATT&CK release, with reasons."""

from __future__ import annotations

import gzip
import json
import socket
from importlib import resources
from typing import Any

import pytest

from threatintel.attribution import (
    ATTACK_VERSION,
    CONFIDENCE_CAP,
    DATA_FILE,
    INSUFFICIENT,
    Attributor,
    _attack,
    attribute,
    evidenced_names,
)
from threatintel.models import (
    Attribution,
    Enrichment,
    GroupCandidate,
    Indicator,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)

TA505 = "G0092"
INDRIK_SPIDER = "G0119"
WIZARD_SPIDER = "G0102"
APT28 = "G0007"
TURLA = "G0010"
PLAY = "G1040"
HASH_A, HASH_B = "a" * 32, "b" * 32


def otx(**fields: Any) -> SourceResult:
    return SourceResult(source="otx", status=SourceStatus.OK, **fields)


def vt(**fields: Any) -> SourceResult:
    return SourceResult(source="virustotal", status=SourceStatus.OK, **fields)


def pulse(name: str = "a pulse", **fields: Any) -> Pulse:
    return Pulse(id="5c7" + "0" * 21, name=name, **fields)


def enrichment(
    value: str, *sources: SourceResult, label: VerdictLabel = VerdictLabel.MALICIOUS
) -> Enrichment:
    kind = (
        IndicatorType.MD5
        if len(value) == 32
        else IndicatorType.IPV4
        if value[0].isdigit()
        else IndicatorType.DOMAIN
    )
    return Enrichment(
        indicator=Indicator(type=kind, value=value),
        sources={source.source: source for source in sources},
        verdict=Verdict(label=label, score=80, confidence=60, reasons=["test"]),
    )


def group(attribution: Attribution, attack_id: str) -> GroupCandidate:
    found = [g for g in attribution.groups if g.group.attack_id == attack_id]
    assert found, f"{attack_id} not among {[g.group.attack_id for g in attribution.groups]}"
    return found[0]


def ids(attribution: Attribution) -> list[str]:
    return [g.group.attack_id for g in attribution.groups]


def test_adversary_named_by_its_attack_name_links_that_indicator_with_a_reason() -> None:
    """An OTX pulse whose adversary is "TA505" makes G0092 a candidate, citing the pulse."""
    result = attribute(
        [enrichment("198.51.100.7", otx(pulses=[pulse("TA505 spam wave", adversary="TA505")]))]
    )
    ta505 = group(result, TA505)
    assert ta505.group.name == "TA505"
    assert ta505.indicators == ["198.51.100.7"]
    assert ta505.confidence == 50
    assert ta505.reasons == [
        "1 indicator carries OTX adversary 'TA505' (name) naming G0092 TA505: +50"
    ]
    assert [(e.kind, e.value, e.detail) for e in ta505.evidence] == [
        ("adversary", "TA505", "TA505 spam wave")
    ]
    assert result.summary == "most likely G0092 TA505 (confidence 50)"


def test_adversary_named_by_an_alias_in_another_spelling_is_matched() -> None:
    """ "hive-0065" is ATT&CK's alias Hive0065 of TA505 once case and punctuation are folded."""
    result = attribute([enrichment("evil.example", otx(adversaries=["hive-0065"]))])
    ta505 = group(result, TA505)
    assert "Hive0065" in ta505.aliases
    assert "'hive-0065' (alias)" in ta505.reasons[0]
    assert ta505.indicators == ["evil.example"]


def test_unrelated_indicators_in_the_same_batch_are_not_linked() -> None:
    """Only indicators with evidence for TA505 are listed, even when others share techniques."""
    batch = [
        enrichment("198.51.100.7", otx(pulses=[pulse(adversary="TA505", attack_ids=["T1071"])])),
        enrichment("203.0.113.9", otx(pulses=[pulse(malware_families=["Mirai"])])),
        enrichment("192.0.2.55", otx(attack_ids=["T1071", "T1566.001"])),
        enrichment("clean.example", vt(tags=["peexe"])),
    ]
    result = attribute(batch)
    assert ids(result) == [TA505]
    assert group(result, TA505).indicators == ["198.51.100.7"]
    assert {e.indicator for e in group(result, TA505).evidence} == {"198.51.100.7"}


def test_software_points_to_every_group_that_uses_it_and_shared_software_weighs_less() -> None:
    """Emotet (one user in ATT&CK) outweighs Dridex (two users), which each user shares."""
    emotet = attribute([enrichment("198.51.100.7", otx(malware_families=["Emotet"]))])
    dridex = attribute([enrichment("198.51.100.8", otx(malware_families=["Dridex"]))])
    assert ids(emotet) == [WIZARD_SPIDER]
    assert sorted(ids(dridex)) == [TA505, INDRIK_SPIDER]
    exclusive = group(emotet, WIZARD_SPIDER)
    shared = group(dridex, TA505)
    assert exclusive.confidence == 40
    assert shared.confidence == group(dridex, INDRIK_SPIDER).confidence == 20
    assert "used by 1 group in ATT&CK 18.1: +40" in exclusive.reasons[0]
    assert "S0384 Dridex seen on 1 indicator" in shared.reasons[0]
    assert "used by 2 groups in ATT&CK 18.1: +20" in shared.reasons[0]
    assert [s.attack_id for s in shared.software] == ["S0384"]
    assert dridex.summary.startswith("no single best match: G0092 TA505, G0119 Indrik Spider tied")


def test_software_used_by_many_groups_alone_is_insufficient() -> None:
    """Cobalt Strike is used by dozens of groups: each gets almost nothing, so no candidate."""
    result = attribute([enrichment("198.51.100.7", otx(malware_families=["Cobalt Strike"]))])
    assert result.groups == []
    assert result.summary == INSUFFICIENT
    assert [s.name for s in result.software] == ["Cobalt Strike"]


def test_techniques_alone_never_make_a_candidate() -> None:
    """Technique ids are recorded but, shared as they are, create no candidate by themselves."""
    result = attribute(
        [enrichment("198.51.100.7", otx(attack_ids=["T1566.001", "T1204.002", "T1059.001"]))]
    )
    assert result.groups == []
    assert result.summary == INSUFFICIENT
    assert [t.attack_id for t in result.techniques] == ["T1059.001", "T1204.002", "T1566.001"]


def test_techniques_strengthen_a_candidate_and_revoked_ids_follow_their_replacement() -> None:
    """Techniques TA505 uses add points; the revoked T1086 counts as its successor T1059.001."""
    plain = attribute([enrichment("198.51.100.7", otx(adversaries=["TA505"]))])
    result = attribute(
        [enrichment("198.51.100.7", otx(adversaries=["TA505"], attack_ids=["T1086", "T1204.002"]))]
    )
    ta505 = group(result, TA505)
    assert ta505.confidence == group(plain, TA505).confidence + 6
    assert [t.attack_id for t in ta505.techniques] == ["T1059.001", "T1204.002"]
    assert "T1059.001 (given as T1086)" in ta505.reasons[-1]
    assert "known techniques observed" in ta505.reasons[-1]


def test_virustotal_threat_label_family_is_recognised_and_generic_words_are_not() -> None:
    """ "trojan.emotet/generic" names Emotet; "trojan.wiper/generic" names no family at all."""
    result = attribute(
        [
            enrichment("a.example", vt(threat_label="trojan.emotet/generic")),
            enrichment("b.example", vt(threat_label="trojan.wiper/generic", tags=["peexe"])),
        ]
    )
    assert [s.attack_id for s in result.software] == ["S0367"]
    wizard = group(result, WIZARD_SPIDER)
    assert wizard.indicators == ["a.example"]
    assert [(e.source, e.kind) for e in wizard.evidence] == [("virustotal", "threat_label")]
    assert "trojan.wiper/generic" in result.unmatched
    assert "peexe" not in result.unmatched


def test_vendor_spellings_of_a_family_are_read_conservatively() -> None:
    """Platform prefixes and variant suffixes are stripped; words inside a name are not split."""
    vendor = attribute(
        [enrichment("a.example", otx(malware_families=["Trojan:Win32/Emotet.A!MTB"]))]
    )
    assert [s.name for s in vendor.software] == ["Emotet"]
    # "Snake Keylogger" is unrelated to Turla's Snake (S0022, alias "Snake").
    other = attribute([enrichment("b.example", otx(malware_families=["Snake Keylogger"]))])
    assert other.software == []
    assert other.unmatched == ["Snake Keylogger"]


def test_no_evidence_gives_insufficient_evidence_without_reading_the_data() -> None:
    """Indicators with no names to match give "insufficient evidence" and leave ATT&CK unloaded."""
    _attack.cache_clear()
    failed = SourceResult(source="otx", status=SourceStatus.TIMEOUT, adversaries=["TA505"])
    result = attribute(
        [
            enrichment("198.51.100.7", otx(), vt(tags=[])),
            enrichment("198.51.100.8", failed),
        ]
    )
    assert result.summary == INSUFFICIENT
    assert (result.groups, result.software, result.techniques, result.unmatched) == ([], [], [], [])
    assert not result.sufficient
    assert result.attack_version == ATTACK_VERSION
    assert _attack.cache_info().currsize == 0
    assert attribute([]).summary == INSUFFICIENT


def test_unknown_adversary_is_reported_unmatched_and_substrings_never_match() -> None:
    """ "TA542" is not in ATT&CK, and "TA5050" or "APT28 fans" are not TA505 or APT28."""
    result = attribute(
        [enrichment("198.51.100.7", otx(adversaries=["TA542", "TA5050", "APT28 fans", "Lazarus"]))]
    )
    assert ids(result) == ["G0032"]  # "Lazarus" is ATT&CK's "Lazarus Group" without the suffix
    assert result.unmatched == ["APT28 fans", "TA5050", "TA542"]


def test_harmless_indicator_is_never_linked_even_by_an_adversary_claim() -> None:
    """Clean hosts named with a family or in a TA505 pulse stay unlinked; others still count."""
    batch = [
        enrichment("198.51.100.7", otx(malware_families=["Dridex"])),
        enrichment("cdn.example", otx(malware_families=["Dridex"]), label=VerdictLabel.HARMLESS),
        enrichment("sinkhole.example", otx(adversaries=["TA505"]), label=VerdictLabel.HARMLESS),
    ]
    result = attribute(batch)
    assert group(result, TA505).indicators == ["198.51.100.7"]
    assert group(result, TA505).confidence == 20
    assert group(result, INDRIK_SPIDER).indicators == ["198.51.100.7"]


def test_harmless_indicator_alone_gives_no_candidate_and_no_attack_objects() -> None:
    """An APT28 pulse or Emotet label on an allowlisted host yields nothing for reports to emit."""
    harmless = VerdictLabel.HARMLESS
    google = enrichment(
        "google.com",
        vt(threat_label="trojan.emotet/generic", tags=["emotet"]),
        otx(pulses=[pulse(adversary="APT28", attack_ids=["T1071"])], malware_families=["Emotet"]),
        label=harmless,
    )
    result = attribute([google])
    assert result.summary == INSUFFICIENT
    assert (result.groups, result.software, result.techniques, result.unmatched) == ([], [], [], [])
    assert evidenced_names(google, result) == set()
    apt28 = attribute([enrichment("203.0.113.9", otx(adversaries=["APT28"]), label=harmless)])
    assert apt28.summary == INSUFFICIENT


def test_unknown_verdict_indicator_still_contributes() -> None:
    """An indicator no source judged is read as before: its APT28 pulse makes a candidate."""
    result = attribute(
        [enrichment("203.0.113.9", otx(adversaries=["APT28"]), label=VerdictLabel.UNKNOWN)]
    )
    assert ids(result) == [APT28]
    assert group(result, APT28).confidence == 50


def test_commodity_software_links_no_indicator_and_earns_no_breadth() -> None:
    """Hashes labelled Cobalt Strike and Mimikatz stay apart from a TA505 indicator in the batch."""
    result = attribute(
        [
            enrichment("198.51.100.7", otx(pulses=[pulse(adversary="TA505")])),
            enrichment(HASH_A, vt(threat_label="trojan.cobaltstrike/beacon")),
            enrichment(HASH_B, vt(threat_label="hacktool.mimikatz/gen")),
        ]
    )
    ta505 = group(result, TA505)
    assert ta505.confidence == 50
    assert ta505.indicators == ["198.51.100.7"]
    assert {e.indicator for e in ta505.evidence} == {"198.51.100.7"}
    assert ta505.software == []
    assert [s.name for s in result.software] == ["Mimikatz", "Cobalt Strike"]
    assert result.summary == "most likely G0092 TA505 (confidence 50)"


def test_commodity_software_on_a_linked_indicator_is_a_reason_but_not_a_link() -> None:
    """Cobalt Strike adds its point where TA505 is named, and nothing where it is seen alone."""
    result = attribute(
        [
            enrichment(
                "198.51.100.7", otx(adversaries=["TA505"], malware_families=["Cobalt Strike"])
            ),
            enrichment(HASH_A, vt(threat_label="trojan.cobaltstrike/beacon")),
        ]
    )
    ta505 = group(result, TA505)
    assert ta505.confidence == 51
    assert ta505.indicators == ["198.51.100.7"]
    assert [s.name for s in ta505.software] == ["Cobalt Strike"]
    assert "S0154 Cobalt Strike seen on 1 indicator" in ta505.reasons[1]
    assert (
        "used by 29 groups in ATT&CK 18.1, too common to link an indicator: +1"
        in (ta505.reasons[1])
    )
    assert not any(reason.startswith("evidence on") for reason in ta505.reasons)


def test_group_specific_software_still_links_and_earns_breadth() -> None:
    """Dridex (two groups) links its indicator to TA505 and adds breadth to an adversary claim."""
    result = attribute(
        [
            enrichment("198.51.100.7", otx(adversaries=["TA505"])),
            enrichment(HASH_A, vt(threat_label="trojan.dridex/generic")),
        ]
    )
    ta505 = group(result, TA505)
    assert ta505.indicators == ["198.51.100.7", HASH_A]
    assert ta505.confidence == 50 + 20 + 5
    assert ta505.reasons[-1] == "evidence on 2 indicators: +5"


def test_split_label_words_and_tags_match_only_distinctive_primary_names() -> None:
    """ "trojan.msil/snake", tag "snake" and "ransomware.play/filecoder" point to no group."""
    result = attribute(
        [
            enrichment(HASH_A, vt(threat_label="trojan.msil/snake", tags=["snake"])),
            enrichment(HASH_B, vt(threat_label="ransomware.play/filecoder", tags=["play"])),
            enrichment("a.example", vt(threat_label="ransomware.chaos/filecoder", tags=["chaos"])),
        ]
    )
    assert result.groups == []
    assert result.software == []
    assert TURLA not in ids(result) and PLAY not in ids(result)
    assert "trojan.msil/snake" in result.unmatched


def test_whole_otx_family_names_still_match_aliases_and_ambiguous_words() -> None:
    """An OTX family that is exactly "Snake" or "Chaos" is that ATT&CK software, as before."""
    result = attribute([enrichment("a.example", otx(malware_families=["Snake", "Chaos"]))])
    assert [s.attack_id for s in result.software] == ["S0022", "S0220"]
    assert ids(result) == [TURLA]
    assert group(result, TURLA).confidence == 40


def test_split_label_words_match_primary_names_of_five_or_more_characters() -> None:
    """A VirusTotal tag or label word that is a primary malware name counts: "emotet", "Dridex"."""
    result = attribute(
        [
            enrichment(HASH_A, vt(tags=["emotet"])),
            enrichment(HASH_B, vt(threat_label="Trojan:Win32/Dridex.gen!C")),
        ]
    )
    assert [s.name for s in result.software] == ["Emotet", "Dridex"]
    assert group(result, WIZARD_SPIDER).indicators == [HASH_A]


def test_alias_shared_by_two_groups_splits_its_weight() -> None:
    """ "UAC-0056" is an alias of both Ember Bear and Saint Bear, so each gets half the points."""
    result = attribute([enrichment("198.51.100.7", otx(adversaries=["UAC-0056"]))])
    assert sorted(ids(result)) == ["G1003", "G1031"]
    assert {g.confidence for g in result.groups} == {25}
    assert "shared by 2 groups" in result.groups[0].reasons[0]


def test_confidence_adds_up_is_capped_and_the_summary_counts_the_others() -> None:
    """Adversary, software, techniques and breadth add up to at most the cap, with a reason."""
    rich = otx(
        pulses=[
            pulse(adversary="TA505", malware_families=["Dridex", "TrickBot", "FlawedAmmyy"]),
            pulse(attack_ids=["T1566.001", "T1204.002", "T1059.001", "T1105", "T1027"]),
        ]
    )
    result = attribute(
        [
            enrichment("198.51.100.7", rich),
            enrichment("198.51.100.8", otx(adversaries=["TA505"])),
            enrichment("198.51.100.9", otx(malware_families=["Dridex"])),
        ]
    )
    ta505 = group(result, TA505)
    assert ta505.confidence == CONFIDENCE_CAP
    assert ta505.reasons[-1].startswith(f"capped at {CONFIDENCE_CAP}")
    assert ta505.indicators == ["198.51.100.7", "198.51.100.8", "198.51.100.9"]
    assert result.groups[0] == ta505
    others = len(result.groups) - 1
    assert result.summary == (
        f"most likely G0092 TA505 (confidence {CONFIDENCE_CAP}), {others} other candidate"
        + ("s" if others != 1 else "")
    )
    assert all(g.confidence >= 20 for g in result.groups)
    assert len(result.groups) <= 5


def test_hostile_strings_are_clipped_and_never_matched() -> None:
    """Markup and 10 kB names survive as clipped text; padding never makes a real name match."""
    huge = "TA" + "-" * 10_000 + "505"
    result = attribute(
        [
            enrichment(
                "198.51.100.7",
                otx(
                    pulses=[pulse("<script>alert(1)</script>" * 400, adversary="<script>x")],
                    adversaries=[huge],
                    malware_families=["Emotet\x1b[31m" + "A" * 10_000],
                    attack_ids=["T" * 10_000],
                ),
                vt(threat_label="trojan." + "x" * 10_000, tags=["y" * 10_000]),
            )
        ]
    )
    assert result.groups == []
    assert result.unmatched
    assert all(len(text) <= 80 for text in result.unmatched)
    assert "<script>x" in result.unmatched
    assert not any("\x1b" in text for text in result.unmatched)


def test_evidence_text_on_a_candidate_is_clipped() -> None:
    """A long pulse name on real evidence is kept but shortened to 80 characters."""
    result = attribute(
        [enrichment("198.51.100.7", otx(pulses=[pulse("x" * 10_000, adversary="TA505")]))]
    )
    (evidence,) = group(result, TA505).evidence
    assert evidence.detail is not None
    assert len(evidence.detail) == 80


def test_output_is_sorted_and_independent_of_input_order() -> None:
    """The same batch in another order gives the same attribution."""
    batch = [
        enrichment("198.51.100.9", otx(malware_families=["TrickBot"])),
        enrichment("198.51.100.7", otx(adversaries=["TA505"], attack_ids=["T1105"])),
        enrichment("198.51.100.8", vt(threat_label="trojan.emotet/generic")),
    ]
    forward = attribute(batch)
    assert forward == attribute(list(reversed(batch)))
    for candidate in forward.groups:
        assert candidate.indicators == sorted(candidate.indicators)


def test_the_reducer_fed_one_by_one_matches_the_whole_batch() -> None:
    """Attributor fed enrichment by enrichment, asked for a result midway, ends where
    attribute() over the whole batch does."""
    batch = [
        enrichment("198.51.100.7", otx(adversaries=["TA505"], attack_ids=["T1105"])),
        enrichment("198.51.100.9", otx(malware_families=["TrickBot"])),
        enrichment("198.51.100.8", vt(threat_label="trojan.emotet/generic")),
        enrichment("198.51.100.6", otx(malware_families=["Cobalt Strike"])),
    ]
    reducer = Attributor()
    for item in batch[:2]:
        reducer.add(item)
    assert reducer.result() == attribute(batch[:2])
    for item in batch[2:]:
        reducer.add(item)
    assert reducer.result() == attribute(batch)


def test_attack_version_is_recorded_from_the_bundled_file() -> None:
    """The attribution names the ATT&CK release, and the bundled file agrees with the constant."""
    result = attribute([enrichment("198.51.100.7", otx(adversaries=["TA505"]))])
    assert result.attack_version == ATTACK_VERSION == "18.1"
    raw = resources.files("threatintel").joinpath("data", DATA_FILE).read_bytes()
    meta = json.loads(gzip.decompress(raw))
    assert meta["attack_version"] == "18.1"
    assert "enterprise-attack-18.1.json" in meta["source"]
    assert "The MITRE Corporation" in meta["licence"]


def test_data_file_is_small_and_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled file is well under 1 MB and loads with the network unavailable."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("attribution tried to open a socket")

    raw = resources.files("threatintel").joinpath("data", DATA_FILE).read_bytes()
    assert len(raw) < 250_000
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    _attack.cache_clear()
    attack = _attack()
    assert attack.version == ATTACK_VERSION
    assert len(attack.groups) > 150
    assert len(attack.software) > 700
    assert len(attack.techniques) > 600
    assert attack.groups[TA505].stix_id == "intrusion-set--7eda3dd8-b09b-4705-8090-c2ad9fb8c14d"
