"""An ASGI app built, and its lifespan started, on its first request: how the HTTP server
serves /mcp without importing fastmcp until a client asks for it.

    mount = LazyMount(build, name="MCP")   # build: async () -> a Starlette app (with a lifespan)
    async with mount.running():            # inside the host app's lifespan
        ...                                # mount(scope, receive, send) builds on first use

anyio's task groups and cancel scopes must be left in the task that entered them, and a
request's task ends with its request, so the built app's lifespan never runs in one: a keeper
task, started by ``running()`` in the host's lifespan, enters it when the first request asks
and leaves it when the host stops. The first requests wait under a lock, so the app is built
and started once; a failure to build or start is a 503 JSON error for them, logged, and the
next request tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import anyio

from threatintel._asgi import send_error

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from starlette.applications import Starlette
    from starlette.types import Receive, Scope, Send

logger = logging.getLogger("threatintel.http")

#: Seconds a client is told to wait (Retry-After) after a failed start.
RETRY_AFTER: Final = 5


class Unavailable(Exception):
    """The mounted app cannot serve now: its start failed, or the server is stopping."""


class _Start:
    """One attempt to start a built app; the keeper says how it went."""

    __slots__ = ("app", "done", "error")

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.done = anyio.Event()
        self.error: Exception | None = None


class LazyMount:
    """The app ``build()`` makes, built and started (its lifespan entered) on the first request
    it gets while ``running()``; until then nothing it imports is loaded."""

    __slots__ = (
        "_build",
        "_lock",
        "_pending",
        "_started",
        "_starts",
        "_stopping",
        "name",
        "scrub",
    )

    def __init__(
        self,
        build: Callable[[], Awaitable[Starlette]],
        *,
        name: str,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self._build = build
        self.name = name
        #: Applied to a failure's message before it is logged (it may quote a URL's password).
        self.scrub = scrub
        # Made anew by each running(), in its event loop.
        self._lock: anyio.Lock | None = None
        self._stopping: anyio.Event | None = None
        self._starts: MemoryObjectSendStream[_Start] | None = None
        self._pending: _Start | None = None
        self._started: Starlette | None = None

    @property
    def started(self) -> bool:
        """Whether the app has been built and its lifespan is running."""
        return self._started is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._started
        if app is None:
            try:
                app = await self._start()
            except Unavailable as exc:
                await send_error(
                    send,
                    503,
                    "unavailable",
                    str(exc),
                    [(b"retry-after", str(RETRY_AFTER).encode())],
                )
                return
        await app(scope, receive, send)

    async def _start(self) -> Starlette:
        lock, stopping, starts = self._lock, self._stopping, self._starts
        if lock is None or stopping is None or starts is None:
            raise Unavailable(f"{self.name} is not served: the server is not running")
        async with lock:  # concurrent first requests: one builds, the others wait
            if self._started is not None:
                return self._started
            if stopping.is_set():
                raise Unavailable(f"{self.name} is not served: the server is stopping")
            began = time.perf_counter()
            start = self._pending
            if start is None or start.done.is_set():
                # (else one a request that went away left pending: wait for it instead)
                try:
                    start = _Start(await self._build())
                except Exception as exc:
                    self._failed("could not be loaded", exc)
                    raise Unavailable(
                        f"{self.name} could not be loaded; the server log says why"
                    ) from exc
                self._pending = start
                await starts.send(start)
            await start.done.wait()
            self._pending = None
            if start.error is not None:
                self._failed("could not start", start.error)
                raise Unavailable(f"{self.name} could not start; the server log says why")
            if self._started is None:  # the server began to stop meanwhile
                raise Unavailable(f"{self.name} is not served: the server is stopping")
            logger.info("%s loaded on first use in %.2fs", self.name, time.perf_counter() - began)
            return self._started

    def _failed(
        self, what: str, exc: BaseException, then: str = "the next request tries again"
    ) -> None:
        cause = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]  # a task group's one error, not "unhandled errors..."
        logger.error(
            "%s %s (%s: %s); %s",
            self.name,
            what,
            type(cause).__name__,
            self.scrub(str(cause)),
            then,
        )
        logger.debug("%s failure", self.name, exc_info=exc)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve while inside: the first request builds and starts the app; leaving stops it
        (its lifespan is left in the task that entered it) and later requests are 503s."""
        self._lock = anyio.Lock()
        self._stopping = stopping = anyio.Event()
        sender, receiver = anyio.create_memory_object_stream[_Start](1)
        async with anyio.create_task_group() as group:
            group.start_soon(self._keep, receiver, stopping)
            self._starts = sender
            try:
                yield
            finally:
                stopping.set()
                self._starts = None
                sender.close()  # the keeper leaves the app's lifespan, then ends

    async def _keep(self, starts: MemoryObjectReceiveStream[_Start], stopping: anyio.Event) -> None:
        """Enter each requested start's lifespan, in this one task, until the server stops."""
        async with starts:
            async for start in starts:
                if stopping.is_set():
                    start.done.set()  # _start finds nothing started and says so
                    continue
                try:
                    async with start.app.router.lifespan_context(start.app):
                        self._started = start.app
                        start.done.set()
                        await stopping.wait()
                except Exception as exc:
                    if not start.done.is_set():
                        start.error = exc
                    elif not stopping.is_set():
                        self._failed("stopped unexpectedly", exc)
                    else:
                        self._failed("did not stop cleanly", exc, "the server stops anyway")
                finally:
                    self._started = None
                    start.done.set()


__all__ = ["LazyMount", "Unavailable"]
