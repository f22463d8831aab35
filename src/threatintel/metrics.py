"""Prometheus metrics of one Service (a skeleton; issue 10's observability work fills it in).

metrics = Metrics()                      # its own CollectorRegistry: one per Service
Engine(settings, on_lookup=metrics.on_lookup)
metrics.observe_http("GET", "/api/v1/indicators/{value}", 200, 0.004)
body, content_type = await metrics.exposition(service)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threatintel.lookups import LookupEvent

if TYPE_CHECKING:
    from threatintel.service import Service


class Metrics:
    """The counters and histograms of one Service, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry(auto_describe=True)
        self.lookups = Counter(
            "threatintel_upstream_requests",
            "Provider calls by provider and outcome",
            ["provider", "status"],
            registry=self.registry,
        )

    def on_lookup(self, event: LookupEvent) -> None:
        """The engine's LookupHook: one call per provider answer (cached or not)."""
        self.lookups.labels(event.provider, event.status.value).inc()

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request served (``route`` is the path template, never the raw path)."""

    async def exposition(self, service: Service) -> tuple[bytes, str]:
        """The Prometheus text format of everything, with the gauges read now."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
