"""Real HTTP servers for the HTTP API tests: uvicorn in a thread of this process, or
`threatintel server --transport http` as a process; both on a free loopback port.

Waiting for either is a bounded poll on a condition (the server says it started, /health
answers): a real server must come up, and no test sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

#: The console script of this environment (the one `pip install` made).
CONSOLE_SCRIPT = str(Path(sys.executable).parent / "threatintel")
START_TIMEOUT = 25.0
URL_LINE = re.compile(r"serving the HTTP API on (http://\S+) ")


def tcp_socket() -> socket.socket:
    """A loopback socket on a free port, as the server binds it (IPPROTO_TCP, so asyncio sets
    TCP_NODELAY on its connections: see cli_server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving_here(app: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn in this event loop (so it may use objects made in it, such as
    a Service given to build_app); yields its base URL."""
    sock = tcp_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not server.started:
                if task.done():
                    raise RuntimeError("the server stopped while starting (see the log)")
                await asyncio.sleep(0.01)  # a bounded poll on the server coming up
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn (lifespan on) in a thread; yields its base URL."""
    sock = tcp_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    until = time.monotonic() + START_TIMEOUT
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting (see the log)")
            if time.monotonic() > until:
                raise TimeoutError("the server did not start in time")
            thread.join(0.01)  # waits on the server, not on the clock
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class ServerProcess:
    """`threatintel server --transport http --port 0 ...` in a process; ``url`` once it
    serves. Its stderr is kept in ``stderr`` (read while starting, and after it stops)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [CONSOLE_SCRIPT, "server", "--transport", "http", "--port", "0", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stderr = ""
        self.url = ""

    def __enter__(self) -> ServerProcess:
        try:
            self.url = self._read_url()
            wait_healthy(self.url, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _read_url(self) -> str:
        assert self.process.stderr is not None
        fd = self.process.stderr.fileno()
        until = time.monotonic() + START_TIMEOUT
        buffer = b""
        while (found := URL_LINE.search(buffer.decode(errors="replace"))) is None:
            left = until - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no URL on stderr in time: {buffer.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], left)
            chunk = os.read(fd, 65536) if ready else b""
            if ready and not chunk:
                raise RuntimeError(f"the server exited: {buffer.decode(errors='replace')}")
            buffer += chunk
        self.stderr = buffer.decode(errors="replace")
        return found.group(1)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server, wait for it, and keep the rest of its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            _, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        self.stderr += err.decode(errors="replace")
        return self.process.returncode


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    """Poll ``url``/health until it answers 200 (bounded)."""
    until = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError("the server exited while starting")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > until:
                raise TimeoutError(f"{url}/health did not answer in time")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.02)  # waits on the process, not on the clock
