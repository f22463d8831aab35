"""Keys never leak: not in URLs, logs, exceptions, outputs or reports, even when things fail."""

from __future__ import annotations

import logging
import traceback

import pytest
from typer.testing import CliRunner

from support import TEST_KEYS, VENDOR_NAMES, sim_env, sim_settings
from threatintel.cli import app
from threatintel.engine import Engine
from threatintel.errors import ProviderError
from threatintel.indicators import parse_indicator
from threatintel.reports import FORMATS, render
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig, Window

INDICATORS = [
    "45.142.212.61",
    "185.220.101.4",
    "91.240.118.172",
    "2a0d:5600:24:aa::12",
    "cdn-update-check.net",
    "http://45.142.212.61:8080/gate.php?id=77",
    "8a89e1c96867a475f6306aa971c2cce5",
    "77.91.124.55",
    "193.42.33.14",
    "194.26.29.113",
]
FAULTS = (FaultKind.SERVER_ERROR, FaultKind.RESET, FaultKind.MALFORMED, FaultKind.HANG)


def faulting(sim: SimulatorServer) -> None:
    """Every vendor fails often, one rejects our key, one runs out of quota."""
    for name in VENDOR_NAMES:
        setattr(sim.config, name, VendorConfig(fault_rate=0.4, fault_kinds=FAULTS))
    sim.config.ipinfo = VendorConfig(keys={"someone-elses-token"})
    sim.config.abuseipdb = VendorConfig(windows=(Window.per_day(3),), fault_rate=0.3)


def assert_clean(text: str, where: str) -> None:
    for name, key in TEST_KEYS.items():
        assert key not in text, f"{name} key leaked into {where}"
        # A prefix long enough to identify the key counts as a leak too.
        assert key[:20] not in text, f"part of the {name} key leaked into {where}"


async def test_no_key_anywhere_in_a_faulting_run(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With recognisable keys and a faulting simulator, no key shows up in any artefact."""
    faulting(sim)
    caplog.set_level(logging.DEBUG)
    settings = sim_settings(sim, request_timeout=0.5)
    async with Engine(settings, include_raw=True) as engine:
        analysis = await engine.analyze(INDICATORS)
        exceptions: list[str] = []
        for value in INDICATORS[:6]:
            indicator = parse_indicator(value)
            for name, provider in engine.providers.items():
                if indicator.type not in provider.supports:
                    continue
                try:
                    await provider.lookup(indicator, TEST_KEYS[name])
                except ProviderError as exc:
                    exceptions.append("".join(traceback.format_exception(exc)))
    statuses = {r.status.value for e in analysis.enrichments for r in e.sources.values()}
    assert {"error", "auth_failed"} <= statuses, statuses
    assert exceptions, "the faulting scenario should have raised provider errors"
    for text in exceptions:
        assert_clean(text, "an exception traceback")
    for record in caplog.records:
        assert_clean(record.getMessage(), f"a log line from {record.name}")
        if record.exc_info:
            assert_clean("".join(traceback.format_exception(*record.exc_info)), "a logged error")
    for fmt in FORMATS:
        assert_clean(render(analysis, fmt), f"the {fmt} report")
    for enrichment in analysis.enrichments:
        for result in enrichment.sources.values():
            assert_clean(result.model_dump_json(), "a result")
    assert len(sim.log) > 0
    for request in sim.log.records():
        assert_clean(request.path, "a request path")
        assert_clean(request.query, "a request query string")


def test_no_key_in_cli_output(sim: SimulatorServer) -> None:
    """Every CLI output format, and the config command, stays free of keys under faults."""
    faulting(sim)
    env = sim_env(sim, REQUEST_TIMEOUT="0.5")
    runner = CliRunner()
    for args in (
        ["analyze", *INDICATORS[:4]],
        ["analyze", *INDICATORS[4:], "--format", "json", "--raw"],
        ["analyze", *INDICATORS[:3], "--format", "jsonl"],
        ["config"],
        ["config", "--json"],
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        assert_clean(result.output, f"`threatintel {' '.join(args[:2])}` output")
