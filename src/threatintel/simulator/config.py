"""Simulator configuration: keys, quotas, latency and faults per vendor, the scenario, the clock.

    config = SimulatorConfig(clock=fake_clock)
    config.virustotal.keys = {"vt-key"}                 # None (default): any non-empty key
    config.virustotal.windows = (Window.per_minute(2),)
    config.otx.fault_rate = 0.2                          # changes apply to the next request
    config.ipinfo.latency, config.ipinfo.jitter = 0.1, 0.03   # 100 ms +- 30 ms per answer

The objects are mutable on purpose: a test changes faults or quotas while a server runs, and the
app reads the configuration afresh for every request.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from threatintel.simulator.faults import ALL_FAULTS, FaultKind, fault_kinds
from threatintel.simulator.quota import Window
from threatintel.simulator.scenario import (
    VENDORS,
    Scenario,
    ScenarioError,
    default_scenario_text,
)

# The free tiers, as documented (contracts README §0).
VIRUSTOTAL_WINDOWS = (Window.per_minute(4), Window.per_day(500), Window.per_month(15_500))
OTX_WINDOWS: tuple[Window, ...] = ()  # OTX publishes no limit; use Window.per_hour(n) to add one
ABUSEIPDB_WINDOWS = (Window.per_day(1_000),)
IPINFO_WINDOWS = (Window.per_month(50_000),)


#: The ways VirusTotal's account quota endpoint can answer (``VendorConfig.account_answer``).
ACCOUNT_ANSWERS = ("ok", "unauthorized", "not_found", "error", "garbage")

#: Each service's latency in `threatintel demo`: realistic, so the demo looks like a real run.
DEMO_LATENCY = {"virustotal": 0.08, "otx": 0.12, "abuseipdb": 0.05, "ipinfo": 0.03}


@dataclass(slots=True)
class VendorConfig:
    keys: Collection[str] | None = None  # None: accept any non-empty key
    windows: tuple[Window, ...] = ()
    latency: float = 0.0  # seconds added to every answer
    jitter: float = 0.0  # +- seconds around latency, uniform (benchmarks: 0.1 +- 0.03)
    fault_rate: float = 0.0  # 0..1, the share of eligible requests that fail
    fault_kinds: tuple[FaultKind, ...] = ALL_FAULTS
    retry_after: bool = False  # add Retry-After to 429s (AbuseIPDB always sends it)
    # Per key: windows other than ``windows`` (a paid key's higher quotas).
    key_windows: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)
    # How VirusTotal's /users/{id}/overall_quotas answers: one of ACCOUNT_ANSWERS.
    account_answer: str = "ok"

    def __post_init__(self) -> None:
        if self.keys is not None:
            self.keys = frozenset(self.keys)
        self.fault_kinds = fault_kinds(self.fault_kinds)
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("latency must be >= 0")
        if not 0 <= self.jitter <= self.latency:
            raise ValueError("jitter must be between 0 and latency")
        if self.account_answer not in ACCOUNT_ANSWERS:
            raise ValueError(f"account_answer must be one of {list(ACCOUNT_ANSWERS)}")

    def delay(self, rng: Random) -> float:
        """Seconds to wait before answering: latency, moved by up to +-jitter."""
        if self.jitter == 0:
            return self.latency
        return self.latency + rng.uniform(-self.jitter, self.jitter)

    def windows_for(self, key: str) -> tuple[Window, ...]:
        """The quota windows of ``key``: its own if it has some, else the vendor's."""
        return self.key_windows.get(key, self.windows)

    def accepts(self, key: str | None) -> bool:
        if not key:
            return False
        return self.keys is None or key in self.keys

    def scale_windows(self, factor: float) -> None:
        """Shorten (factor < 1) every quota window, e.g. 0.001 turns a minute into 60 ms."""
        self.windows = tuple(window.scaled(factor) for window in self.windows)


@dataclass(slots=True)
class SimulatorConfig:
    scenario: Scenario = field(default_factory=Scenario.default)
    clock: Callable[[], float] = time.time  # epoch seconds; drives every quota and timestamp
    seed: int = 0  # fault draws
    virustotal: VendorConfig = field(
        default_factory=lambda: VendorConfig(windows=VIRUSTOTAL_WINDOWS)
    )
    otx: VendorConfig = field(default_factory=lambda: VendorConfig(windows=OTX_WINDOWS))
    abuseipdb: VendorConfig = field(default_factory=lambda: VendorConfig(windows=ABUSEIPDB_WINDOWS))
    ipinfo: VendorConfig = field(default_factory=lambda: VendorConfig(windows=IPINFO_WINDOWS))

    def vendor(self, name: str) -> VendorConfig:
        if name not in VENDORS:
            raise KeyError(name)
        config: VendorConfig = getattr(self, name)
        return config

    def vendors(self) -> dict[str, VendorConfig]:
        return {name: self.vendor(name) for name in VENDORS}

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> SimulatorConfig:
        """Scenario and ``[vendors.*]`` settings from a TOML file (None: the packaged demo)."""
        text = default_scenario_text() if path is None else Path(path).read_text("utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"invalid TOML: {exc}") from exc
        config = cls(scenario=Scenario.from_dict(data), **overrides)
        if "seed" in data:
            config.seed = int(data["seed"])
        vendors = data.get("vendors", {})
        if not isinstance(vendors, Mapping) or not set(vendors) <= set(VENDORS):
            raise ScenarioError(f"[vendors] tables must be among {list(VENDORS)}")
        for name, settings in vendors.items():
            _apply_vendor(name, config.vendor(name), settings)
        return config


_VENDOR_KEYS = frozenset({"keys", "latency", "jitter", "fault_rate", "fault_kinds", "retry_after"})


def _apply_vendor(name: str, target: VendorConfig, settings: Any) -> None:
    if not isinstance(settings, Mapping) or not set(settings) <= _VENDOR_KEYS:
        raise ScenarioError(f"[vendors.{name}] accepts only {sorted(_VENDOR_KEYS)}")
    try:
        updated = VendorConfig(
            keys=settings.get("keys", target.keys),
            windows=target.windows,
            latency=float(settings.get("latency", target.latency)),
            jitter=float(settings.get("jitter", target.jitter)),
            fault_rate=float(settings.get("fault_rate", target.fault_rate)),
            fault_kinds=tuple(settings.get("fault_kinds", target.fault_kinds)),
            retry_after=bool(settings.get("retry_after", target.retry_after)),
        )
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"[vendors.{name}]: {exc}") from exc
    for attribute in _VENDOR_KEYS:
        setattr(target, attribute, getattr(updated, attribute))
