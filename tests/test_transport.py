"""The engine's HTTP transport (aiohttp under httpx's interface) reports failures as httpx does,
and a run announcing a handful of indicators gets httpx's own transport instead.

providers/base.py reads httpx's exception classes to tell a request that never left the
machine (refunded) from one the vendor may have counted (charged); these checks drive the
engine's own client against the simulator's faults over loopback.
"""

from __future__ import annotations

import httpx
import pytest

from support import sim_settings
from threatintel._transport import AiohttpClient, HttpcoreClient
from threatintel.engine import Engine, ProviderQuota
from threatintel.errors import ConfigError
from threatintel.models import SourceStatus
from threatintel.settings import Settings
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig
from threatintel.wiring import SMALL_RUN, build_client

IP = "45.142.212.61"
RETRYING = {"max_retries": 3, "retry_backoff_base": 0, "retry_backoff_cap": 0}


def spent(report: list[ProviderQuota], provider: str) -> list[int]:
    (row,) = [q for q in report if q.provider == provider]
    return [window.used for key in row.keys for window in key.windows]


async def test_the_engine_client_is_the_aiohttp_transport(sim: SimulatorServer) -> None:
    """Engine.from_settings builds its client on aiohttp, and a lookup through it succeeds."""
    async with Engine(sim_settings(sim, cache_backend="memory")) as engine:
        analysis = await engine.analyze([IP], providers=["virustotal"])
        assert isinstance(engine.client, AiohttpClient)
    assert analysis.enrichments[0].sources["virustotal"].status.answered


@pytest.mark.parametrize(
    ("announced", "kind"),
    [(1, HttpcoreClient), (SMALL_RUN, HttpcoreClient), (SMALL_RUN + 1, AiohttpClient)],
)
async def test_a_handful_of_lookups_gets_httpx_own_transport(
    sim: SimulatorServer, announced: int, kind: type[httpx.AsyncClient]
) -> None:
    """Up to SMALL_RUN indicators announced up front get httpx's own pool, more get aiohttp's,
    and a lookup through either succeeds."""
    settings = sim_settings(sim, cache_backend="memory")
    async with (
        build_client(settings, indicators=announced) as client,
        Engine(settings, client=client) as engine,
    ):
        analysis = await engine.analyze([IP], providers=["virustotal"])
    assert type(client) is kind
    assert analysis.enrichments[0].sources["virustotal"].status.answered


@pytest.mark.parametrize("announced", [1, None])
def test_a_socks_proxy_is_refused_whatever_the_run_size(
    monkeypatch: pytest.MonkeyPatch, announced: int | None
) -> None:
    """A SOCKS proxy, which aiohttp cannot use, is a ConfigError for small runs too."""
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:9")
    with pytest.raises(ConfigError, match="unsupported proxy scheme"):
        build_client(Settings.load(), indicators=announced)


async def test_a_reset_mid_answer_stays_charged_on_every_try(sim: SimulatorServer) -> None:
    """A connection broken after the request was sent is a failure the vendor may have counted."""
    sim.config.virustotal = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.RESET,))
    settings = sim_settings(sim, cache_backend="sqlite", **RETRYING)
    async with Engine(settings) as engine:
        analysis = await engine.analyze([IP], providers=["virustotal"])
        after = await engine.quota()
    result = analysis.enrichments[0].sources["virustotal"]
    assert result.status is SourceStatus.ERROR
    assert sim.log.count(vendor="virustotal") == 4
    assert spent(after, "virustotal") == [4, 4, 4]


async def test_a_hung_answer_is_a_read_timeout(sim: SimulatorServer) -> None:
    """An answer that never comes is httpx's ReadTimeout (sent), not a connect timeout."""
    sim.config.virustotal = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.HANG,))
    settings = sim_settings(sim, cache_backend="memory", request_timeout=0.3)
    async with Engine(settings) as engine:
        url = f"{sim.base_urls['virustotal']}/ip_addresses/{IP}"
        request = engine.client.build_request("GET", url, headers={"x-apikey": "k"})
        try:
            await engine.client.send(request)
        except httpx.TimeoutException as exc:
            error: Exception = exc
        else:  # pragma: no cover - the assertion below reports it
            error = AssertionError("no timeout")
    assert type(error) is httpx.ReadTimeout
