"""The result types every door (CLI, MCP, HTTP, reports) speaks.

All models are frozen Pydantic v2 models: the engine builds them once and nobody mutates them
afterwards, so they can be cached, shared between coroutines and rendered in any order.

    Analysis                       one call of Engine.analyze()
    ├── enrichments: [Enrichment]  one per distinct, normalised indicator, in input order
    │   ├── indicator: Indicator
    │   ├── sources: {name: SourceResult}   one per provider, always, with a status
    │   └── verdict: Verdict                score, confidence and the reasons behind them
    └── rejected: [Rejected]       what looked like an indicator but was skipped, and why
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IndicatorType(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DOMAIN = "domain"
    URL = "url"
    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"
    # Recognised so they are reported as found-but-not-queried instead of dropped silently.
    EMAIL = "email"
    CVE = "cve"
    ASN = "asn"
    CIDR = "cidr"


QUERYABLE_TYPES: frozenset[IndicatorType] = frozenset(
    {
        IndicatorType.IPV4,
        IndicatorType.IPV6,
        IndicatorType.DOMAIN,
        IndicatorType.URL,
        IndicatorType.MD5,
        IndicatorType.SHA1,
        IndicatorType.SHA256,
    }
)
IP_TYPES: frozenset[IndicatorType] = frozenset({IndicatorType.IPV4, IndicatorType.IPV6})
HASH_TYPES: frozenset[IndicatorType] = frozenset(
    {IndicatorType.MD5, IndicatorType.SHA1, IndicatorType.SHA256}
)


class Indicator(_Frozen):
    """A classified, normalised indicator. Two indicators are the same iff type and value are."""

    type: IndicatorType
    value: str = Field(
        description="Normalised value: refanged, lower-cased host/hash, canonical URL."
    )
    registrable_domain: str | None = Field(
        default=None,
        description="For domains and URL hosts: the registrable part per the public suffix list.",
    )
    host: str | None = Field(default=None, description="For URLs: the host part (name or IP).")

    @property
    def queryable(self) -> bool:
        return self.type in QUERYABLE_TYPES

    def __str__(self) -> str:
        return self.value


class Rejected(_Frozen):
    """Something that looked like an indicator but was not used, and why."""

    candidate: str
    reason: str


class Extraction(_Frozen):
    """Indicators found in free text (first appearance order, no duplicates) and the rejects."""

    indicators: list[Indicator] = Field(default_factory=list)
    rejected: list[Rejected] = Field(default_factory=list)


class SourceStatus(StrEnum):
    """What happened when one source was asked about one indicator. Failures are data."""

    OK = "ok"
    NOT_FOUND = "not_found"
    NOT_APPLICABLE = "not_applicable"
    NOT_QUERIED_PRIVATE = "not_queried_private"
    NOT_CONFIGURED = "not_configured"
    QUOTA_EXHAUSTED = "quota_exhausted"
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    TIMEOUT = "timeout"
    ERROR = "error"
    CIRCUIT_OPEN = "circuit_open"
    #: Still waiting for quota or upstream at the caller's deadline: neither an answer nor a
    #: failure. The lookup goes on and its answer is cached; asking again later fills the gap.
    PENDING = "pending"

    @property
    def answered(self) -> bool:
        """The source gave a real answer (intel or a definite "never heard of it")."""
        return self in (SourceStatus.OK, SourceStatus.NOT_FOUND)

    @property
    def failed(self) -> bool:
        """The source should have answered but could not: this lowers confidence."""
        return self in _FAILED


_FAILED = frozenset(
    {
        SourceStatus.QUOTA_EXHAUSTED,
        SourceStatus.RATE_LIMITED,
        SourceStatus.AUTH_FAILED,
        SourceStatus.TIMEOUT,
        SourceStatus.ERROR,
        SourceStatus.CIRCUIT_OPEN,
    }
)


class Detections(_Frozen):
    """Multi-engine scan counts (VirusTotal last_analysis_stats)."""

    malicious: int = 0
    suspicious: int = 0
    harmless: int = 0
    undetected: int = 0
    total: int = 0
    flagged_by: list[str] = Field(
        default_factory=list, description="Engines whose category was malicious or suspicious."
    )


class Pulse(_Frozen):
    """One OTX pulse that mentions the indicator. Names and tags are attacker-influenced text."""

    id: str
    name: str
    adversary: str | None = None
    malware_families: list[str] = Field(default_factory=list)
    attack_ids: list[str] = Field(default_factory=list, description="ATT&CK technique ids (T1071).")
    tags: list[str] = Field(default_factory=list)
    tlp: str | None = None
    created: datetime | None = None
    modified: datetime | None = None
    indicator_count: int | None = Field(
        default=None, description="Indicators in the pulse: a big list only mentions this one."
    )


class Votes(_Frozen):
    """Community votes (VirusTotal total_votes)."""

    harmless: int = 0
    malicious: int = 0


class AbuseReport(_Frozen):
    """AbuseIPDB /check essentials."""

    confidence: int = Field(ge=0, le=100)
    total_reports: int = 0
    distinct_reporters: int = 0
    last_reported: datetime | None = None
    usage_type: str | None = None
    isp: str | None = None
    domain: str | None = None
    is_tor: bool = False
    is_whitelisted: bool | None = None
    is_public: bool | None = None


class Geo(_Frozen):
    """Where an address lives and who runs it."""

    city: str | None = None
    region: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2.")
    asn: int | None = None
    organization: str | None = None
    network: str | None = None
    hostname: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    anycast: bool = False


class SourceResult(_Frozen):
    """One provider's answer about one indicator: a status plus whatever it knew."""

    source: str
    status: SourceStatus
    message: str | None = Field(default=None, description="One safe line; never a key or a body.")
    fetched_at: datetime = Field(default_factory=utcnow)
    retry_after: float | None = Field(default=None, description="Seconds until worth asking again.")
    reset_at: datetime | None = Field(default=None, description="When an exhausted quota resets.")
    cached: bool = False
    cache_age: float | None = Field(
        default=None, description="Seconds since the answer was fetched."
    )
    link: str | None = Field(default=None, description="The vendor's GUI page for this indicator.")

    detections: Detections | None = None
    reputation: int | None = None
    votes: Votes | None = None
    popularity_rank: int | None = Field(
        default=None, description="Best rank in the source's popularity lists; 1 = most popular."
    )
    trusted_publisher: str | None = Field(
        default=None, description="Who vouches for a file in the source's trusted-source programme."
    )
    tags: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    threat_label: str | None = None
    pulse_count: int | None = None
    pulses: list[Pulse] = Field(default_factory=list)
    adversaries: list[str] = Field(default_factory=list)
    malware_families: list[str] = Field(default_factory=list)
    attack_ids: list[str] = Field(default_factory=list)
    allowlisted_by: list[str] = Field(
        default_factory=list, description="Known-good lists the source says it is on."
    )
    abuse: AbuseReport | None = None
    geo: Geo | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    truncated: dict[str, int] = Field(
        default_factory=dict,
        description="Entries left out of a capped list, by field (flagged_by, pulses, tags...).",
    )
    raw: dict[str, Any] | None = Field(default=None, description="The vendor body, on request.")


