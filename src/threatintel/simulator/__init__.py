"""A faithful local simulator of VirusTotal v3, OTX v1, AbuseIPDB v2 and IPinfo (tests, demos).

    with SimulatorServer() as sim:                       # 127.0.0.1, a free port
        sim.base_urls["virustotal"]                      # http://127.0.0.1:PORT/virustotal/api/v3

One Starlette app serves each vendor's paths, auth headers, bodies, errors and quotas as recorded
in the wire contracts, under ``/virustotal``, ``/otx``, ``/abuseipdb`` and ``/ipinfo``. What an
indicator *is* comes from a ``Scenario`` (``scenario.toml`` by default); bodies are built from the
recorded samples in ``samples/``.
"""

from __future__ import annotations

from importlib import resources

from threatintel.simulator.app import Simulator, build_app
from threatintel.simulator.config import SimulatorConfig, VendorConfig
from threatintel.simulator.faults import FaultKind
from threatintel.simulator.log import RequestLog, RequestRecord
from threatintel.simulator.quota import ManualClock, Window
from threatintel.simulator.scenario import VENDORS, IndicatorSpec, Scenario, ScenarioError, Truth
from threatintel.simulator.server import SimulatorServer, serve

DEMO_SAMPLE_FILE = "demo_sample.txt"


def demo_sample() -> str:
    """The demo input: about fifty indicators pasted the way an analyst would paste them."""
    return resources.files("threatintel.simulator").joinpath(DEMO_SAMPLE_FILE).read_text("utf-8")


__all__ = [
    "VENDORS",
    "FaultKind",
    "IndicatorSpec",
    "ManualClock",
    "RequestLog",
    "RequestRecord",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "SimulatorConfig",
    "SimulatorServer",
    "Truth",
    "VendorConfig",
    "Window",
    "build_app",
    "demo_sample",
    "serve",
]
