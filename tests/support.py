"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from threatintel.settings import Settings
from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig

VENDOR_NAMES = ("virustotal", "otx", "abuseipdb", "ipinfo")

#: Recognisable fake keys: the secrets tests look for them everywhere.
TEST_KEYS = {
    "virustotal": "VT-SECRET-KEY-0123456789abcdef0123456789abcdef",
    "otx": "OTX-SECRET-KEY-fedcba9876543210fedcba9876543210",
    "abuseipdb": "ABUSE-SECRET-KEY-00112233445566778899aabbccddeeff",
    "ipinfo": "IPINFO-SECRET-TOKEN-a1b2c3d4e5f6",
}


def quiet_config() -> SimulatorConfig:
    """The simulator with no quotas, no faults and any key accepted: tests add what they need."""
    config = SimulatorConfig()
    for name in VENDOR_NAMES:
        setattr(config, name, VendorConfig())
    return config


def sim_settings(sim: SimulatorServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {}
    for name in VENDOR_NAMES:
        values[f"{name}_base_url"] = sim.base_urls[name]
        values[f"{name}_api_key"] = TEST_KEYS[name]
    values["request_timeout"] = 5.0
    return Settings.load(**(values | overrides))
