"""/mcp is loaded on its first request: a server answering only REST never imports fastmcp,
concurrent first MCP requests build it once, a failed load is a 503 that a later request
retries, and a server that loaded it still stops cleanly (``_lazy_mount``, ``http_api``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from http_server import ServerProcess, serving_here
from support import TEST_KEYS, sim_env, sim_settings
from threatintel._lazy_mount import LazyMount
from threatintel.http_api import build_app
from threatintel.service import Service
from threatintel.simulator import SimulatorServer

TOKEN = "lazy-mcp-token-5d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TESTS = Path(__file__).parent

#: A real server process (uvicorn serving build_app) that answers REST, then /mcp with
#: fastmcp_tasks missing, then /mcp again, and prints what it had imported at each step.
PROBE = """
import asyncio, json, sys
import httpx
from http_server import serving_here
from threatintel.http_api import build_app
from threatintel.settings import Settings

MCP_MODULES = ("fastmcp", "fastmcp_tasks", "mcp", "docket", "threatintel.mcp_server")
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "probe", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}

def loaded():
    return [name for name in MCP_MODULES if sys.modules.get(name) is not None]

async def main():
    report = {"at_start": loaded()}
    app = build_app(Settings.load())
    auth = {"Authorization": "Bearer " + sys.argv[1]}
    async with serving_here(app) as url, httpx.AsyncClient(
        base_url=url, headers=auth, timeout=30
    ) as client:
        report["rest"] = [
            (await client.get("/health")).status_code,
            (await client.get("/ready")).status_code,
            (await client.get("/metrics")).status_code,
            (await client.get("/openapi.json")).status_code,
            (await client.get("/docs")).status_code,
            (await client.get("/api/v1/indicators/8.8.8.8")).status_code,
            (await client.post("/api/v1/analyze", json={"iocs": ["1.1.1.1"]})).status_code,
            (await client.post("/mcp", json=INITIALIZE, headers={"Authorization": ""})).status_code,
        ]
        report["after_rest"] = loaded()
        sys.modules["fastmcp_tasks"] = None  # as if the package were not installed
        refused = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        report["missing"] = [
            refused.status_code, refused.json(), refused.headers.get("retry-after")
        ]
        del sys.modules["fastmcp_tasks"]
        answered = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        report["answered"] = [answered.status_code, "threatintel" in answered.text]
        report["after_mcp"] = loaded()
    print(json.dumps(report))

asyncio.run(main())
"""


def test_rest_never_loads_mcp_and_a_failed_load_is_a_503_retried_later(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """In a server process, REST requests, the probes, the docs and a refused /mcp import
    nothing of MCP; the first /mcp request without fastmcp_tasks is a 503 JSON error with
    Retry-After, logged, and the next one loads MCP and answers."""
    env = {
        **os.environ,
        **sim_env(sim, THREATINTEL_API_TOKEN=TOKEN, CACHE_BACKEND="memory"),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE, TOKEN],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["at_start"] == []
    assert report["rest"] == [200, 200, 200, 200, 200, 200, 200, 401]
    assert report["after_rest"] == [], "a REST request loaded MCP"
    status, body, retry_after = report["missing"]
    assert status == 503 and retry_after == "5"
    assert body == {
        "error": "unavailable",
        "detail": "MCP at /mcp could not be loaded; the server log says why",
    }
    assert "MCP at /mcp could not be loaded (ModuleNotFoundError" in done.stderr
    assert report["answered"] == [200, True]
    assert report["after_mcp"] == [
        "fastmcp",
        "fastmcp_tasks",
        "mcp",
        "docket",
        "threatintel.mcp_server",
    ]


async def test_concurrent_first_mcp_clients_share_one_load(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Five fastmcp Clients connecting at once to a fresh server each list the tools and call
    one; MCP is built and started once, and the server then stops with nothing logged
    above INFO."""
    from fastmcp import Client

    caplog.set_level(logging.INFO, logger="threatintel")
    settings = sim_settings(sim, cache_backend="memory", threatintel_api_token=TOKEN)

    async def one_client(url: str, value: str) -> tuple[int, str]:
        async with Client(f"{url}/mcp", auth=TOKEN) as mcp:
            tools = await mcp.list_tools()
            looked_up = await mcp.call_tool("lookup_ioc", {"value": value})
        assert looked_up.structured_content is not None
        return len(tools), looked_up.structured_content["indicator"]["value"]

    values = [f"198.51.100.{n}" for n in range(1, 6)]
    async with (
        Service(settings) as service,
        serving_here(build_app(settings, service=service)) as url,
    ):
        answers = await asyncio.gather(*(one_client(url, v) for v in values))
    assert [value for _, value in answers] == values
    assert {count for count, _ in answers} == {8}
    loads = [r for r in caplog.records if "loaded on first use" in r.getMessage()]
    assert len(loads) == 1, [r.getMessage() for r in loads]
    assert loads[0].getMessage().startswith("MCP at /mcp loaded on first use in ")
    loud = [r.getMessage() for r in caplog.records if r.levelno > logging.INFO]
    assert loud == []


