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

#: Shortest token accepted off loopback: a guessable token is no authentication.
MIN_TOKEN_CHARS = 16

logger = logging.getLogger("threatintel.server")


def register(app: typer.Typer) -> None:
    """Add `server` and `worker` to ``app``."""
    app.command(cls=Command)(server)
    app.command(cls=Command)(worker)


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
            import sys

            from threatintel.mcp_server import serve_stdio

            if sys.stdin.isatty():  # someone ran it by hand: say what it waits for
                announce(
                    settings,
                    "MCP over stdio: waiting for an MCP client on stdin (desktop apps start "
                    "this command themselves; see the README's MCP section; Ctrl-C stops)",
                )
            anyio.run(serve_stdio, settings)
        else:
            serve_http(settings, host, port)


def worker(
    concurrency: Annotated[
        int, typer.Option(metavar="N", min=1, max=64, help="Job chunks worked on at once.")
    ] = 4,
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Address for the probes (with --port).")
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            min=0,
            max=65535,
            help="Serve /health, /ready and /metrics on this port (none by default).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="This worker's name in logs (default: host#pid)."),
    ] = None,
) -> None:
    """Run queued batch job chunks (REDIS_URL), on any machine.

    Jobs submitted through the HTTP API, MCP or `threatintel batch` with REDIS_URL set are
    split into chunks on a queue; run as many workers as the quotas allow. SIGTERM stops a
    worker; its chunks in flight go to another after JOB_REDELIVERY_TIMEOUT.
    """
    import anyio

    from threatintel import logs
    from threatintel.cli import EXIT_USAGE, errors_as_exit_codes, fail, load_settings

    settings = load_settings(announce=False)
    if settings.redis_url is None:
        fail(
            "threatintel worker needs REDIS_URL (the queue and job store it shares with the "
            "servers); without Redis, batches run in the process that submits them",
            EXIT_USAGE,
        )
    sock = None
    if port is not None:
        refuse_without_token(settings, host)
        try:
            sock = listen(host, port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE)
    logs.configure(settings, server=True)
    from threatintel.worker import run

    with errors_as_exit_codes():
        status = anyio.run(lambda: run(settings, concurrency=concurrency, name=name, sock=sock))
    if status:
        raise typer.Exit(status)


def refuse_without_token(settings: Settings, host: str) -> None:
    """Exit 2 when ``host`` is reachable from other machines and no token (or a short one)
    protects what is served there."""
    from threatintel.cli import EXIT_USAGE, fail

    token = settings.threatintel_api_token
    secret = token.get_secret_value() if token else ""
    if is_loopback(host):
        return
    if not secret:
        fail(
            f"refusing to serve on {host} without THREATINTEL_API_TOKEN: set it (clients "
            "send 'Authorization: Bearer <token>'), or bind to 127.0.0.1",
            EXIT_USAGE,
        )
    if len(secret) < MIN_TOKEN_CHARS:
        fail(
            f"refusing to serve on {host}: THREATINTEL_API_TOKEN is shorter than "
            f"{MIN_TOKEN_CHARS} characters (try: openssl rand -hex 32)",
            EXIT_USAGE,
        )


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (``localhost`` included)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def announce(settings: Settings, line: str) -> None:
    """One line for whoever runs the server: on stderr as is, or as a log record with
    LOG_FORMAT=json so a log collector's stream stays one JSON object per line."""
    if settings.log_format == "json":
        from threatintel import logs

        logs.configure(settings, server=True)
        logger.log(logging.WARNING if line.startswith("note:") else logging.INFO, line)
        return
    from rich.markup import escape

    from threatintel.cli import err

    err.print(escape(line))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; OSError when it cannot be bound.

    IPPROTO_TCP, not the default 0: accepted sockets inherit it, and asyncio sets TCP_NODELAY
    only on sockets that say TCP. Without it every keep-alive answer waited ~40 ms (Nagle
    holding the body behind the headers until the client's delayed ACK)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_http(settings: Settings, host: str, port: int) -> None:
    """Serve the HTTP API (and /mcp) with uvicorn on ``host``:``port`` until SIGINT/SIGTERM,
    which finish open requests first. Refuses a non-loopback address without a token."""
    import anyio

    from threatintel.cli import EXIT_CONFIG, EXIT_USAGE, fail

    # The app makes its Service in its lifespan; made (and closed) once here first, a setting
    # it refuses is one line and exit 3 rather than a traceback from uvicorn's lifespan.
    anyio.run(_preflight, settings)
    token = (
        settings.threatintel_api_token.get_secret_value() if settings.threatintel_api_token else ""
    )
    refuse_without_token(settings, host)
    if is_loopback(host) and not token:
        announce(
            settings, "note: THREATINTEL_API_TOKEN is not set: no authentication (loopback only)"
        )
    try:  # bound here, so a busy port is one line and --port 0 can say which port it got
        sock = listen(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE)
    host = host.strip("[]")

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
        # uvicorn's protocols log access whenever "uvicorn.access" has a handler, whatever
        # access_log says, and configure() just handed it ours: take it back.
        logging.getLogger("uvicorn.access").propagate = False
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    announce(
        settings, f"serving the HTTP API on http://{shown}:{bound} (MCP at /mcp, docs at /docs)"
    )
    server = _Server(config)
    from threatintel._process import settle

    settle()  # start-up's objects out of the collector's scans (see _process)
    with sock:
        server.run(sockets=[sock])
    if not server.started:  # uvicorn has logged why
        raise typer.Exit(EXIT_CONFIG)


async def _preflight(settings: Settings) -> None:
    from threatintel.service import Service

    await Service(settings).aclose()  # stores open on first use: this opens nothing
