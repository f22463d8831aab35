"""ScoringPolicy: every threshold, weight and point of the verdict model, with its default.

    policy = ScoringPolicy(malicious_threshold=80)      # or SCORING__MALICIOUS_THRESHOLD=80

Each field is a named threshold or a number of points that docs/verdicts.md explains; the
settings read them from ``SCORING__<FIELD>`` variables.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

Points = Annotated[float, Field(ge=0, le=100)]
Share = Annotated[float, Field(ge=0, le=1)]
Weight = Annotated[float, Field(ge=0, le=5)]
Count = Annotated[int, Field(ge=0)]


#: The fields given as a comma-separated list or a JSON array.
_LISTS = ("vt_trusted_engines", "abuse_shared_usage_types", "ipinfo_infrastructure_asns")


class ScoringPolicy(BaseModel):
    """Thresholds and weights of the verdict model; each field is ``SCORING__<FIELD>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- labels ---------------------------------------------------------------------------
    malicious_threshold: int = Field(
        70, ge=1, le=100, description="Scores from here up are malicious."
    )
    suspicious_threshold: int = Field(
        30, ge=1, le=99, description="Scores from here up are suspicious."
    )
    harmless_min_sources: int = Field(
        2, ge=1, le=3, description="Clean answers needed to call a low score harmless."
    )
    corroboration_min_sources: int = Field(
        2, ge=1, le=3, description="Moderate sources that may reach malicious without a strong one."
    )
    allowlist_score_cap: int = Field(
        50, ge=0, le=100, description="Highest score when OTX or AbuseIPDB lists it as known-good."
    )

    # --- source weights: multipliers of each source's points; 0 ignores the source --------
    virustotal_weight: Weight = Field(1.0, description="Multiplier of VirusTotal points.")
    otx_weight: Weight = Field(1.0, description="Multiplier of OTX points.")
    abuseipdb_weight: Weight = Field(1.0, description="Multiplier of AbuseIPDB points.")

    # --- VirusTotal -----------------------------------------------------------------------
    vt_min_engines_malicious: int = Field(
        5, ge=1, le=100, description="Malicious engines needed for strong evidence."
    )
    vt_weak_engines: Count = Field(
        2, description="Up to this many malicious engines is weak evidence."
    )
    vt_engine_points: Points = Field(8, description="Points per engine below the strong level.")
    vt_strong_points: Points = Field(70, description="Points at vt_min_engines_malicious.")
    vt_extra_engine_points: Points = Field(1.5, description="Points per engine beyond that.")
    vt_max_points: Points = Field(90, description="Ceiling of the malicious-engine points.")
    vt_suspicious_engine_points: Points = Field(2, description="Points per suspicious engine.")
    vt_suspicious_max_points: Points = Field(10, description="Ceiling of suspicious points.")
    vt_trusted_engines: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Preferred engines (comma-separated or JSON); their detections count more."
    )
    vt_trusted_engine_weight: int = Field(
        3, ge=1, le=100, description="How many engines one trusted engine's detection counts as."
    )
    vt_reputation_benign: int = Field(
        50, description="Community reputation that is benign evidence."
    )
    vt_reputation_malicious: int = Field(
        -50, description="Community reputation that is malice evidence."
    )
    vt_reputation_points: Points = Field(15, description="Points of either reputation.")
    vt_reputation_extra_points: Points = Field(
        0.5, description="Benign points per reputation point beyond vt_reputation_benign."
    )
    vt_reputation_max_points: Points = Field(
        40, description="Ceiling of the benign reputation points."
    )
    vt_popular_rank: Count = Field(
        10_000, description="A popularity rank at or above this (1 = top) vouches; 0 ignores ranks."
    )
    vt_popularity_points: Points = Field(30, description="Benign points of a popular domain.")
    vt_votes_min: int = Field(10, ge=1, description="Community votes needed to count either way.")
    vt_votes_ratio: float = Field(
        3.0, ge=1, le=100, description="How many times the other side's votes a side needs."
    )
    vt_votes_points: Points = Field(10, description="Points of a clear community vote.")
    vt_trusted_publisher_points: Points = Field(
        40, description="Benign points of a file a trusted publisher gave VirusTotal."
    )

    # --- OTX ------------------------------------------------------------------------------
    otx_subject_max_indicators: Count = Field(
        100, description="A pulse with more indicators is about it only if its name names it."
    )
    otx_subject_points: Points = Field(
        25, description="Points of the first pulse about the indicator."
    )
    otx_context_pulse_points: Points = Field(
        0.25, description="Points per pulse that merely lists the indicator."
    )
    otx_context_max_points: Points = Field(5, description="Ceiling of the context-pulse points.")
    otx_pulse_points: Points = Field(
        4, description="Points per further pulse about it, up to otx_pulse_weak_max."
    )
    otx_pulse_weak_max: Count = Field(5, description="Up to this many pulses is weak evidence.")
    otx_extra_pulse_points: Points = Field(1, description="Points per pulse beyond that.")
    otx_max_pulse_points: Points = Field(
        40, description="Ceiling of the points of pulses about it."
    )
    otx_adversary_points: Points = Field(10, description="Points when pulses name an adversary.")
    otx_malware_points: Points = Field(10, description="Points when pulses name malware.")
    otx_attack_points: Points = Field(5, description="Points when pulses list ATT&CK techniques.")
    otx_recent_days: int = Field(365, ge=1, description="Days after which a pulse is stale.")
    otx_stale_factor: Share = Field(0.5, description="Share of OTX points kept when all are stale.")

    # --- AbuseIPDB ------------------------------------------------------------------------
    abuse_confidence_malicious: int = Field(
        75, ge=1, le=100, description="AbuseIPDB confidence for strong evidence."
    )
    abuse_confidence_suspicious: int = Field(
        25, ge=1, le=100, description="AbuseIPDB confidence for moderate evidence."
    )
    abuse_min_reports: Count = Field(5, description="Reports needed for strong evidence.")
    abuse_min_reporters: Count = Field(
        2, description="Distinct reporters needed for strong evidence."
    )
    abuse_recent_days: int = Field(
        30, ge=1, description="Max age in days of the last report for strong."
    )
    abuse_strong_points: Points = Field(70, description="Points of strong AbuseIPDB evidence.")
    abuse_heavy_confidence: int = Field(
        90, ge=1, le=100, description="Confidence of heavy, repeated reporting."
    )
    abuse_heavy_reports: Count = Field(100, description="Reports of heavy, repeated reporting.")
    abuse_heavy_reporters: Count = Field(
        25, description="Distinct reporters of heavy, repeated reporting."
    )
    abuse_heavy_recent_days: int = Field(
        90, ge=1, description="Max age in days of the last report for heavy reporting."
    )
    abuse_heavy_points: Points = Field(85, description="Points of heavy, repeated reporting.")
    abuse_moderate_points: Points = Field(
        35, description="Points of a moderate confidence, or a high one from thin or stale reports."
    )
    abuse_weak_points: Points = Field(10, description="Points of a low confidence with reports.")
    abuse_tor_points: Points = Field(10, description="Points for a Tor exit node.")
    abuse_shared_usage_types: Annotated[tuple[str, ...], NoDecode] = Field(
        ("Content Delivery Network", "Search Engine Spider"),
        description="AbuseIPDB usage types of shared infrastructure (comma-separated or JSON).",
    )
    abuse_shared_usage_points: Points = Field(
        10, description="Benign points of a shared-infrastructure usage type."
    )

    # --- IPinfo: who runs the address -----------------------------------------------------
    ipinfo_anycast_points: Points = Field(
        15, description="Benign points of an anycast network (resolvers, CDNs)."
    )
    ipinfo_infrastructure_asns: Annotated[tuple[int, ...], NoDecode] = Field(
        (13335, 15169, 16625, 20940, 54113, 19281, 36692, 8068, 714, 36459),
        description="Networks of shared front ends: CDNs, resolvers, SaaS (comma-separated).",
    )
    ipinfo_infrastructure_points: Points = Field(
        10, description="Benign points of an address in one of those networks."
    )

    # --- confidence -----------------------------------------------------------------------
    not_configured_weight: Share = Field(
        0.25, description="How much a source without an API key counts against coverage."
    )
    disagreement_penalty: Share = Field(
        0.5, description="Share of confidence lost when the answering sources fully disagree."
    )

    @field_validator(*_LISTS, mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("vt_trusted_engines")
    @classmethod
    def _normalise_engines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.strip() for name in value if name.strip()))

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        pairs = [
            ("malicious_threshold", "suspicious_threshold"),
            ("vt_min_engines_malicious", "vt_weak_engines"),
            ("vt_reputation_benign", "vt_reputation_malicious"),
            ("abuse_confidence_malicious", "abuse_confidence_suspicious"),
        ]
        for high, low in pairs:
            if getattr(self, high) <= getattr(self, low):
                raise ValueError(f"{high} must be greater than {low}")
        if self.abuse_heavy_confidence < self.abuse_confidence_malicious:
            raise ValueError("abuse_heavy_confidence must be at least abuse_confidence_malicious")
        return self


DEFAULT_POLICY = ScoringPolicy()
