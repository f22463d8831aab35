"""`threatintel server`: MCP over stdio (desktop clients), or the HTTP API with MCP at /mcp.

fastmcp, fastapi and uvicorn are imported in the command only: every other command starts
without them (tests/test_lazy_imports.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from threatintel.cli_options import Command


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
            raise NotImplementedError("the HTTP transport comes with http_api.py")
