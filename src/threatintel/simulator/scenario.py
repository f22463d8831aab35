"""The simulated world: what each indicator value *is* (its truth), from a TOML file or a hash.

    scenario = Scenario.load("scenario.toml")     # or Scenario.default(), or Scenario()
    scenario.spec("45.142.212.61").truth           # Truth.MALICIOUS

File format (every table optional)::

    [defaults]                      # weights for values the file does not list (sum > 0)
    malicious = 0.15
    suspicious = 0.15
    clean = 0.45
    unknown = 0.20
    noisy = 0.05

    [indicators]
    "45.142.212.61" = "malicious"
    "secure-docs-share.net" = { truth = "suspicious", pulse_name = "<script>alert(1)</script>" }
    "185.220.101.4" = { truth = "malicious", fault = "5xx", fault_vendors = ["otx"] }

    [indicators."login-microsoft-verify.com"]     # the long form of one entry
    truth = "malicious"
    adversary = "TA542"                           # OTX pulses: adversary, families, ATT&CK
    malware = ["Emotet"]
    attack_ids = ["T1566", "T1071"]

    [indicators."8.8.8.8"]                        # evidence stated per vendor, see evidence.py
    truth = "noisy"
    vt = { malicious = 1, reputation = 530 }
    ipinfo = { anycast = true, org = "AS15169 Google LLC" }

    [vendors.virustotal]            # read by SimulatorConfig.load, not by Scenario
    latency = 0.05

Values are normalised before lookup (IPs compressed, hashes and domains lower-cased, URLs
canonicalised as VirusTotal does), so a file may list them in any of those spellings. An unlisted
value takes the truth of the recorded contract sample it belongs to, if any, otherwise a bucket
chosen by the SHA-256 of its normalised form: stable across runs and machines.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from threatintel.simulator.evidence import EVIDENCE_KEYS, Evidence, parse_evidence
from threatintel.simulator.faults import FaultKind


class Truth(StrEnum):
    MALICIOUS = "malicious"
    SUSPICIOUS = "suspicious"
    CLEAN = "clean"
    UNKNOWN = "unknown"  # never seen by any source
    NOISY = "noisy"  # benign infrastructure carrying weak false-positive signals


DEFAULT_WEIGHTS: Mapping[Truth, float] = MappingProxyType(
    {
        Truth.MALICIOUS: 0.15,
        Truth.SUSPICIOUS: 0.15,
        Truth.CLEAN: 0.45,
        Truth.UNKNOWN: 0.20,
        Truth.NOISY: 0.05,
    }
)

DEFAULT_SCENARIO_FILE = "scenario.toml"

# The four simulated services, in the order reports list them; also the URL prefixes.
VENDORS: tuple[str, ...] = ("virustotal", "otx", "abuseipdb", "ipinfo")

_HEX = re.compile(r"[0-9a-fA-F]+")
_HASH_LENGTHS = (32, 40, 64)


class ScenarioError(ValueError):
    """The scenario file or table is invalid; the message names the offending entry."""


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """What the simulator believes about one indicator value."""

    truth: Truth
    fault: FaultKind | None = None
    fault_vendors: frozenset[str] | None = None  # None: every vendor
    adversary: str | None = None
    malware: tuple[str, ...] = ()
    attack_ids: tuple[str, ...] = ()
    pulse_name: str | None = None  # attacker-controlled text for report-escaping tests
    evidence: Evidence | None = None  # stated vendor evidence (simulator/evidence.py)

    def fault_for(self, vendor: str) -> FaultKind | None:
        if self.fault is None:
            return None
        if self.fault_vendors is not None and vendor not in self.fault_vendors:
            return None
        return self.fault


def is_hash(value: str) -> bool:
    return len(value) in _HASH_LENGTHS and _HEX.fullmatch(value) is not None


def canonical_url(url: str) -> str:
    """The URL as VirusTotal canonicalises it: lower-case scheme and host, ``/`` for no path."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, "")
    )


def normalise(value: str) -> str:
    """The spelling used as the scenario key for an indicator value."""
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if "://" in text:
        return canonical_url(text)
    if is_hash(text):
        return text.lower()
    if text.upper().startswith("CVE-"):
        return text.upper()
    return text.lower().rstrip(".")


