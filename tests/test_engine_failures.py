"""The engine's own failures stay contained: a bug while scoring one indicator is that
indicator's answer, and an Engine refused at construction leaves nothing of its own open."""

from __future__ import annotations

import gc
import logging
from typing import ClassVar

import httpx
import pytest

from support import sim_settings
from threatintel.cache.layered import LayeredCache
from threatintel.engine import Engine
from threatintel.errors import ConfigError
from threatintel.models import (
    Detections,
    Indicator,
    IndicatorType,
    SourceResult,
    SourceStatus,
    VerdictLabel,
)
from threatintel.providers import Provider
from threatintel.settings import Settings
from threatintel.simulator import SimulatorServer
from threatintel.wiring import build_client, build_providers

#: An engine count no float holds: the model and the cache take it, scoring's arithmetic not.
ABSURD = 10**400


class InflatedVirusTotal:
    """VirusTotal over the simulator, except that for one indicator it claims an absurd
    engine count, as a vendor bug might: valid for the pipeline, fatal to scoring."""

    name: ClassVar[str] = "virustotal"
    title: ClassVar[str] = "VirusTotal"
    supports: ClassVar[frozenset[IndicatorType]] = frozenset(IndicatorType)
    requires_key: ClassVar[bool] = True

    def __init__(self, real: Provider, inflated: str) -> None:
        self.real = real
        self.inflated = inflated

    @property
    def cache_scope(self) -> str:
        return self.real.cache_scope

    async def lookup(self, indicator: Indicator, api_key: str | None) -> SourceResult:
        result = await self.real.lookup(indicator, api_key)
        if indicator.value != self.inflated:
            return result
        absurd = Detections(malicious=ABSURD, total=ABSURD)
        return result.model_copy(update={"detections": absurd})


async def test_a_scoring_failure_is_that_indicators_answer(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug while scoring one indicator gives it an unknown verdict, its sources as they came
    back and one log line, and the rest of the batch is analysed."""
    settings = sim_settings(sim, cache_backend="memory")
    async with build_client(settings, trust_env=False) as client:
        providers: dict[str, Provider] = dict(build_providers(settings, client))
        providers["virustotal"] = InflatedVirusTotal(providers["virustotal"], "45.142.212.61")
        async with Engine(settings, client=client, providers=providers) as engine:
            with caplog.at_level(logging.ERROR, logger="threatintel.engine"):
                analysis = await engine.analyze(["45.142.212.61", "185.220.101.4"])
    broken, fine = analysis.enrichments
    assert broken.verdict.label is VerdictLabel.UNKNOWN
    assert broken.verdict.reasons == ["internal error while scoring"]
    assert broken.sources["virustotal"].detections == Detections(malicious=ABSURD, total=ABSURD)
    assert broken.sources["abuseipdb"].status is SourceStatus.OK
    assert fine.verdict.label is VerdictLabel.MALICIOUS
    assert [r.getMessage() for r in caplog.records] == [
        "scoring an indicator (ipv4) failed unexpectedly (OverflowError)"
    ]


def test_a_refused_redis_url_leaves_no_client_or_cache_open() -> None:
    """An Engine whose quota store refuses REDIS_URL (ConfigError) leaves no HTTP client or
    cache of its own alive and open, even while the error's traceback is kept."""
    # The cache accepts this URL; the quota store's Redis client refuses the option's value.
    url = "redis://127.0.0.1:6379/0?socket_timeout=abc"
    settings = Settings.load(cache_backend="redis", redis_url=url)  # nothing is ever asked
    before = {id(item) for item in gc.get_objects()}
    with pytest.raises(ConfigError) as caught:
        Engine(settings)
    assert "REDIS_URL" in str(caught.value)
    left = [
        item
        for item in gc.get_objects()
        if id(item) not in before
        and (
            (isinstance(item, httpx.AsyncClient) and not item.is_closed)
            or isinstance(item, LayeredCache)
        )
    ]
    assert left == []
