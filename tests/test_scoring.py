"""The verdict model: evidence in, label, score, confidence and reasons out (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scoring_builders import (
    FAILED,
    HARMLESS,
    HASH,
    IP,
    MALICIOUS,
    NOT_FOUND,
    NOW,
    OK,
    SUSPICIOUS,
    UNKNOWN,
    abuse,
    clean_ip,
    ipinfo,
    otx,
    status_only,
    verdict,
    vt,
)
from threatintel.errors import ConfigError
from threatintel.models import (
    AbuseReport,
    Detections,
    Indicator,
    IndicatorType,
    Pulse,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)
from threatintel.scoring import DEFAULT_POLICY, ScoringPolicy, score
from threatintel.settings import Settings

# --- the examples -----------------------------------------------------------------


def test_heavy_virustotal_detections_are_malicious_and_say_how_many() -> None:
    """Twelve of 94 engines is strong evidence: malicious, with the count as the first reason."""
    result = verdict(*clean_ip(vt(12)))
    assert result.label is MALICIOUS
    assert result.reasons[0] == "12/94 VirusTotal engines flag it malicious"


def test_one_engine_and_a_few_pulses_on_well_known_infrastructure_is_harmless() -> None:
    """1.1.1.1-style noise (one engine, three pulses, high reputation, allowlisted) is harmless."""
    # Harmless rather than suspicious: the only accusation is one engine, below every threshold,
    # while three sources vouch for it (VirusTotal's community, OTX's allowlist, AbuseIPDB's
    # whitelist). The weak detection stays visible in the reasons for the analyst.
    result = verdict(
        vt(1, flagged_by=("CRDF",), reputation=134),
        otx(3, allowlisted_by=("whitelist",)),
        abuse(whitelisted=True),
        ipinfo(),
    )
    assert result.label is HARMLESS
    assert result.score < DEFAULT_POLICY.suspicious_threshold
    assert "1/94 VirusTotal engines flag it (CRDF) — too few to trust alone" in result.reasons
    assert "OTX lists it as known-good (whitelist); 3 pulses discounted" in result.reasons
    assert "IPinfo: anycast network; AS13335 Cloudflare, Inc.; Brisbane, AU" in result.reasons


# The recorded VirusTotal figures for 1.1.1.1, and the pulses OTX collects on any resolver:
# big lists (sandbox traffic, "hosts contacted by Emotet") that name malware, not the resolver.
RESOLVER_VT: dict[str, Any] = {
    "reputation": 134,
    "flagged_by": ("CRDF", "Cyble", "ESTsecurity", "Webroot"),
}
RESOLVER_PULSES = otx(
    50, adversaries=("TA505",), malware=("Emotet", "Qakbot"), attack_ids=("T1071",), size=2000
)


def test_popular_resolver_with_engine_and_pulse_noise_is_not_suspicious() -> None:
    """4/94 engines and 50 context pulses on an anycast resolver with a +134 reputation is calm."""
    # Issue 7 asks for this: it used to be suspicious (42), and analysts learnt to ignore a
    # tool that says "look at this now" about 1.1.1.1. The pulses only list the resolver, so
    # their malware names say nothing about it; the anycast network vouches for it.
    result = verdict(vt(4, **RESOLVER_VT), RESOLVER_PULSES, ipinfo())
    assert result.label in (HARMLESS, UNKNOWN)
    assert result.score < DEFAULT_POLICY.suspicious_threshold
    assert "VirusTotal community reputation +134" in result.reasons
    assert "anycast network (IPinfo) — shared infrastructure" in result.reasons
    assert any("50 OTX pulses, none about it" in reason for reason in result.reasons)


def test_popular_resolver_with_suspicious_engines_on_top_is_not_flagged() -> None:
    """Five more engines calling it suspicious leave a well-reputed resolver below suspicious."""
    result = verdict(vt(4, suspicious=5, **RESOLVER_VT), RESOLVER_PULSES, ipinfo())
    assert result.label in (HARMLESS, UNKNOWN)
    assert result.score < DEFAULT_POLICY.suspicious_threshold


@pytest.mark.parametrize(
    ("voucher", "policy", "text"),
    [
        (vt(4, suspicious=5, reputation=50), DEFAULT_POLICY, "VirusTotal community reputation +50"),
        (
            otx(0, allowlisted_by=("whitelist",)),
            ScoringPolicy(allowlist_score_cap=100),
            "the OTX allowlist",
        ),
    ],
    ids=["reputation", "allowlist"],
)
def test_a_voucher_holds_moderate_corroboration_below_malicious(
    voucher: SourceResult, policy: ScoringPolicy, text: str
) -> None:
    """Three moderate sources reach malicious only when nothing vouches for the indicator."""
    moderate = [vt(4, suspicious=5), otx(8, adversaries=("TA542",)), abuse(40, 9, 4)]
    assert verdict(*moderate, policy=policy).label is MALICIOUS
    sources = {r.source: r for r in (*moderate, voucher)}
    held = verdict(*sources.values(), policy=policy)
    assert (held.label, held.score) == (SUSPICIOUS, 69)
    reason = (
        f"held at 69, below malicious: {text} vouches for it, and no source has strong evidence"
    )
    assert reason in held.reasons


@pytest.mark.parametrize(
    "sources",
    [
        [vt(20, reputation=134), otx(0), abuse()],
        [vt(4, reputation=134), otx(3, malware=("Emotet",)), abuse(100, 153, 37)],
    ],
    ids=["strong-virustotal", "strong-abuseipdb"],
)
def test_strong_evidence_stays_malicious_despite_a_high_reputation(
    sources: list[SourceResult],
) -> None:
    """A compromised popular host is malicious once one source has strong evidence against it."""
    result = verdict(*sources)
    assert result.label is MALICIOUS
    assert not any(reason.startswith("held at") for reason in result.reasons)


def test_reputation_counts_only_its_base_points_against_strong_detections() -> None:
    """Twenty engines outweigh years of votes: the reputation keeps 15 points, and says so."""
    result = verdict(vt(20, reputation=134), otx(0), abuse())
    assert result.score == 90 - 15
    assert "VirusTotal community reputation +134 — counted at 15 against strong detections" in (
        result.reasons
    )


@pytest.mark.parametrize(
    "sources",
    [
        [vt(1, flagged_by=("CRDF",))],
        [vt(2), otx(5)],
        [otx(100, adversaries=("TA542",), malware=("Emotet",), attack_ids=("T1071",))],
        [vt(2), otx(40, adversaries=("TA542",)), abuse(tor=True)],
    ],
    ids=["one-engine", "two-engines-five-pulses", "otx-alone", "weak-pile-up"],
)
@pytest.mark.parametrize("weight", [1.0, 5.0])
def test_weak_evidence_never_reaches_malicious(sources: list[SourceResult], weight: float) -> None:
    """Few engines and pulses are held below malicious even with the weights turned up."""
    policy = ScoringPolicy(virustotal_weight=weight, otx_weight=weight, abuseipdb_weight=weight)
    assert verdict(*sources, policy=policy).label is not MALICIOUS


def test_abuseipdb_full_confidence_from_many_reports_is_malicious() -> None:
    """AbuseIPDB 100% from 153 recent reports is strong evidence, named in the reasons."""
    result = verdict(*clean_ip(abuse(100, 153, 37, days_ago=2)))
    assert result.label is MALICIOUS
    assert result.reasons[0] == (
        "AbuseIPDB confidence 100% from 153 reports by 37 users, last 2 days ago"
        " — heavy, repeated reporting"
    )


def test_abuseipdb_strong_evidence_is_only_suspicious_under_a_stricter_policy() -> None:
    """The same AbuseIPDB answer is suspicious when its points are turned down."""
    policy = ScoringPolicy(abuse_strong_points=50, abuse_heavy_points=55)
    result = verdict(*clean_ip(abuse(100, 153, 37)), policy=policy)
    assert result.label is SUSPICIOUS


@pytest.mark.parametrize(
    ("report", "tail"),
    [
        (abuse(100, 1, 1), "too few reports to trust alone"),
        (abuse(100, 153, 37, days_ago=200), "but not recently"),
    ],
    ids=["thin", "stale"],
)
def test_high_abuseipdb_confidence_from_thin_or_stale_reports_is_not_strong(
    report: SourceResult, tail: str
) -> None:
    """One report, or reports long past, cannot make an IP malicious on their own."""
    result = verdict(*clean_ip(report))
    assert result.label is SUSPICIOUS
    assert result.reasons[0].endswith(tail)


def test_ipinfo_alone_is_unknown_with_score_zero() -> None:
    """IPinfo is context: on its own it yields unknown, score 0, confidence 0, and the context."""
    result = verdict(ipinfo())
    assert (result.label, result.score, result.confidence) == (UNKNOWN, 0, 0)
    assert "IPinfo: anycast network; AS13335 Cloudflare, Inc.; Brisbane, AU" in result.reasons


@pytest.mark.parametrize("base", [clean_ip(), clean_ip(vt(3)), [otx(9)]])
def test_ipinfo_only_ever_lowers_the_score(base: list[SourceResult]) -> None:
    """An ordinary network changes nothing, a known-good one lowers the score, a failure nothing."""
    # Issue 7: the anycast flag and the network's owner are known-good signals now, so IPinfo
    # may lower a score (docs/verdicts.md). It still never adds malice or counts as an answer.
    without = verdict(*base)
    plain = verdict(*base, ipinfo("AS64500 Bulletproof Hosting", False, asn=64500))
    assert (plain.label, plain.score, plain.confidence) == (
        without.label,
        without.score,
        without.confidence,
    )
    assert verdict(*base, ipinfo()).score <= without.score
    failed = verdict(*base, status_only("ipinfo", SourceStatus.TIMEOUT))
    assert failed.confidence == without.confidence
    assert "IPinfo: timeout — no network context" in failed.reasons


# --- failures, absences and private addresses ----------------------------------------------


@pytest.mark.parametrize("failure", FAILED)
def test_failing_sources_lower_confidence_but_not_the_score(failure: SourceStatus) -> None:
    """Two sources failing keeps the score but costs confidence, and the reasons say so."""
    healthy = verdict(vt(12), otx(3, malware=("Emotet",)), abuse(90, 50, 9))
    degraded = verdict(vt(12), status_only("otx", failure), status_only("abuseipdb", failure))
    assert degraded.label is MALICIOUS
    assert degraded.confidence < healthy.confidence
    assert any(
        r.startswith("OTX: ") and "verdict based on fewer sources" in r for r in degraded.reasons
    )


def test_failure_reason_names_source_and_status() -> None:
    """A timed-out source is reported as such, not counted as clean."""
    result = verdict(*clean_ip(status_only("virustotal", SourceStatus.TIMEOUT)))
    assert "VirusTotal: timeout — verdict based on fewer sources" in result.reasons


@pytest.mark.parametrize("failure", FAILED)
def test_failures_never_make_an_indicator_harmless(failure: SourceStatus) -> None:
    """One clean answer plus failures is unknown; failures alone are unknown with confidence 0."""
    one_clean = verdict(vt(0), status_only("otx", failure), status_only("abuseipdb", failure))
    assert one_clean.label is UNKNOWN
    nothing = verdict(*(status_only(r.source, failure) for r in clean_ip()))
    assert (nothing.label, nothing.score, nothing.confidence) == (UNKNOWN, 0, 0)


def test_clean_answers_from_enough_sources_are_harmless() -> None:
    """No detections, no pulses and no reports is harmless with high confidence."""
    result = verdict(*clean_ip())
    assert result.label is HARMLESS
    assert result.confidence >= 90
    assert result.reasons[0] == "0/94 VirusTotal engines flag it"


def test_missing_api_key_costs_less_confidence_than_a_failure() -> None:
    """not_configured is a small penalty, a failure a full one."""
    unset = verdict(*clean_ip(status_only("otx", SourceStatus.NOT_CONFIGURED)))
    failed = verdict(*clean_ip(status_only("otx", SourceStatus.ERROR)))
    assert failed.confidence < unset.confidence < verdict(*clean_ip()).confidence
    assert "OTX: not configured" in unset.reasons


def test_not_applicable_sources_cost_nothing() -> None:
    """AbuseIPDB does not do hashes: its not_applicable leaves the confidence untouched."""
    base = [vt(0, total=70), otx(0)]
    na = status_only("abuseipdb", SourceStatus.NOT_APPLICABLE)
    assert verdict(*base, na, on=HASH) == verdict(*base, on=HASH)


def test_virustotal_never_seen_is_an_answer_but_not_a_clean_one() -> None:
    """An unknown hash is not harmless just because VirusTotal has no record of it."""
    result = verdict(status_only("virustotal", NOT_FOUND), otx(0), on=HASH)
    assert result.label is UNKNOWN
    assert result.confidence > 0
    assert "VirusTotal has never seen it" in result.reasons


def test_private_addresses_are_unknown_with_the_reason() -> None:
    """Every source skipping a private address gives unknown, score 0 and the message once."""
    message = "10.0.0.1 is private (RFC 1918)"
    sources = [
        status_only(name, SourceStatus.NOT_QUERIED_PRIVATE, message)
        for name in ("virustotal", "otx", "abuseipdb", "ipinfo")
    ]
    result = verdict(*sources, on=Indicator(type=IndicatorType.IPV4, value="10.0.0.1"))
    assert result == Verdict(
        label=UNKNOWN, score=0, confidence=0, reasons=[f"not queried: {message}"]
    )


@pytest.mark.parametrize("kind", ["email", "cve", "asn", "cidr"])
def test_recognised_but_unqueried_types_are_unknown(kind: str) -> None:
    """Emails, CVEs, ASNs and CIDRs are reported as found but not looked up."""
    result = verdict(vt(50), on=Indicator(type=IndicatorType(kind), value="x"))
    assert (result.label, result.score, result.confidence) == (UNKNOWN, 0, 0)
    assert result.reasons == [f"{kind} indicators are recognised but not looked up"]


# --- how the evidence combines -------------------------------------------------------------


def test_an_allowlist_caps_the_score() -> None:
    """Thirty engines against an OTX allowlist is at most suspicious, and the cap is explained."""
    result = verdict(vt(30), otx(0, allowlisted_by=("majestic",)))
    assert (result.label, result.score) == (SUSPICIOUS, DEFAULT_POLICY.allowlist_score_cap)
    assert "score capped at 50: OTX lists it as known-good" in result.reasons


def test_moderate_evidence_from_two_sources_corroborates_to_malicious() -> None:
    """Four engines plus OTX pulses naming a threat agree: together they are malicious."""
    threat = otx(8, adversaries=("TA542",), malware=("Emotet",))
    result = verdict(vt(4, flagged_by=("A", "B", "C", "D")), threat)
    assert result.label is MALICIOUS


@pytest.mark.parametrize(
    ("weaker", "stronger"),
    [
        (otx(1), otx(5)),
        (otx(5), otx(5, adversaries=("TA542",))),
        (otx(5, adversaries=("TA542",)), otx(5, adversaries=("TA542",), malware=("Emotet",))),
        (otx(5, modified=datetime(2020, 1, 1)), otx(5, modified=datetime(2025, 5, 1))),
        (vt(1), vt(3)),
        (vt(3), vt(5)),
        (vt(3, reputation=134), vt(3)),
        (vt(4, reputation=134), vt(4, reputation=60)),
    ],
    ids=[
        "count",
        "adversary",
        "malware",
        "recency",
        "engines",
        "strong",
        "reputation",
        "reputation-magnitude",
    ],
)
def test_more_or_fresher_evidence_scores_higher(
    weaker: SourceResult, stronger: SourceResult
) -> None:
    """Points grow with pulse count, named threats, recency and engines; reputation lowers them."""
    assert verdict(weaker).score < verdict(stronger).score


def test_reputation_points_grow_with_the_reputation_up_to_a_ceiling() -> None:
    """A reputation of +50 is worth 15 points, each point beyond it half a point, at most 40."""
    malice = 4 * 8 + 5 * 2  # four malicious and five suspicious engines
    scores = [verdict(vt(4, suspicious=5, reputation=r)).score for r in (50, 60, 100, 10_000)]
    assert scores == [malice - 15, malice - 20, malice - 40, malice - 40]


def test_pulse_names_appear_truncated_and_on_one_line() -> None:
    """Attacker-chosen adversary names are kept short and stripped of control characters."""
    result = verdict(otx(3, adversaries=("TA542\n" + "x" * 200,)))
    reason = result.reasons[0]
    assert reason.startswith("in 3 OTX pulses; adversary TA542 xxx")
    assert "\n" not in reason and len(reason) < 100


def test_tor_exit_is_a_reason_and_modest_suspicion() -> None:
    """A Tor exit with no reports scores a little, below suspicious."""
    result = verdict(*clean_ip(abuse(tor=True)))
    assert 0 < result.score < DEFAULT_POLICY.suspicious_threshold
    assert "Tor exit node (AbuseIPDB)" in result.reasons


@pytest.mark.parametrize(
    ("policy", "label"),
    [
        (ScoringPolicy(), SUSPICIOUS),
        (ScoringPolicy(malicious_threshold=32, corroboration_min_sources=1), MALICIOUS),
        (ScoringPolicy(suspicious_threshold=40), UNKNOWN),
        (ScoringPolicy(vt_engine_points=5), UNKNOWN),
        (ScoringPolicy(vt_min_engines_malicious=4), MALICIOUS),
        (ScoringPolicy(vt_trusted_engines=("CRDF",)), MALICIOUS),
    ],
    ids=[
        "default",
        "lower-malicious",
        "higher-suspicious",
        "fewer-points",
        "fewer-engines",
        "trusted",
    ],
)
def test_thresholds_are_configurable(policy: ScoringPolicy, label: VerdictLabel) -> None:
    """Four engines (32 points) changes label as the policy changes."""
    sources = [vt(4, flagged_by=("CRDF", "B", "C", "D")), otx(0)]
    assert verdict(*sources, policy=policy).label is label


def test_dict_order_does_not_matter() -> None:
    """The same sources in another order give the same verdict."""
    sources = [vt(3), otx(4, malware=("Mirai",)), abuse(40, 9, 4), ipinfo()]
    assert verdict(*sources) == verdict(*reversed(sources))


def test_reasons_put_the_evidence_for_the_label_first() -> None:
    """A harmless verdict leads with benign evidence; a malicious one with the accusation."""
    harmless = verdict(vt(1, reputation=134), otx(0, allowlisted_by=("whitelist",)))
    assert harmless.reasons[0].startswith("OTX lists it as known-good")
    malicious = verdict(*clean_ip(vt(40)))
    assert malicious.reasons[0].startswith("40/94 VirusTotal engines")


# --- the policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"malicious_threshold": 30, "suspicious_threshold": 30},
        {"malicious_threshold": 20, "suspicious_threshold": 30},
        {"vt_min_engines_malicious": 2, "vt_weak_engines": 2},
        {"abuse_confidence_malicious": 20},
        {"abuse_heavy_confidence": 70},
        {"vt_reputation_benign": -60},
        {"otx_weight": -1},
        {"vt_engine_points": 101},
        {"no_such_field": 1},
    ],
)
def test_policy_rejects_inconsistent_values(fields: dict[str, Any]) -> None:
    """Thresholds must be ordered, points and weights in range, and names known."""
    with pytest.raises(ValidationError):
        ScoringPolicy(**fields)


def test_policy_is_frozen() -> None:
    """A policy cannot be changed after construction."""
    with pytest.raises(ValidationError):
        DEFAULT_POLICY.malicious_threshold = 10  # type: ignore[misc]


@pytest.mark.parametrize("raw", ["Kaspersky, ESET-NOD32", '["Kaspersky", "ESET-NOD32"]'])
def test_trusted_engines_accept_comma_separated_or_json(raw: str) -> None:
    """SCORING__VT_TRUSTED_ENGINES may be written either way."""
    assert ScoringPolicy(vt_trusted_engines=raw).vt_trusted_engines == ("Kaspersky", "ESET-NOD32")


def test_settings_read_the_policy_from_scoring_env_vars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """SCORING__<FIELD> environment variables reach settings.scoring."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCORING__MALICIOUS_THRESHOLD", "80")
    monkeypatch.setenv("SCORING__VT_TRUSTED_ENGINES", "Kaspersky,BitDefender")
    policy = Settings.load().scoring
    assert policy.malicious_threshold == 80
    assert policy.vt_trusted_engines == ("Kaspersky", "BitDefender")
    monkeypatch.setenv("SCORING__SUSPICIOUS_THRESHOLD", "90")
    with pytest.raises(ConfigError, match="malicious_threshold must be greater"):
        Settings.load()


