"""`threatintel server --transport http` through the installed console script: it refuses to
expose itself without a token, says where it serves, serves the API and MCP at /mcp with the
token, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess

import httpx
import pytest

from http_server import CONSOLE_SCRIPT, ServerProcess
from support import sim_env
from threatintel.cli_server import is_loopback
from threatintel.simulator import SimulatorServer

TOKEN = "cli-server-token-5b1e"


def run_server(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONSOLE_SCRIPT, "server", "--transport", "http", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.internal", False),
    ],
)
def test_which_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    """Only loopback addresses and 'localhost' count as loopback; names may resolve anywhere."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "server.example"])
def test_refuses_a_public_address_without_a_token(host: str) -> None:
    """Binding beyond loopback without THREATINTEL_API_TOKEN exits 2 with one line naming it."""
    done = run_server("--host", host, "--port", "0", env={"THREATINTEL_API_TOKEN": ""})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "THREATINTEL_API_TOKEN" in lines[0] and host in lines[0]


def test_a_setting_the_service_refuses_is_one_line() -> None:
    """A store that cannot be set up stops the server before it binds: one line, exit 3."""
    done = run_server("--port", "0", env={"CACHE_BACKEND": "redis", "REDIS_URL": ""})
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: REDIS_URL/CACHE_BACKEND: the job store cannot be set up"
    ]


def test_a_busy_port_is_one_line() -> None:
    """A port already taken is refused in one line (exit 2), not with a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_server("--port", str(port), env={"THREATINTEL_API_TOKEN": TOKEN})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


async def test_serves_the_api_and_mcp_with_the_token_then_stops_on_sigterm(
    sim: SimulatorServer,
) -> None:
    """The console script serves on the port it names; the API and MCP at /mcp need the token
    (fastmcp's Client lists the tools and calls one with it, fails without it); SIGTERM
    stops it."""
    from fastmcp import Client
    from mcp.shared.exceptions import MCPError

    env = sim_env(sim, THREATINTEL_API_TOKEN=TOKEN, CACHE_BACKEND="memory")
    with ServerProcess(env) as server:
        assert server.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/api/v1/providers")).status_code == 401
            found = await client.get(
                "/api/v1/indicators/8.8.8.8", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert found.json()["indicator"]["value"] == "8.8.8.8"

        async with Client(f"{server.url}/mcp", auth=TOKEN) as mcp:
            tools = {tool.name for tool in await mcp.list_tools()}
            looked_up = await mcp.call_tool("lookup_ioc", {"value": "8.8.8.8"})
        assert {"extract_iocs", "lookup_ioc", "analyze_iocs", "submit_batch"} <= tools
        assert looked_up.structured_content is not None
        assert looked_up.structured_content["indicator"]["value"] == "8.8.8.8"
        with pytest.raises(MCPError):
            async with Client(f"{server.url}/mcp", auth="wrong-token") as mcp:
                await mcp.list_tools()

        code = server.stop(signal.SIGTERM)
    assert code == 0, server.stderr
    assert "Traceback" not in server.stderr
    assert TOKEN not in server.stderr


def test_loopback_without_a_token_serves_openly_with_a_note(sim: SimulatorServer) -> None:
    """Without a token on loopback the server starts, says it is unauthenticated in one
    line, and answers without a token; at LOG_LEVEL=INFO it writes no access-log line."""
    env = sim_env(sim, THREATINTEL_API_TOKEN="", CACHE_BACKEND="memory", LOG_LEVEL="INFO")
    with ServerProcess(env) as server:
        assert "THREATINTEL_API_TOKEN is not set" in server.stderr
        assert httpx.get(f"{server.url}/api/v1/providers").status_code == 200
        code = server.stop(signal.SIGINT)
    assert code == 0, server.stderr
    assert "Traceback" not in server.stderr
    assert "uvicorn.error" in server.stderr  # uvicorn's own lines still come through
    assert "uvicorn.access" not in server.stderr and "/api/v1/providers" not in server.stderr


@pytest.mark.parametrize(("level", "logged"), [("INFO", False), ("DEBUG", True)])
def test_access_lines_only_at_debug(sim: SimulatorServer, level: str, logged: bool) -> None:
    """uvicorn's per-request access line appears at LOG_LEVEL=DEBUG and not at INFO (the
    request metrics count every request; a line each cost 8% of the CPU under load)."""
    env = sim_env(sim, THREATINTEL_API_TOKEN="", CACHE_BACKEND="memory", LOG_LEVEL=level)
    with ServerProcess(env) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        server.stop(signal.SIGTERM)
    assert ('"GET /health HTTP/1.1" 200' in server.stderr) is logged, server.stderr


def test_the_listening_socket_says_tcp() -> None:
    """The server listens on an IPPROTO_TCP socket, so asyncio sets TCP_NODELAY on each
    connection it accepts (with protocol 0 every keep-alive answer waited ~40 ms for the
    client's delayed ACK) and the accepted socket has it."""
    from threatintel.cli_server import listen

    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP

        async def accepted_nodelay() -> int:
            got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                raw = writer.get_extra_info("socket")
                got.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                writer.close()

            server = await asyncio.start_server(on_connect, sock=sock)
            async with server:
                _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
                value = await asyncio.wait_for(got, 10)
                writer.close()
            return value

        assert asyncio.run(accepted_nodelay()) != 0


def test_refuses_a_short_token_off_loopback() -> None:
    """Off loopback a token shorter than 16 characters is refused in one line (exit 2)."""
    done = run_server("--host", "0.0.0.0", env={"THREATINTEL_API_TOKEN": "short"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "shorter than 16 characters" in lines[0], done.stderr
    assert "short" not in lines[0].replace("shorter", "")


def test_json_logs_keep_the_start_lines_json(sim: SimulatorServer) -> None:
    """With LOG_FORMAT=json the start-up note and the serving line are JSON records too."""
    env = sim_env(sim, THREATINTEL_API_TOKEN="", CACHE_BACKEND="memory", LOG_FORMAT="json")
    with ServerProcess(env) as server:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.stderr
    lines = [line for line in server.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line one JSON object
    messages = [r["message"] for r in records]
    assert any(m.startswith("note: THREATINTEL_API_TOKEN is not set") for m in messages)
    assert any(m.startswith("serving the HTTP API on http://127.0.0.1:") for m in messages)
