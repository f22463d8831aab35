"""Fault injection: which request fails, and the ASGI responses that fail it.

    faults = FaultInjector(seed=7)
    faults.fail_next("virustotal", FaultKind.RESET, n=2)     # the next two VT requests break
    kind = faults.decide("virustotal", rate=0.1, kinds=ALL_FAULTS, forced=None)

Precedence: a queued ``fail_next`` fault, then a fault the scenario forces for the indicator, then a
seeded random draw against the vendor's rate. The draw is made for every eligible request whatever
wins. A request about an indicator draws from its own stream, seeded by (seed, vendor, indicator,
how many requests for it came before): the n-th request for an indicator meets the same fault
whatever the order concurrent lookups arrive in, so a fault test is repeatable. Requests with no
indicator draw from one stream per vendor, the same sequence for the same request order.

The responses here misbehave at the transport level, which is why they are raw ASGI callables:
``ResetResponse`` announces a Content-Length, sends part of the body and returns (uvicorn then
closes the socket, so the client sees a truncated message); ``HangResponse`` never answers until
the client goes away or the server shuts down and releases it.
Both need a real server (``SimulatorServer``): httpx's ASGITransport cannot express a
half-sent body, and it never reports a client going away.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from collections.abc import Iterable
from enum import StrEnum

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class FaultKind(StrEnum):
    SERVER_ERROR = "5xx"
    RESET = "reset"
    HANG = "hang"
    MALFORMED = "malformed"


ALL_FAULTS: tuple[FaultKind, ...] = tuple(FaultKind)


def fault_kinds(values: Iterable[FaultKind | str]) -> tuple[FaultKind, ...]:
    """Parse fault names (``"5xx"``, ``"reset"``, ...), raising ValueError on an unknown one."""
    return tuple(FaultKind(value) for value in values)


class FaultInjector:
    """Thread-safe fault decisions, deterministic for a seed and a request order."""

    __slots__ = ("_asked", "_lock", "_queued", "_rngs", "_seed")

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._queued: dict[str, deque[FaultKind]] = {}
        self._rngs: dict[str, random.Random] = {}
        self._asked: dict[tuple[str, str], int] = {}

    def fail_next(self, vendor: str, kind: FaultKind | str, n: int = 1) -> None:
        """Make the next ``n`` eligible requests to ``vendor`` fail with ``kind``."""
        fault = FaultKind(kind)
        with self._lock:
            self._queued.setdefault(vendor, deque()).extend([fault] * n)

    def pending(self, vendor: str) -> int:
        with self._lock:
            return len(self._queued.get(vendor, ()))

    def clear(self) -> None:
        """Drop queued faults and start every indicator's stream again."""
        with self._lock:
            self._queued.clear()
            self._asked.clear()

    def decide(
        self,
        vendor: str,
        *,
        rate: float,
        kinds: tuple[FaultKind, ...],
        forced: FaultKind | None,
        indicator: str | None = None,
    ) -> FaultKind | None:
        with self._lock:
            drawn: FaultKind | None = None
            if rate > 0 and kinds:
                if indicator is None:
                    rng = self._rng(vendor)
                else:
                    nth = self._asked.get((vendor, indicator), 0)
                    self._asked[(vendor, indicator)] = nth + 1
                    rng = random.Random(f"{self._seed}:{vendor}:{indicator}:{nth}")
                if rng.random() < rate:
                    drawn = rng.choice(kinds)
            queue = self._queued.get(vendor)
            if queue:
                return queue.popleft()
            return forced or drawn

    def server_error_status(self, vendor: str, choices: tuple[int, ...]) -> int:
        with self._lock:
            return self._rng(f"{vendor}/status").choice(choices)

    def _rng(self, name: str) -> random.Random:
        rng = self._rngs.get(name)
        if rng is None:
            # A string seed is hashed with SHA-512 by random.Random: stable across runs.
            rng = self._rngs[name] = random.Random(f"{self._seed}:{name}")
        return rng


class Hangs:
    """Where hung requests wait; ``release_all`` (any thread) frees them for a quick shutdown."""

    __slots__ = ("_lock", "_released", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._waiters)

    def release_all(self) -> None:
        """Free every hung request and make later hangs return at once."""
        with self._lock:
            self._released = True
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def rearm(self) -> None:
        """Let hangs hang again after ``release_all``."""
        with self._lock:
            self._released = False

    async def wait(self, receive: Receive) -> bool:
        """Wait for a release (True) or for the client to disconnect (False)."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._released:
                return True
            self._waiters.add(entry)
        released = asyncio.ensure_future(event.wait())
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
            return released.done()
        finally:
            released.cancel()
            gone.cancel()
            with self._lock:
                self._waiters.discard(entry)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ResetResponse(Response):
    """Promise the whole body, send half of it, then stop: the peer sees a broken connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytes(self.body)
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        # Returning with more_body pending makes uvicorn close the transport (it logs one error
        # line, "ASGI callable returned without completing response"); no exception reaches the
        # client except the truncated read, which is exactly what a reset looks like.


class HangResponse(Response):
    """Never answer; on shutdown reply 503 so the server can drain its connections."""

    def __init__(self, hangs: Hangs) -> None:
        super().__init__(b"", status_code=503)
        self._hangs = hangs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._hangs.wait(receive):
            await super().__call__(scope, receive, send)


def malformed(response: Response) -> Response:
    """The same response as a 200 whose JSON body stops half-way."""
    body = bytes(response.body)
    cut = max(1, len(body) // 2)
    return Response(body[:cut], status_code=200, media_type="application/json")


def reset(response: Response) -> Response:
    return ResetResponse(
        bytes(response.body), status_code=response.status_code, headers=dict(response.headers)
    )