# --- properties -----------------------------------------------------------------------------

ENGINES = ["CRDF", "Kaspersky", "ESET-NOD32", "BitDefender", "Fortinet"]
TIMES = st.none() | st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2026, 1, 1))
STATUSES = st.sampled_from([OK, OK, OK, OK, NOT_FOUND, *SourceStatus])  # mostly answers


@st.composite
def vt_results(draw: st.DrawFn) -> SourceResult:
    total = draw(st.integers(0, 100))
    malicious = draw(st.integers(0, total))
    suspicious = draw(st.integers(0, total - malicious))
    detections = Detections(
        malicious=malicious,
        suspicious=suspicious,
        total=total,
        flagged_by=draw(st.lists(st.sampled_from(ENGINES), max_size=4)),
    )
    return SourceResult(
        source="virustotal",
        status=draw(STATUSES),
        detections=draw(st.none() | st.just(detections)),
        reputation=draw(st.none() | st.integers(-500, 500)),
        threat_label=draw(st.none() | st.text(max_size=80)),
    )


@st.composite
def otx_results(draw: st.DrawFn) -> SourceResult:
    pulses = [
        Pulse(
            id=str(i),
            name="p",
            adversary=draw(st.none() | st.text(max_size=80)),
            modified=draw(TIMES),
        )
        for i in range(draw(st.integers(0, 4)))
    ]
    return SourceResult(
        source="otx",
        status=draw(STATUSES),
        pulse_count=draw(st.none() | st.integers(0, 500)),
        pulses=pulses,
        malware_families=draw(st.lists(st.text(max_size=80), max_size=3)),
        attack_ids=draw(st.lists(st.sampled_from(["T1071", "T1566"]), max_size=2)),
        allowlisted_by=draw(st.lists(st.sampled_from(["whitelist", "majestic"]), max_size=1)),
    )