def hash_truth(value: str, weights: Mapping[Truth, float] = DEFAULT_WEIGHTS) -> Truth:
    """The default truth for an unlisted value: a weighted bucket of SHA-256(normalised value)."""
    digest = hashlib.sha256(normalise(value).encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(weights.values())
    running = 0.0
    for truth in Truth:
        running += weights.get(truth, 0.0)
        if point < running:
            return truth
    return Truth.CLEAN


# The recorded contract samples keep a truth that matches what they show, so that serving them
# verbatim stays coherent with the bodies the other vendors generate for the same value.
_MALWARE_FILE = (
    "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c",
    "b7162dfcbcac2724c71c03385abe577e1ab0cd8d",
    "b214da9f6b0d6e6de5090b3f9672defe",
)
_CLEAN_FILE = (
    "ddecc35aa198f401948c73a0d53fd93c4ecb770198ad7db308de026745c56b71",
    "ce8a7e675f0a8c0d45bbd99c49192f7fa5a124d7",
    "f2aafddb98fa8e3cd71b678a42dd9aab",
    "6c5360d41bd2b14b1565f5b18e5c203cf512e493",
    "2eb14920c75d5e73264f77cfa273ad2c",
)
SAMPLE_TRUTHS: Mapping[str, Truth] = MappingProxyType(
    {
        "1.1.1.1": Truth.NOISY,  # vt_ip_malicious.json: 4 engines, reputation 134
        "142.251.220.110": Truth.CLEAN,
        "haiku-os.org": Truth.CLEAN,
        "tucows.com": Truth.NOISY,  # vt_domain_flagged.json: 1 engine
        "http://218.54.47.76/": Truth.SUSPICIOUS,
        "98.136.103.23": Truth.SUSPICIOUS,  # OTX pulses, yet a whitelisted prefix
        "192.0.2.1": Truth.SUSPICIOUS,
        "8.8.88.8": Truth.UNKNOWN,
        "otx.alienvault.com": Truth.CLEAN,
        "http://www.fotoidea.com/sport/4x4_san_ponso/slides/IMG_0068.html": Truth.CLEAN,
        "118.25.6.39": Truth.MALICIOUS,
        "54.240.77.24": Truth.CLEAN,
        "2600:1f18:61c9:6100:42a3:2e94:e60d:1ad1": Truth.CLEAN,
        "172.17.0.17": Truth.CLEAN,
        **dict.fromkeys(_MALWARE_FILE, Truth.MALICIOUS),
        **dict.fromkeys(_CLEAN_FILE, Truth.CLEAN),
    }
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Truth per indicator value; immutable, so swap ``config.scenario`` to change the world."""

    indicators: Mapping[str, IndicatorSpec] = field(default_factory=dict)
    weights: Mapping[Truth, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)

    def __post_init__(self) -> None:
        keyed = {normalise(value): spec for value, spec in self.indicators.items()}
        object.__setattr__(self, "indicators", MappingProxyType(keyed))
        if sum(self.weights.values()) <= 0 or min(self.weights.values(), default=0) < 0:
            raise ScenarioError("default weights must be non-negative and sum to more than 0")

    def spec(self, value: str) -> IndicatorSpec:
        key = normalise(value)
        listed = self.indicators.get(key)
        if listed is not None:
            return listed
        sample = SAMPLE_TRUTHS.get(key)
        return IndicatorSpec(sample if sample is not None else hash_truth(key, self.weights))

    def truth(self, value: str) -> Truth:
        return self.spec(value).truth

    def urls(self) -> tuple[str, ...]:
        """Every URL the scenario lists (canonical), so a bare VT SHA-256 id can be resolved."""
        return tuple(value for value in self.indicators if "://" in value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        indicators = data.get("indicators", {})
        if not isinstance(indicators, Mapping):
            raise ScenarioError("[indicators] must be a table")
        specs = {str(value): _parse_spec(str(value), entry) for value, entry in indicators.items()}
        defaults = data.get("defaults")
        if defaults is None:
            return cls(specs)
        if not isinstance(defaults, Mapping):
            raise ScenarioError("[defaults] must be a table of weights")
        try:
            weights = {Truth(name): float(weight) for name, weight in defaults.items()}
        except (ValueError, TypeError) as exc:
            raise ScenarioError(f"[defaults]: {exc}") from exc
        return cls(specs, MappingProxyType({truth: weights.get(truth, 0.0) for truth in Truth}))

    @classmethod
    def from_toml(cls, text: str) -> Scenario:
        try:
            return cls.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"invalid TOML: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        return cls.from_toml(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def default(cls) -> Scenario:
        """The packaged demo scenario (it covers every value in ``demo_sample()``)."""
        return cls.from_toml(default_scenario_text())


def default_scenario_text() -> str:
    return (
        resources.files("threatintel.simulator").joinpath(DEFAULT_SCENARIO_FILE).read_text("utf-8")
    )


_SPEC_KEYS = frozenset(
    {"truth", "fault", "fault_vendors", "adversary", "malware", "attack_ids", "pulse_name"}
    | EVIDENCE_KEYS
)


def _parse_spec(value: str, entry: Any) -> IndicatorSpec:
    if isinstance(entry, str):
        entry = {"truth": entry}
    if not isinstance(entry, Mapping):
        raise ScenarioError(f"{value!r}: expected a truth string or a table")
    unknown = set(entry) - _SPEC_KEYS
    if unknown:
        raise ScenarioError(f"{value!r}: unknown keys {sorted(unknown)}")
    try:
        truth = Truth(entry.get("truth", ""))
        fault = FaultKind(entry["fault"]) if "fault" in entry else None
        evidence = parse_evidence(entry)
    except ValueError as exc:  # a bad truth or fault name, or an EvidenceError
        raise ScenarioError(f"{value!r}: {exc}") from exc
    vendors = entry.get("fault_vendors")
    if vendors and not set(_strings(value, "fault_vendors", vendors)) <= set(VENDORS):
        raise ScenarioError(f"{value!r}: fault_vendors must be among {list(VENDORS)}")
    return IndicatorSpec(
        truth=truth,
        fault=fault,
        fault_vendors=frozenset(_strings(value, "fault_vendors", vendors)) if vendors else None,
        adversary=_optional_string(value, "adversary", entry.get("adversary")),
        malware=tuple(_strings(value, "malware", entry.get("malware", []))),
        attack_ids=tuple(_strings(value, "attack_ids", entry.get("attack_ids", []))),
        pulse_name=_optional_string(value, "pulse_name", entry.get("pulse_name")),
        evidence=evidence,
    )


def _strings(value: str, name: str, items: Any) -> list[str]:
    if isinstance(items, str) or not isinstance(items, list):
        raise ScenarioError(f"{value!r}: {name} must be a list of strings")
    if not all(isinstance(item, str) for item in items):
        raise ScenarioError(f"{value!r}: {name} must be a list of strings")
    return list(items)


def _optional_string(value: str, name: str, item: Any) -> str | None:
    if item is None or isinstance(item, str):
        return item
    raise ScenarioError(f"{value!r}: {name} must be a string")