class VerdictLabel(StrEnum):
    MALICIOUS = "malicious"
    SUSPICIOUS = "suspicious"
    HARMLESS = "harmless"
    UNKNOWN = "unknown"


class Verdict(_Frozen):
    """The merged judgement, with the reasons that produced it."""

    label: VerdictLabel
    score: int = Field(ge=0, le=100, description="0 = clean evidence, 100 = overwhelming malice.")
    confidence: int = Field(ge=0, le=100, description="How much evidence stands behind the score.")
    reasons: list[str] = Field(default_factory=list)


class Enrichment(_Frozen):
    """Everything known about one indicator."""

    indicator: Indicator
    inputs: list[str] = Field(default_factory=list, description="The raw spellings that led here.")
    sources: dict[str, SourceResult] = Field(default_factory=dict)
    verdict: Verdict


class AttackRef(_Frozen):
    """An ATT&CK object named in the evidence: a group, software or technique."""

    attack_id: str = Field(description="ATT&CK id: G0032, S0367, T1071.001.")
    name: str
    stix_id: str | None = Field(default=None, description="The object's id in the ATT&CK bundle.")


class Evidence(_Frozen):
    """One observation tying an indicator to an ATT&CK object, and where it came from."""

    indicator: str = Field(description="The normalised indicator value.")
    source: str = Field(description="Provider name: otx, virustotal.")
    kind: str = Field(description="adversary | malware_family | technique | threat_label | tag")
    value: str = Field(description="The upstream text that matched (attacker-influenced).")
    detail: str | None = Field(default=None, description="E.g. the OTX pulse name.")


class GroupCandidate(_Frozen):
    """An ATT&CK group the evidence points to, with the indicators that point there."""

    group: AttackRef
    aliases: list[str] = Field(default_factory=list)
    confidence: int = Field(ge=0, le=100)
    reasons: list[str] = Field(default_factory=list)
    indicators: list[str] = Field(default_factory=list, description="Only those with evidence.")
    evidence: list[Evidence] = Field(default_factory=list)
    software: list[AttackRef] = Field(default_factory=list)
    techniques: list[AttackRef] = Field(default_factory=list)


class Attribution(_Frozen):
    """Evidence-based attribution of a batch, grounded in a bundled ATT&CK release."""

    attack_version: str = Field(description="The ATT&CK release the mapping used, e.g. 18.1.")
    summary: str = Field(description='"insufficient evidence" is a valid, common answer.')
    groups: list[GroupCandidate] = Field(default_factory=list)
    software: list[AttackRef] = Field(default_factory=list, description="Malware/tools seen.")
    techniques: list[AttackRef] = Field(default_factory=list, description="Techniques seen.")
    unmatched: list[str] = Field(
        default_factory=list, description="Names in the evidence that match no ATT&CK object."
    )

    @property
    def sufficient(self) -> bool:
        return bool(self.groups)


#: Bumped when the JSON output changes incompatibly; docs/schema/ holds one schema per version.
SCHEMA_VERSION = "1.0"


class Analysis(_Frozen):
    """The outcome of one Engine.analyze() call."""

    schema_version: Literal["1.0"] = Field(
        default="1.0", description="Version of this JSON layout (docs/schema/)."
    )
    enrichments: list[Enrichment] = Field(default_factory=list)
    rejected: list[Rejected] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list, description="Sources consulted.")
    attribution: Attribution | None = Field(
        default=None, description="Set by attribution.attribute(); None when not computed."
    )
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime = Field(default_factory=utcnow)

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()
