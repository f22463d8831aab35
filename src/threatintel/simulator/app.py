"""The simulator as one Starlette app: four vendors under their prefixes, plus shared machinery.

    simulator = Simulator(SimulatorConfig(clock=fake_clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator.app)) as client:
        await client.get("http://sim/virustotal/api/v3/ip_addresses/1.1.1.1",
                         headers={"x-apikey": "k"})
    simulator.log.count(vendor="virustotal")

Every request goes through ``Simulator.serve``: latency, then the vendor's handler (auth, quota,
lookup), then fault injection, then one log record. A fault only hits requests that passed auth
and quota, and so were charged: the vendor metered them before its backend failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount

from threatintel.simulator.config import SimulatorConfig
from threatintel.simulator.faults import (
    FaultInjector,
    FaultKind,
    HangResponse,
    Hangs,
    malformed,
    reset,
)
from threatintel.simulator.log import RequestLog, RequestRecord
from threatintel.simulator.quota import QuotaTracker
from threatintel.simulator.scenario import canonical_url


@dataclass(slots=True)
class Outcome:
    """What a vendor handler answered, and what the log and fault injection need to know."""

    response: Response
    key: str | None = None
    key_source: str | None = None
    indicator: str | None = None
    served: bool = False  # passed auth and quota, so it was charged and may be faulted
    note: str | None = None


Handler = Callable[["Simulator", Request], Awaitable[Outcome]]


class VendorModule(Protocol):
    """What each vendor module (virustotal.py, otx.py, ...) provides."""

    NAME: str
    BASE_PATH: str  # the real base URL's path, mounted under /NAME
    SERVER_ERROR_STATUSES: tuple[int, ...]

    def routes(self, simulator: Simulator) -> list[BaseRoute]: ...

    def server_error(self, request: Request, status: int) -> Response: ...


class Simulator:
    """Runtime state (log, quotas, faults, hung requests) around the ASGI ``app``."""

    def __init__(self, config: SimulatorConfig | None = None, *, log: RequestLog | None = None):
        # Imported here: the vendor modules import Outcome and Simulator from this module.
        from threatintel.simulator import abuseipdb, ipinfo, otx, virustotal

        self.config = config if config is not None else SimulatorConfig()
        self.log = log if log is not None else RequestLog()
        # Read the clock through the config so a test may swap it after construction.
        self.quotas = QuotaTracker(clock=lambda: self.config.clock())
        self.faults = FaultInjector(seed=self.config.seed)
        # Latency jitter draws from its own stream so that they never shift the fault draws.
        self._jitter = random.Random(f"{self.config.seed}:jitter")
        self.hangs = Hangs()
        self._urls_lock = threading.Lock()
        self._urls: dict[str, str] = {}
        modules: tuple[VendorModule, ...] = (virustotal, otx, abuseipdb, ipinfo)
        self._modules = {module.NAME: module for module in modules}
        self.app = Starlette(
            routes=[
                Mount(f"/{module.NAME}{module.BASE_PATH}", routes=module.routes(self))
                for module in modules
            ]
        )

    def now(self) -> float:
        return self.config.clock()

    def release_hangs(self) -> None:
        """Free hung requests (thread-safe); later hangs return at once until ``rearm``."""
        self.hangs.release_all()

    def remember_url(self, url: str) -> str:
        """Index a URL under the SHA-256 VirusTotal uses as its id; returns that id."""
        canonical = canonical_url(url)
        url_id = hashlib.sha256(canonical.encode()).hexdigest()
        with self._urls_lock:
            self._urls[url_id] = canonical
        return url_id

    def url_for_id(self, url_id: str) -> str | None:
        """The URL behind a SHA-256 id, if the scenario lists it or a client sent it before."""
        with self._urls_lock:
            known = self._urls.get(url_id)
        if known is not None:
            return known
        for url in self.config.scenario.urls():
            if hashlib.sha256(url.encode()).hexdigest() == url_id:
                return url
        return None

    def endpoint(self, vendor: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.serve(vendor, request, handler)

        return endpoint

    async def serve(self, vendor: str, request: Request, handler: Handler) -> Response:
        vendor_config = self.config.vendor(vendor)
        delay = vendor_config.delay(self._jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        outcome = await handler(self, request)
        fault: FaultKind | None = None
        if outcome.served:
            forced = None
            if outcome.indicator is not None:
                forced = self.config.scenario.spec(outcome.indicator).fault_for(vendor)
            fault = self.faults.decide(
                vendor,
                rate=vendor_config.fault_rate,
                kinds=vendor_config.fault_kinds,
                forced=forced,
                indicator=outcome.indicator,
            )
        response = self._apply(vendor, request, outcome.response, fault)
        self.log.append(
            RequestRecord(
                vendor=vendor,
                method=request.method,
                path=request.url.path,
                query=request.scope.get("query_string", b"").decode("latin-1"),
                headers=_headers(request),
                status=None if fault is FaultKind.HANG else response.status_code,
                fault=fault,
                key=outcome.key,
                key_source=outcome.key_source,
                indicator=outcome.indicator,
                timestamp=self.now(),
                note=outcome.note,
            )
        )
        return response

    def _apply(
        self, vendor: str, request: Request, response: Response, fault: FaultKind | None
    ) -> Response:
        if fault is FaultKind.SERVER_ERROR:
            module = self._modules[vendor]
            status = self.faults.server_error_status(vendor, module.SERVER_ERROR_STATUSES)
            return module.server_error(request, status)
        if fault is FaultKind.RESET:
            return reset(response)
        if fault is FaultKind.MALFORMED:
            return malformed(response)
        if fault is FaultKind.HANG:
            return HangResponse(self.hangs)
        return response


def _headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def build_app(config: SimulatorConfig | None = None) -> Starlette:
    """The ASGI app alone; use ``Simulator`` when a test needs the log or the fault controls."""
    return Simulator(config).app
