"""The cache knows where an answer came from, and keeps the vendor's body for --raw.

Engines share one cache and differ only in their settings, as two CLI runs on one machine do;
the simulator's request log shows which lookups reached upstream.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from support import sim_settings
from threatintel.cache import MemoryCache
from threatintel.cache.answers import decode_answer, encode_answer
from threatintel.engine import Engine
from threatintel.models import Detections, SourceResult, SourceStatus
from threatintel.providers.base import endpoint_identity
from threatintel.simulator import SimulatorServer

S = SourceStatus
IP = "45.142.212.61"  # malicious in the default scenario, known to every source


def _localhost(url: str) -> str:
    """The same simulator, reached by another name: another endpoint as far as a URL goes."""
    return url.replace("://127.0.0.1:", "://localhost:")


async def test_an_answer_from_one_endpoint_is_not_served_for_another(sim: SimulatorServer) -> None:
    """An answer cached from one base URL is not served for another, and is for its own."""
    cache = MemoryCache()
    moved = {f"{name}_base_url": _localhost(url) for name, url in sim.base_urls.items()}
    async with Engine(sim_settings(sim), cache=cache) as first:
        await first.analyze([IP])
    calls = len(sim.log)
    async with Engine(sim_settings(sim, **moved), cache=cache) as elsewhere:
        other = await elsewhere.analyze([IP])
    assert len(sim.log) == 2 * calls
    assert not any(r.cached for r in other.enrichments[0].sources.values())
    async with Engine(sim_settings(sim), cache=cache) as again:
        same = await again.analyze([IP])
    assert len(sim.log) == 2 * calls
    assert all(r.cached for r in same.enrichments[0].sources.values())


async def test_changing_abuseipdb_max_age_misses_the_cache(sim: SimulatorServer) -> None:
    """ABUSEIPDB_MAX_AGE_DAYS changes AbuseIPDB's answer, so a new value asks AbuseIPDB again."""
    cache = MemoryCache()
    async with Engine(sim_settings(sim, abuseipdb_max_age_days=90), cache=cache) as first:
        await first.analyze([IP])
    async with Engine(sim_settings(sim, abuseipdb_max_age_days=30), cache=cache) as second:
        analysis = await second.analyze([IP])
    sources = analysis.enrichments[0].sources
    asked = sim.log.filter(vendor="abuseipdb")
    assert [("maxAgeInDays=30" in r.query) for r in asked] == [False, True]
    assert not sources["abuseipdb"].cached
    assert sources["virustotal"].cached and sources["otx"].cached  # nothing changed for them


async def test_a_bare_404_from_a_wrong_base_url_is_not_served_once_fixed(
    sim: SimulatorServer,
) -> None:
    """A 'not found' cached from a mistyped base URL is not the answer once the URL is fixed."""
    cache = MemoryCache()
    wrong = sim.url + "/no-such-prefix/api/v3"
    async with Engine(sim_settings(sim, virustotal_base_url=wrong), cache=cache) as broken:
        before = await broken.analyze([IP], providers=["virustotal"])
    assert before.enrichments[0].sources["virustotal"].status is S.NOT_FOUND
    async with Engine(sim_settings(sim), cache=cache) as fixed:
        after = await fixed.analyze([IP], providers=["virustotal"])
    result = after.enrichments[0].sources["virustotal"]
    assert result.status is S.OK and not result.cached
    assert result.detections is not None and result.detections.malicious > 0


async def test_an_entry_under_the_old_key_scheme_is_not_served(sim: SimulatorServer) -> None:
    """An answer stored under a v1 key (no endpoint in it) is ignored and asked again."""
    cache = MemoryCache()
    stale = SourceResult(
        source="virustotal",
        status=S.OK,
        message="written by an older version",
        detections=Detections(malicious=0, harmless=70),
    )
    await cache.set(f"ti:v1:virustotal:ipv4:{IP}", stale.model_dump_json().encode(), ttl=3600)
    async with Engine(sim_settings(sim), cache=cache) as engine:
        analysis = await engine.analyze([IP], providers=["virustotal"])
    result = analysis.enrichments[0].sources["virustotal"]
    assert sim.log.count(vendor="virustotal") == 1
    assert not result.cached and result.message != stale.message


async def test_raw_is_answered_from_the_cache(sim: SimulatorServer, tmp_path: Path) -> None:
    """A cached lookup followed by a --raw lookup calls no one and returns the vendor's body."""
    settings = sim_settings(sim, cache_backend="sqlite", cache_dir=tmp_path / "cache")
    async with Engine(settings) as plain:
        first = await plain.analyze([IP])
    calls = len(sim.log)
    async with Engine(settings, include_raw=True) as raw:
        second = await raw.analyze([IP])
    assert len(sim.log) == calls
    assert first.enrichments[0].sources["virustotal"].raw is None
    result = second.enrichments[0].sources["virustotal"]
    assert result.cached
    assert result.raw is not None and result.raw["data"]["id"] == IP
    async with Engine(settings) as plain_again:
        third = await plain_again.analyze([IP])
    assert third.enrichments[0].sources["virustotal"].raw is None  # kept, but only on request


def test_a_stored_answer_round_trips_with_and_without_its_body() -> None:
    """The stored value gives back the result exactly, its body only when asked for."""
    body: dict[str, Any] = {"data": {"id": IP, "note": "ünïcode ✓", "n": [1, 2.5, None]}}
    result = SourceResult(
        source="virustotal",
        status=S.OK,
        fetched_at=datetime(2024, 3, 10, tzinfo=UTC),
        detections=Detections(malicious=3),
        raw=body,
    )
    value = encode_answer(result)
    assert decode_answer(value, with_raw=True) == result
    assert decode_answer(value, with_raw=False) == result.model_copy(update={"raw": None})
    bare = result.model_copy(update={"raw": None})
    assert decode_answer(encode_answer(bare), with_raw=True) == bare


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b'{"source": "virustotal"}',  # not a whole result
        b'{"source":"virustotal","status":"ok"}\nnot zlib',
        b'{"source":"virustotal","status":"ok"}\n' + zlib.compress(b"[1, 2]"),
        b'{"source":"virustotal","status":"ok"}\n' + zlib.compress(b'{"a": 1}')[:-3],
    ],
)
def test_an_unreadable_stored_answer_is_a_value_error(value: bytes) -> None:
    """Anything encode_answer did not write is refused as ValueError, which the pipeline skips."""
    with pytest.raises(ValueError):
        decode_answer(value, with_raw=True)


@pytest.mark.parametrize(
    ("given", "identity"),
    [
        ("HTTPS://WWW.VirusTotal.com:443/api/v3/", "https://www.virustotal.com/api/v3"),
        ("http://127.0.0.1:8900/virustotal/api/v3", "http://127.0.0.1:8900/virustotal/api/v3"),
        ("http://localhost:80/", "http://localhost"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("https://bücher.example/api", "https://xn--bcher-kva.example/api"),
    ],
)
def test_a_base_url_is_normalised_to_one_endpoint(given: str, identity: str) -> None:
    """Spellings of one endpoint (case, default port, trailing slash, IDN) share one identity."""
    assert endpoint_identity(given) == identity


async def test_each_provider_names_its_endpoint_and_parameters(engine: Engine) -> None:
    """Every provider's cache scope is its base URL; AbuseIPDB's adds the report window."""
    for name, provider in engine.providers.items():
        assert provider.cache_scope.startswith(endpoint_identity(engine.settings.base_url(name)))
    assert engine.providers["abuseipdb"].cache_scope.endswith("?maxAgeInDays=90&verbose")