async def test_the_server_logs_mcp_through_its_own_handler(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """With LOG_FORMAT=json, fastmcp's lines come out through the server's handler after the
    lazy load (fastmcp's import would give its logger a rich handler of its own), as JSON and
    with a key a caller passed as a tool argument masked, next to the load's own line;
    SIGTERM then stops the server cleanly."""
    from fastmcp import Client

    env = sim_env(
        sim,
        THREATINTEL_API_TOKEN=TOKEN,
        CACHE_BACKEND="memory",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        HOME=str(tmp_path),
    )
    with ServerProcess(env) as server:
        async with Client(f"{server.url}/mcp", auth=TOKEN) as mcp:
            await mcp.list_tools()
            await mcp.call_tool("extract_iocs", {"text": f"key {TEST_KEYS['otx']} pasted"})
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.stderr
    lines = [line for line in server.stderr.splitlines() if line.strip()]
    ours = ("serving the HTTP API on ", "note: ")
    records = [json.loads(line) for line in lines if not line.startswith(ours)]
    loggers = {record["logger"] for record in records}
    assert any(name.startswith("fastmcp") for name in loggers), loggers
    assert any("extract_iocs" in r["message"] for r in records if r["logger"].startswith("fastmcp"))
    assert TEST_KEYS["otx"] not in server.stderr
    assert any("loaded on first use" in record["message"] for record in records)
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")]


# --- LazyMount over small Starlette apps ------------------------------------------------------
class Counted:
    """Test app's parts: how many apps were built, lifespans entered and left."""

    def __init__(self, fail_first_start: bool = False) -> None:
        self.builds = 0
        self.entered = 0
        self.left = 0
        self.fail_first_start = fail_first_start
        self.arrived = 0
        self.all_arrived = anyio.Event()

    async def build(self) -> Starlette:
        self.builds += 1
        await self.all_arrived.wait()

        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            # Like fastmcp's: a task group, which anyio requires to be left in its own task.
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep_forever)
                if self.fail_first_start and self.entered == 0:
                    self.entered += 1
                    raise RuntimeError("no broker at redis://:hunter2@127.0.0.1:1/0")
                self.entered += 1
                try:
                    yield
                finally:
                    self.left += 1
                    group.cancel_scope.cancel()

        async def hello(_: Any) -> PlainTextResponse:
            return PlainTextResponse(f"app {self.builds}")

        return Starlette(routes=[Route("/x", hello)], lifespan=lifespan)


def host(mount: LazyMount, counted: Counted, expected: int) -> Starlette:
    """A host app serving ``mount`` at /x; ``counted.all_arrived`` is set once ``expected``
    requests have reached it, so the build waits for every concurrent first request."""

    class Counting:  # an ASGI app (a plain function would be taken for a request handler)
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            counted.arrived += 1
            if counted.arrived >= expected:
                counted.all_arrived.set()
            await mount(scope, receive, send)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with mount.running():
            yield

    return Starlette(routes=[Route("/x", Counting())], lifespan=lifespan)


async def test_concurrent_first_requests_build_and_start_once() -> None:
    """Ten requests that all arrive before the build finishes get the one app built and
    started; its lifespan (a task group) is left when the host stops."""
    counted = Counted()
    mount = LazyMount(counted.build, name="the app")
    async with (
        serving_here(host(mount, counted, 10)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        answers = await asyncio.gather(*(client.get("/x") for _ in range(10)))
        assert [a.text for a in answers] == ["app 1"] * 10
        assert mount.started
    assert (counted.builds, counted.entered, counted.left) == (1, 1, 1)
    assert not mount.started


async def test_a_failed_start_is_a_503_and_the_next_request_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lifespan that fails to start answers 503 with the API's JSON error and logs why (a
    password in the message masked); the next request builds and starts it anew."""
    counted = Counted(fail_first_start=True)
    counted.all_arrived.set()
    mount = LazyMount(
        counted.build, name="the app", scrub=lambda text: text.replace("hunter2", "***")
    )
    async with (
        serving_here(host(mount, counted, 1)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        refused = await client.get("/x")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json() == {
            "error": "unavailable",
            "detail": "the app could not start; the server log says why",
        }
        assert (await client.get("/x")).text == "app 2"
    assert (counted.builds, counted.entered, counted.left) == (2, 2, 1)
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failures == [
        "the app could not start (RuntimeError: no broker at redis://:***@127.0.0.1:1/0); "
        "the next request tries again"
    ]
