"""Known-good, popularity and subject signals of the verdict model (issue 7), pure and no I/O."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scoring_builders import (
    HARMLESS,
    MALICIOUS,
    NOW,
    SUSPICIOUS,
    UNKNOWN,
    abuse,
    ipinfo,
    otx,
    verdict,
    vt,
)
from threatintel.models import Indicator, IndicatorType, Pulse
from threatintel.scoring import DEFAULT_POLICY, ScoringPolicy
from threatintel.settings import Settings

IP = Indicator(type=IndicatorType.IPV4, value="203.0.113.9")
DOMAIN = Indicator(type=IndicatorType.DOMAIN, value="github.com", registrable_domain="github.com")
URL = Indicator(
    type=IndicatorType.URL,
    value="https://github.com/someone/tool/releases/download/v1/loader.exe",
    host="github.com",
    registrable_domain="github.com",
)
FILE = Indicator(type=IndicatorType.SHA256, value="b" * 64)


def pulse(name: str, size: int | None, *, days: int = 5, malware: str = "") -> Pulse:
    return Pulse(
        id=name[:24],
        name=name,
        indicator_count=size,
        modified=NOW - timedelta(days=days),
        malware_families=[malware] if malware else [],
    )


CONTEXT = [pulse(f"Sandbox network traffic {i}", 3000, malware="Emotet") for i in range(40)]


# --- VirusTotal -------------------------------------------------------------------------------


def test_a_popular_domain_vouches_and_outweighs_a_few_engines() -> None:
    """A top-ranked domain flagged by three engines is not suspicious, and the rank is a reason."""
    plain = verdict(vt(3), otx(listed=CONTEXT), on=DOMAIN)
    popular = verdict(vt(3, rank=23), otx(listed=CONTEXT), on=DOMAIN)
    assert popular.score < plain.score
    assert popular.label in (HARMLESS, UNKNOWN)
    assert "#23 in VirusTotal's popularity ranks" in popular.reasons


def test_popularity_does_not_count_against_strong_detections() -> None:
    """Twelve engines on a popular (compromised) site stay malicious, and the reason says why."""
    result = verdict(vt(12, rank=500), otx(), on=DOMAIN)
    assert result.label is MALICIOUS
    assert "#500 in VirusTotal's popularity ranks — not counted against strong detections" in (
        result.reasons
    )


def test_a_rank_beyond_the_threshold_or_a_zero_threshold_is_ignored() -> None:
    """Ranks past vt_popular_rank, or with the signal turned off, add nothing."""
    base = verdict(vt(3), on=DOMAIN).score
    assert verdict(vt(3, rank=50_000), on=DOMAIN).score == base
    off = ScoringPolicy(vt_popular_rank=0)
    assert verdict(vt(3, rank=1), on=DOMAIN, policy=off).score == base


@pytest.mark.parametrize(
    ("votes", "change"),
    [((220, 31), -10), ((2, 30), 10), ((5, 4), 0), ((12, 6), 0)],
    ids=["clear-harmless", "clear-malicious", "too-few", "no-clear-side"],
)
def test_community_votes_count_only_when_many_and_clear(
    votes: tuple[int, int], change: int
) -> None:
    """Votes move the score by vt_votes_points only with enough votes and a clear majority."""
    base = verdict(vt(3)).score
    assert verdict(vt(3, votes=votes)).score == base + change


def test_a_trusted_publisher_vouches_for_a_file() -> None:
    """A file VirusTotal knows as goodware from its publisher outweighs two engines."""
    result = verdict(vt(2, publisher="Google LLC"), otx(), on=FILE)
    assert result.label is HARMLESS
    assert result.reasons[0] == "VirusTotal trusted source: Google LLC (goodware)"


# --- OTX --------------------------------------------------------------------------------------


def test_pulses_that_only_list_the_indicator_are_context_without_their_threat_names() -> None:
    """Forty big pulses naming Emotet give a few context points and no malware reason."""
    result = verdict(otx(listed=CONTEXT))
    assert result.score == DEFAULT_POLICY.otx_context_max_points
    assert result.reasons[0] == (
        "in 40 OTX pulses, none about it (each lists over 100 indicators and does not name it)"
        " — context only"
    )
    assert not any("Emotet" in reason for reason in result.reasons)


@pytest.mark.parametrize(
    "about",
    [
        pulse("Qakbot C2", 30, malware="Qakbot"),
        pulse("Qakbot C2 203.0.113.9", 900, malware="Qakbot"),
    ],
    ids=["short-list", "named-in-a-big-list"],
)
def test_a_pulse_about_the_indicator_counts_with_its_threats(about: Pulse) -> None:
    """A short pulse, or a big one whose name names the indicator, is evidence about it."""
    result = verdict(otx(listed=[about, *CONTEXT]), on=IP)
    assert result.label is SUSPICIOUS
    assert result.reasons[0] == "in 1 OTX pulse about it (+40 that only list it); malware Qakbot"


def test_pulses_beyond_the_listed_ones_count_as_context() -> None:
    """OTX lists at most some pulses: the unlisted rest of the count never adds evidence."""
    listed = verdict(otx(listed=[pulse("Qakbot C2", 30)]))
    counted = verdict(otx(listed=[pulse("Qakbot C2", 30)], count=300))
    assert counted.score == listed.score


def test_a_domain_allowlist_vouches_for_a_url_but_caps_nothing() -> None:
    """Strong detections of a URL on an allowlisted code-hosting domain stay malicious."""
    result = verdict(
        vt(9),
        otx(listed=[pulse("Stealer on GitHub releases", 10)], allowlisted_by=("majestic",)),
        on=URL,
    )
    assert result.label is MALICIOUS
    assert "OTX lists its domain as known-good (majestic)" in result.reasons
    assert not any(reason.startswith("score capped") for reason in result.reasons)
    weak = verdict(
        vt(3), otx(listed=[pulse("x", 10)], allowlisted_by=("majestic",)), abuse(), on=URL
    )
    assert weak.score < DEFAULT_POLICY.malicious_threshold


# --- AbuseIPDB --------------------------------------------------------------------------------


def test_heavy_reporting_is_malicious_even_when_the_last_report_is_weeks_old() -> None:
    """96% from 280 reports by 88 users five weeks ago is strong; from 20 reports it is not."""
    heavy = verdict(vt(1), otx(), abuse(96, 280, 88, days_ago=40))
    assert heavy.label is MALICIOUS
    assert heavy.reasons[0].endswith("— heavy, repeated reporting")
    thin = verdict(vt(1), otx(), abuse(96, 20, 9, days_ago=40))
    assert thin.label is SUSPICIOUS


def test_heavy_reporting_outweighs_a_cdn_usage_type() -> None:
    """A shared usage type lowers the score, but heavy reporting still makes it malicious."""
    result = verdict(vt(0), otx(), abuse(100, 455, 121, usage="Content Delivery Network"))
    assert result.label is MALICIOUS
    assert "AbuseIPDB usage type: Content Delivery Network — shared infrastructure" in (
        result.reasons
    )


def test_heavy_thresholds_are_configurable() -> None:
    """Raising the reporters needed for heavy reporting turns the same answer into plain strong."""
    policy = ScoringPolicy(abuse_heavy_reporters=500)
    result = verdict(vt(0), otx(), abuse(100, 455, 121), policy=policy)
    assert result.score == policy.abuse_strong_points


# --- IPinfo -----------------------------------------------------------------------------------


def test_anycast_and_a_front_end_operator_vouch_for_an_address() -> None:
    """An anycast Cloudflare address with resolver noise is not flagged; both are reasons."""
    noise = [vt(3, reputation=20), otx(listed=CONTEXT), abuse(4, 9, 7)]
    without = verdict(*noise)
    result = verdict(*noise, ipinfo("Cloudflare, Inc.", anycast=True, asn=13335))
    assert without.label is SUSPICIOUS
    assert result.label in (HARMLESS, UNKNOWN)
    assert "anycast network (IPinfo) — shared infrastructure" in result.reasons
    assert "IPinfo: AS13335 Cloudflare, Inc. runs shared front ends (CDN, resolvers, SaaS)" in (
        result.reasons
    )


def test_a_rented_cloud_address_gets_no_benefit_of_the_doubt() -> None:
    """An address in an ordinary cloud network (not anycast, not a front end) gains nothing."""
    noise = [vt(3), otx(listed=[pulse("SSH scanners 203.0.113.9", 500)]), abuse(40, 30, 12)]
    assert (
        verdict(*noise, ipinfo("Amazon.com, Inc.", anycast=False, asn=14618), on=IP).score
        == verdict(*noise, on=IP).score
    )


def test_list_settings_accept_comma_separated_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """SCORING__IPINFO_INFRASTRUCTURE_ASNS and the usage types read as comma-separated lists."""
    monkeypatch.setenv("SCORING__IPINFO_INFRASTRUCTURE_ASNS", "13335, 15169")
    monkeypatch.setenv("SCORING__ABUSE_SHARED_USAGE_TYPES", "Content Delivery Network,Reserved")
    policy = Settings.load().scoring
    assert policy.ipinfo_infrastructure_asns == (13335, 15169)
    assert policy.abuse_shared_usage_types == ("Content Delivery Network", "Reserved")
