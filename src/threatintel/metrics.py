"""Prometheus metrics of one Service, in a registry of its own (never the global REGISTRY:
tests and embedders build many Services in one process).

    metrics = Metrics()
    Engine(settings, on_lookup=metrics.on_lookup, on_call=metrics.on_call)
    metrics.observe_http("GET", "/api/v1/indicators/{value}", 200, 0.004)
    body, content_type = await metrics.exposition(service)

Where each number comes from, and why:

- Per upstream call (``on_call``, one event per request sent, retries included; cache hits
  and callers sharing another's flight make none): ``threatintel_upstream_requests_total``
  {provider, status} and the latency histogram ``threatintel_upstream_request_duration_seconds``
  {provider}. Only the pipeline sees each attempt and its own duration (quota waits excluded).
- Per answer (``on_lookup``): ``threatintel_lookups_total`` {provider, status, cache}: what
  callers got, from the cache or not, failures and pending included.
- Read from ``engine.stats`` at scrape time: cache hits and misses, 429s, retries, coalesced
  lookups. The pipeline counts these already (``threatintel quota`` shows them); exporting
  its counters keeps one source of truth instead of a second count that could drift, costs
  nothing per lookup, and is right for an engine handed to the Service too.
- Gauges read at scrape time: circuit state, quota left per key fingerprint and window
  (``engine.quota()``: fingerprints only, never keys), jobs running in this process.
- HTTP (``observe_http``): ``threatintel_http_request_duration_seconds`` {method, route,
  status}, by route TEMPLATE: a raw path would put indicators in labels and grow without bound.

Circuit state encoding (``threatintel_circuit_state``): 0 closed, 1 half-open, 2 open.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from threatintel.lookups import LookupEvent, UpstreamCall
from threatintel.models import SourceStatus

if TYPE_CHECKING:
    from prometheus_client import Counter
    from prometheus_client.metrics_core import Metric

    from threatintel.lookups import ProviderQuota
    from threatintel.pipeline import SourceStats
    from threatintel.service import Service

#: Buckets of the upstream latency histogram (seconds): vendors answer in 0.05-2 s, a
#: timeout takes REQUEST_TIMEOUT (30 s by default).
UPSTREAM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets of the HTTP latency histogram: a warm lookup takes a few milliseconds, an analysis
#: up to its deadline.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Circuit states as numbers (a gauge holds a number; documented in the README).
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: Routes beyond this many distinct ones are counted as OTHER_ROUTE: a caller passing raw
#: paths by mistake cannot grow the registry without bound.
MAX_ROUTES = 100
OTHER_ROUTE = "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The counters, histograms and scrape-time gauges of one Service."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.upstream_requests = Counter(
            "threatintel_upstream_requests",
            "Requests sent to providers, by provider and outcome (retries count each)",
            ["provider", "status"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "threatintel_upstream_request_duration_seconds",
            "Duration of requests sent to providers (cache hits and quota waits excluded)",
            ["provider"],
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.lookups = Counter(
            "threatintel_lookups",
            "Answers given per provider, by status and whether the cache answered",
            ["provider", "status", "cache"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "threatintel_http_request_duration_seconds",
            "HTTP requests served, by method, route template and status",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self._routes: set[str] = set()
        self._answers: dict[tuple[str, SourceStatus, bool], Counter] = {}
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)

    def on_lookup(self, event: LookupEvent) -> None:
        """The engine's LookupHook: one call per provider answer (cached or not)."""
        # On every warm answer: the labelled child is looked up once, not per call.
        key = (event.provider, event.status, event.cached)
        child = self._answers.get(key)
        if child is None:
            cache = "hit" if event.cached else "miss"
            child = self._answers[key] = self.lookups.labels(
                event.provider, event.status.value, cache
            )
        child.inc()

    def on_call(self, call: UpstreamCall) -> None:
        """The pipelines' CallHook: one call per request sent upstream."""
        self.upstream_requests.labels(call.provider, call.status.value).inc()
        self.upstream_latency.labels(call.provider).observe(call.seconds)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request served (``route`` is the path template, never the raw path)."""
        method = method.upper() if method.upper() in HTTP_METHODS else "OTHER"
        if route not in self._routes:
            if len(self._routes) >= MAX_ROUTES:
                route = OTHER_ROUTE
            else:
                self._routes.add(route)
        self.http_latency.labels(method, route, str(int(status))).observe(seconds)

    async def exposition(self, service: Service) -> tuple[bytes, str]:
        """The Prometheus text format of everything, with the gauges read now."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        engine = service.engine
        quotas = await engine.quota()
        depth = await service.queue_depth()
        # No await from here to generate_latest: a concurrent scrape cannot interleave.
        self._snapshot.take(engine.stats, quotas, service.jobs_running, depth)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Snapshot:
    """A custom collector: what the engine counts and holds, as read at the last scrape."""

    #: (metric name, help, SourceStats attribute) of the counters exported from engine.stats.
    COUNTERS = (
        ("threatintel_cache_hits", "Lookups the cache answered", "cache_hits"),
        ("threatintel_cache_misses", "Lookups the cache could not answer", "cache_misses"),
        ("threatintel_upstream_429", "429 (too many requests) answers from providers", "throttled"),
        ("threatintel_upstream_retries", "Upstream attempts retried after a failure", "retries"),
        (
            "threatintel_coalesced_lookups",
            "Lookups that shared another caller's request in flight",
            "coalesced",
        ),
    )

    def __init__(self) -> None:
        self._stats: dict[str, SourceStats] = {}
        self._quotas: list[ProviderQuota] = []
        self._jobs = 0
        self._depth: int | None = None

    def take(
        self,
        stats: dict[str, SourceStats],
        quotas: list[ProviderQuota],
        jobs: int,
        depth: int | None = None,
    ) -> None:
        self._stats, self._quotas, self._jobs, self._depth = stats, quotas, jobs, depth

    def describe(self) -> list[Any]:
        return []  # names known only at scrape; nothing here clashes with the others

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, documentation, attribute in self.COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=["provider"])
            for provider, stats in self._stats.items():
                counter.add_metric([provider], getattr(stats, attribute))
            yield counter
        circuit = GaugeMetricFamily(
            "threatintel_circuit_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            labels=["provider"],
        )
        remaining = GaugeMetricFamily(
            "threatintel_quota_remaining",
            "Requests left per provider, key fingerprint and quota window",
            labels=["provider", "key", "window"],
        )
        limit = GaugeMetricFamily(
            "threatintel_quota_limit",
            "Requests allowed per provider, key fingerprint and quota window",
            labels=["provider", "key", "window"],
        )
        for quota in self._quotas:
            circuit.add_metric([quota.provider], CIRCUIT_STATES.get(quota.breaker.value, 2))
            for key in quota.keys:
                for window in key.windows:
                    labels = [quota.provider, key.key, window.window]
                    remaining.add_metric(labels, window.remaining)
                    limit.add_metric(labels, window.limit)
        yield circuit
        yield remaining
        yield limit
        jobs = GaugeMetricFamily("threatintel_jobs_in_progress", "Jobs running in this process")
        jobs.add_metric([], self._jobs)
        yield jobs
        if self._depth is not None:  # Redis mode: the shared queue, the same on every instance
            depth = GaugeMetricFamily(
                "threatintel_job_queue_depth",
                "Job chunks on the shared queue not finished yet (waiting or running)",
            )
            depth.add_metric([], self._depth)
            yield depth
