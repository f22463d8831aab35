"""The MCP server over real transports: stdio against the installed `threatintel server`
console script in a subprocess, and streamable HTTP against uvicorn serving ``http_app(mcp)``
on a loopback port. Both against the simulator."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from support import TEST_KEYS, sim_env, sim_settings
from threatintel.jobs import MemoryJobStore
from threatintel.mcp_server import build_mcp, http_app
from threatintel.service import Service
from threatintel.simulator import SimulatorServer

MALICIOUS_IP = "45.142.212.61"
#: The console script installed beside this interpreter (the venv's bin/).
SCRIPT = Path(sys.executable).with_name("threatintel")


async def exercise(client: Client, seen: list[float]) -> None:
    """List the tools, look one indicator up, run a batch to the end (any transport)."""
    names = {t.name for t in await client.list_tools()}
    assert {"analyze_iocs", "lookup_ioc", "submit_batch", "analyze_batch"} <= names
    result = await client.call_tool("lookup_ioc", {"value": MALICIOUS_IP})
    assert result.structured_content["verdict"]["label"] == "malicious"
    batch = await client.call_tool("analyze_batch", {"iocs": [MALICIOUS_IP, "8.8.8.8"]})
    assert batch.structured_content["state"] == "done"
    assert batch.structured_content["done"] == 2
    assert seen and seen[-1] == 2
    text = str(result.content) + str(batch.content)
    assert all(key not in text for key in TEST_KEYS.values())


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_stdio_against_the_installed_console_script(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """`threatintel server` speaks MCP over stdio: tools listed, a lookup and a batch with
    progress answered, and nothing but protocol on stdout (logs go to stderr)."""
    assert SCRIPT.exists(), f"install the package first: {SCRIPT} is missing"
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    log = tmp_path / "server-stderr.log"
    # The SDK starts the child with a sanitised environment: pass ours (the simulator's).
    transport = StdioTransport(
        command=str(SCRIPT),
        args=["server"],
        env={**os.environ, **sim_env(sim)},
        keep_alive=False,
        log_file=log,
    )
    async with Client(transport, mode="legacy", progress_handler=on_progress, timeout=30) as c:
        await exercise(c, seen)
    assert all(key not in log.read_text() for key in TEST_KEYS.values())


@pytest.fixture
async def http_url(sim: SimulatorServer) -> AsyncIterator[str]:
    """uvicorn serving http_app(build_mcp(...)) on a free loopback port, in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        app = http_app(build_mcp(lambda: service))
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(500):  # a real server coming up: bounded polling on its flag
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True
            await task
            sock.close()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_on_a_running_server(http_url: str, mode: str) -> None:
    """Over streamable HTTP at /mcp, a modern client (the batch runs as a task) and a legacy
    one (progress notifications) both list, look up and run a batch."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(http_url, mode=mode, progress_handler=on_progress, timeout=30) as client:
        if mode == "legacy":
            await exercise(client, seen)
        else:
            await exercise(client, [2.0])  # task calls send no progress: polled instead
            resources = await client.list_resources()
            assert [str(r.uri) for r in resources] == ["threatintel://providers/status"]
