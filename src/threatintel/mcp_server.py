"""The MCP door: every MCP import of the project lives in this module (fastmcp 4, mcp 2).

    mcp = build_mcp(lambda: service)          # tools, prompts, resources over one Service
    await serve_stdio(settings)               # `threatintel server` (desktop clients)
    app = http_app(mcp)                       # streamable HTTP, mounted at /mcp by http_api

Importing fastmcp costs about 3 s and 80 MB, so nothing but `threatintel server` imports this.
(A skeleton: issue 10 fills in the tools.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

# Before fastmcp is imported: no update check, no banner on stdout, our own logging.
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

from fastmcp import FastMCP
from mcp_types import ToolAnnotations
from pydantic import Field

from threatintel.models import Extraction
from threatintel.service import Service
from threatintel.settings import Settings

if TYPE_CHECKING:
    from fastmcp.server.http import StarletteWithLifespan

ServiceSource = Callable[[], Service]

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True)


def build_mcp(service: ServiceSource) -> FastMCP:
    """The MCP server over the Service ``service()`` returns when a tool runs."""
    mcp = FastMCP("threatintel", mask_error_details=True)

    @mcp.tool(annotations=READ_ONLY, title="Extract indicators from text")
    def extract_iocs(
        text: Annotated[str, Field(description="Free text: an alert, an email, a report")],
    ) -> Extraction:
        """The indicators found in the text, refanged and typed, with the rejected candidates
        and why; nothing is looked up."""
        return service().extract(text)

    return mcp


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP over stdin/stdout until the client closes it."""
    async with Service(settings) as service:
        await build_mcp(lambda: service).run_stdio_async(show_banner=False)


def http_app(mcp: FastMCP) -> StarletteWithLifespan:
    """Streamable HTTP at exactly /mcp, stateless so a load balancer may send each request
    of a session to any instance. Its ``lifespan`` must run inside the host app's."""
    return mcp.http_app(path="/mcp", stateless_http=True)
