"""The worker door: `threatintel worker` consumes job chunks from the queue in Redis.

    threatintel worker --concurrency 4                  # REDIS_URL set; as many as you like
    threatintel worker --host 0.0.0.0 --port 8001       # with /health, /ready, /metrics

A worker is a ``Service`` (one engine, the shared job store, the queue) that runs queued chunks
instead of answering requests: whoever submitted the job (an HTTP or MCP request, a CLI batch)
follows its progress in the store. With ``--port`` it also serves the probes and the metrics,
the same ones as the HTTP server (so Kubernetes and Prometheus treat both alike); without it,
no socket is opened.

SIGTERM or SIGINT stops it taking chunks; those in flight get up to ``STOP_GRACE`` seconds to
finish (under Kubernetes' default 30 s before SIGKILL). A chunk still running then is not
marked done, so the queue hands it to another worker once its lease runs out
(JOB_REDELIVERY_TIMEOUT); the rows it wrote stay, and its answered lookups cost nothing the
second time (the shared cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp

    from threatintel.service import Service
    from threatintel.settings import Settings

logger = logging.getLogger("threatintel.worker")

#: Seconds a stopping worker lets its chunks in flight finish.
STOP_GRACE = 20.0


def probes_app(service: Service, settings: Settings) -> ASGIApp:
    """/health, /ready and /metrics over ``service``: /metrics behind the API token when one
    is set (as on the HTTP server), the probes open."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.responses import Response as PlainResponse
    from starlette.routing import Route

    from threatintel._asgi import BearerAuth

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> Response:
        problems = await service.ready()
        return JSONResponse({"ready": not problems, "problems": problems}, 503 if problems else 200)

    async def metrics(_: Request) -> Response:
        body, content_type = await service.metrics.exposition(service)
        return PlainResponse(body, headers={"content-type": content_type})

    app: ASGIApp = Starlette(
        routes=[Route("/health", health), Route("/ready", ready), Route("/metrics", metrics)]
    )
    token = settings.threatintel_api_token
    return BearerAuth(app, token.get_secret_value()) if token else app


def _probes_server_class() -> type:
    import uvicorn

    class ProbesServer(uvicorn.Server):
        """uvicorn without its signal handlers: this worker's own stop SIGTERM and SIGINT."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return ProbesServer


async def run(
    settings: Settings,
    *,
    concurrency: int,
    name: str | None = None,
    sock: socket.socket | None = None,
) -> int:
    """Work on queued chunks until SIGTERM/SIGINT; serve the probes on ``sock`` if given.
    The exit status: 0 once stopped, 1 when Redis does not answer at start-up."""
    from threatintel.service import Service

    # This process is the worker: the Service must not start a second one of its own.
    settings = settings.model_copy(update={"embedded_worker": False})
    name = name or f"{socket.gethostname()}#{os.getpid()}"
    async with Service(settings) as service:
        unreachable = [p for p in await service.ready() if p.startswith("job store")]
        if unreachable:
            # One line and a non-zero exit: a supervisor (Kubernetes, Compose's restart
            # policy) restarts the worker with a back-off, and the reason is in its log.
            logger.error("worker %s: Redis does not answer (%s); stopping", name, unreachable[0])
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = None
        tasks = [asyncio.create_task(service.work(concurrency=concurrency, name=name))]
        if sock is not None:
            import uvicorn

            probes_server: Any = _probes_server_class()
            config = uvicorn.Config(
                probes_app(service, settings),
                log_config=None,
                access_log=False,
                lifespan="off",
                server_header=False,
            )
            server = probes_server(config)
            tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        logger.info(
            "worker %s: working on queued job chunks (%d at a time)%s",
            name,
            concurrency,
            f"; probes on port {sock.getsockname()[1]}" if sock is not None else "",
        )
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if server is not None:
            server.should_exit = True
        if waiter in done:
            logger.info(
                "worker %s stopping: the chunks in flight get %gs to finish", name, STOP_GRACE
            )
        for task in tasks:
            if task not in done:
                task.cancel()  # the queue's worker lets its running chunks finish
        waiter.cancel()
        _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
        if late:
            logger.warning(
                "worker %s: chunks still running after %gs are left to another worker",
                name,
                STOP_GRACE,
            )
            for task in late:
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        logger.info("worker %s stopped", name)
        for result in results:  # a worker that failed by itself says why
            if isinstance(result, Exception):
                raise result
    return 0


__all__ = ["probes_app", "run"]