@st.composite
def abuse_results(draw: st.DrawFn) -> SourceResult:
    report = AbuseReport(
        confidence=draw(st.integers(0, 100)),
        total_reports=draw(st.integers(0, 1000)),
        distinct_reporters=draw(st.integers(0, 300)),
        last_reported=draw(TIMES),
        is_tor=draw(st.booleans()),
        is_whitelisted=draw(st.none() | st.booleans()),
    )
    return SourceResult(
        source="abuseipdb", status=draw(STATUSES), abuse=draw(st.none() | st.just(report))
    )


SOURCE_MAPS = st.fixed_dictionaries(
    {},
    optional={
        "virustotal": vt_results(),
        "otx": otx_results(),
        "abuseipdb": abuse_results(),
        "ipinfo": st.builds(ipinfo, anycast=st.booleans()),
    },
)
POLICIES = st.sampled_from(
    [
        DEFAULT_POLICY,
        ScoringPolicy(vt_trusted_engines=("Kaspersky",), otx_weight=5, harmless_min_sources=1),
        ScoringPolicy(malicious_threshold=40, suspicious_threshold=10, corroboration_min_sources=1),
    ]
)


@settings(max_examples=200, deadline=None)
@given(sources=SOURCE_MAPS, policy=POLICIES)
def test_any_evidence_gives_a_consistent_bounded_verdict(
    sources: Mapping[str, SourceResult], policy: ScoringPolicy
) -> None:
    """Score and confidence stay in 0..100, the label follows the thresholds, reasons are lines."""
    result = score(IP, sources, policy, now=NOW)
    assert 0 <= result.score <= 100 and 0 <= result.confidence <= 100
    if result.score >= policy.malicious_threshold:
        assert result.label is MALICIOUS
    elif result.score >= policy.suspicious_threshold:
        assert result.label is SUSPICIOUS
    else:
        assert result.label in (HARMLESS, UNKNOWN)
    evidence = [r for name, r in sources.items() if name != "ipinfo" and r.status.answered]
    if result.label is HARMLESS:
        assert len(evidence) >= policy.harmless_min_sources
    if not evidence:
        assert (result.label, result.score, result.confidence) == (UNKNOWN, 0, 0)
    assert all(reason and "\n" not in reason for reason in result.reasons)
    context_free = {name: r for name, r in sources.items() if name != "ipinfo"}
    assert score(IP, context_free, policy, now=NOW).score >= result.score
