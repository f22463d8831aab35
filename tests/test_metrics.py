"""Prometheus metrics of a Service: real lookups against the simulator, the exposition parsed
with prometheus-client's own parser, numbers compared with what the simulator saw."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from support import TEST_KEYS, VENDOR_NAMES, sim_settings
from threatintel._redaction import fingerprint
from threatintel.jobs import MemoryJobStore
from threatintel.metrics import MAX_ROUTES, OTHER_ROUTE, Metrics
from threatintel.service import Service
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(service: Service) -> tuple[str, Samples]:
    """The exposition's text and its samples by (name, labels)."""
    body, content_type = await service.metrics.exposition(service)
    assert content_type.startswith("text/plain")
    text = body.decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_two_lookups_of_one_ip_count_a_miss_then_a_hit(sim: SimulatorServer) -> None:
    """Looking up one IP twice: one request per provider upstream (in the counter and the
    latency histogram), a miss then a hit per provider, and no key in the text."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        await service.lookup("8.8.8.8")
        await service.lookup("8[.]8[.]8[.]8")
        text, samples = await scrape(service)
    for name in VENDOR_NAMES:
        sent = sim.log.count(vendor=name)
        assert sent == 1, name
        assert (
            value(samples, "threatintel_upstream_requests_total", provider=name, status="ok") == 1
        )
        assert (
            value(samples, "threatintel_upstream_request_duration_seconds_count", provider=name)
            == 1
        )
        assert value(samples, "threatintel_cache_misses_total", provider=name) == 1
        assert value(samples, "threatintel_cache_hits_total", provider=name) == 1
        assert (
            value(samples, "threatintel_lookups_total", provider=name, status="ok", cache="hit")
            == 1
        )
        assert (
            value(samples, "threatintel_lookups_total", provider=name, status="ok", cache="miss")
            == 1
        )
        assert value(samples, "threatintel_circuit_state", provider=name) == 0
        key = fingerprint(TEST_KEYS[name])
        windows = [
            labels for (metric, labels) in samples
            if metric == "threatintel_quota_remaining" and ("provider", name) in labels
        ]  # fmt: skip
        assert windows and all(("key", key) in labels for labels in windows), name
    assert value(samples, "threatintel_jobs_in_progress") == 0
    for secret in TEST_KEYS.values():
        assert secret not in text and secret[:12] not in text
    assert "8.8.8.8" not in text  # indicators never become labels


async def test_a_429_from_the_simulator_is_counted(sim: SimulatorServer) -> None:
    """A vendor's 429 shows as a rate_limited upstream request and in the 429 counter, while
    the quota gauge names the key by its fingerprint only."""
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_minute(1),))
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        await service.analyze(["45.142.212.61", "45.142.212.62"], providers=["virustotal"])
        text, samples = await scrape(service)
    assert sim.log.count(vendor="virustotal", status=429) == 1
    assert value(samples, "threatintel_upstream_429_total", provider="virustotal") == 1
    assert (
        value(
            samples,
            "threatintel_upstream_requests_total",
            provider="virustotal",
            status="rate_limited",
        )
        == 1
    )
    sent = sum(
        count for (metric, labels), count in samples.items()
        if metric == "threatintel_upstream_requests_total" and ("provider", "virustotal") in labels
    )  # fmt: skip
    assert sent == sim.log.count(vendor="virustotal") == 2
    assert value(samples, "threatintel_upstream_retries_total", provider="virustotal") == 0
    assert TEST_KEYS["virustotal"] not in text


async def test_a_retried_request_is_counted(sim: SimulatorServer) -> None:
    """A 5xx retried once (MAX_RETRIES=1) counts one retry, and both attempts as upstream
    requests by their outcome."""
    sim.simulator.faults.fail_next("otx", FaultKind.SERVER_ERROR)
    settings = sim_settings(sim, max_retries=1, retry_backoff_base=0)
    async with Service(settings, store=MemoryJobStore()) as service:
        await service.lookup("45.142.212.61", providers=["otx"])
        _, samples = await scrape(service)
    assert sim.log.count(vendor="otx") == 2
    assert value(samples, "threatintel_upstream_retries_total", provider="otx") == 1
    assert value(samples, "threatintel_upstream_requests_total", provider="otx", status="ok") == 1
    assert sum(
        count for (metric, labels), count in samples.items()
        if metric == "threatintel_upstream_requests_total" and ("provider", "otx") in labels
    ) == 2  # fmt: skip


async def test_jobs_in_progress_follow_the_services_jobs(sim: SimulatorServer) -> None:
    """A submitted job counts as in progress until it has finished."""
    sim.simulator.faults.fail_next("otx", FaultKind.HANG)  # holds the job until released
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        job = await service.submit(["8.8.8.8"])
        _, running = await scrape(service)
        sim.simulator.release_hangs()
        await service.wait(job.id, timeout=30)
        for _ in range(100):  # the task ends, and its done-callback runs, a few turns later
            if service.jobs_running == 0:
                break
            await asyncio.sleep(0)
        _, finished = await scrape(service)
    assert value(running, "threatintel_jobs_in_progress") == 1
    assert value(finished, "threatintel_jobs_in_progress") == 0


async def test_http_requests_are_observed_by_route_template(sim: SimulatorServer) -> None:
    """observe_http labels by method, route template and status; odd methods and routes past
    MAX_ROUTES are folded so labels cannot grow without bound."""
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        metrics = service.metrics
        metrics.observe_http("get", "/api/v1/indicators/{value}", 200, 0.004)
        metrics.observe_http("GET", "/api/v1/indicators/{value}", 200, 0.2)
        metrics.observe_http("BREW", "/health", 418, 0.001)
        for n in range(MAX_ROUTES + 5):
            metrics.observe_http("GET", f"/route/{n}", 404, 0.001)
        _, samples = await scrape(service)
    name = "threatintel_http_request_duration_seconds_count"
    template = {"method": "GET", "route": "/api/v1/indicators/{value}", "status": "200"}
    assert value(samples, name, **template) == 2
    assert value(samples, "threatintel_http_request_duration_seconds_sum", **template) > 0.2
    assert value(samples, name, method="OTHER", route="/health", status="418") == 1
    routes = {dict(labels)["route"] for (metric, labels) in samples if metric == name}
    assert len(routes) == MAX_ROUTES + 1  # the first MAX_ROUTES, then "other"
    assert value(samples, name, method="GET", route=OTHER_ROUTE, status="404") == 7  # 105 - 98


def test_each_metrics_has_a_registry_of_its_own() -> None:
    """Many Metrics in one process neither clash nor share counts (never the global one)."""
    from prometheus_client import REGISTRY

    first, second = Metrics(), Metrics()
    first.observe_http("GET", "/health", 200, 0.001)
    assert first.registry is not second.registry
    assert (
        first.registry.get_sample_value(
            "threatintel_http_request_duration_seconds_count",
            {"method": "GET", "route": "/health", "status": "200"},
        )
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "threatintel_http_request_duration_seconds_count",
            {"method": "GET", "route": "/health", "status": "200"},
        )
        is None
    )
    assert REGISTRY.get_sample_value("threatintel_http_request_duration_seconds_count") is None


async def test_an_open_circuit_shows_in_its_gauge(sim: SimulatorServer) -> None:
    """Two failed calls with CIRCUIT_MIN_CALLS=2 open OTX's circuit: its gauge reads 2
    (open), the others' 0, and the failures are counted by status."""
    sim.config.otx = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.SERVER_ERROR,))
    settings = sim_settings(sim, circuit_min_calls=2, circuit_probe_wait=0)
    async with Service(settings, store=MemoryJobStore()) as service:
        await service.lookup("45.142.212.61", providers=["otx"])
        await service.lookup("45.142.212.62", providers=["otx"])
        _, samples = await scrape(service)
    assert value(samples, "threatintel_circuit_state", provider="otx") == 2
    assert value(samples, "threatintel_circuit_state", provider="virustotal") == 0
    assert (
        value(samples, "threatintel_upstream_requests_total", provider="otx", status="error") == 2
    )
