"""`threatintel server`: MCP over stdio (desktop clients), or the HTTP API with MCP at /mcp.

fastmcp, fastapi and uvicorn are imported in the command only: every other command starts
without them (tests/test_lazy_imports.py).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from threatintel.cli_options import Command

if TYPE_CHECKING:
    from types import FrameType

    from threatintel.settings import Settings

#: Seconds a stopping server waits for open requests (an MCP stream may never end on its own).
GRACEFUL_SHUTDOWN = 10


def register(app: typer.Typer) -> None:
    """Add `server` to ``app``."""
    app.command(cls=Command)(server)


def server(
    transport: Annotated[
        Literal["stdio", "http"],
        typer.Option(help="stdio for desktop MCP clients; http for the HTTP API with MCP at /mcp."),
    ] = "stdio",
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Address to bind (http).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to bind (http).", min=0, max=65535)
    ] = 8000,
) -> None:
    """Serve MCP over stdio, or the HTTP API with MCP at /mcp.

    Desktop MCP clients launch `threatintel server`; shared deployments run
    `threatintel server --transport http --host 0.0.0.0 --port 8000` with THREATINTEL_API_TOKEN.
    """
    import anyio

    from threatintel.cli import errors_as_exit_codes, load_settings

    settings = load_settings(announce=False)
    with errors_as_exit_codes():
        if transport == "stdio":
            from threatintel.mcp_server import serve_stdio

            anyio.run(serve_stdio, settings)
        else:
            serve_http(settings, host, port)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (``localhost`` included)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def serve_http(settings: Settings, host: str, port: int) -> None:
    """Serve the HTTP API (and /mcp) with uvicorn on ``host``:``port`` until SIGINT/SIGTERM,
    which finish open requests first. Refuses a non-loopback address without a token."""
    import anyio
    from rich.markup import escape

    from threatintel.cli import EXIT_CONFIG, EXIT_USAGE, err, fail

    # The app makes its Service in its lifespan; made (and closed) once here first, a setting
    # it refuses is one line and exit 3 rather than a traceback from uvicorn's lifespan.
    anyio.run(_preflight, settings)
    token = settings.threatintel_api_token
    if token is None or not token.get_secret_value():
        if not is_loopback(host):
            fail(
                f"refusing to serve on {host} without THREATINTEL_API_TOKEN: set it (clients "
                "send 'Authorization: Bearer <token>'), or bind to 127.0.0.1",
                EXIT_USAGE,
            )
        err.print("note: THREATINTEL_API_TOKEN is not set: no authentication (loopback only)")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: accepted sockets inherit it, and asyncio sets TCP_NODELAY
    # only on sockets that say TCP. Without it every keep-alive answer waited ~40 ms (Nagle
    # holding the body behind the headers until the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:  # bound here, so a busy port is one line and --port 0 can say which port it got
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE)

    import uvicorn

    from threatintel.http_api import build_app

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # SIGTERM/SIGINT ask for a graceful stop and get one, then exit 0: uvicorn would
            # raise the signal again afterwards and die of it (exit 143). A second SIGINT
            # stops at once.
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    from threatintel import logs

    config = uvicorn.Config(
        build_app(settings),
        log_config=None,  # our logging, not uvicorn's
        # One line per request costs CPU at a thousand lookups a second and repeats what
        # threatintel_http_request_duration_seconds counts: only at LOG_LEVEL=DEBUG.
        access_log=settings.log_level == "DEBUG",
        lifespan="on",
        proxy_headers=True,  # X-Forwarded-For only from FORWARDED_ALLOW_IPS (uvicorn's)
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    logs.configure(settings, server=True)  # after the Config: it adopts uvicorn's loggers
    if not config.access_log:
        # uvicorn writes access lines whenever its logger has a handler (hasHandlers()), and
        # configure() just made the root's handler reachable from it: cut it off again.
        logging.getLogger("uvicorn.access").propagate = False
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    err.print(
        escape(f"serving the HTTP API on http://{shown}:{bound} (MCP at /mcp, docs at /docs)")
    )
    server = _Server(config)
    with sock:
        server.run(sockets=[sock])
    if not server.started:  # uvicorn has logged why
        raise typer.Exit(EXIT_CONFIG)


async def _preflight(settings: Settings) -> None:
    from threatintel.service import Service

    await Service(settings).aclose()  # stores open on first use: this opens nothing
