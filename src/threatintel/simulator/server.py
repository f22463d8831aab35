"""Run the simulator on loopback: in a background thread for tests, or blocking for the CLI.

    with SimulatorServer(SimulatorConfig(clock=fake_clock)) as sim:
        settings = Settings.load(VIRUSTOTAL_BASE_URL=sim.base_urls["virustotal"], ...)
        sim.config.otx.fault_rate = 1.0          # live: the next request sees it
        sim.log.count(vendor="otx")

Only loopback hosts are accepted: the simulator hands out fake verdicts and echoes API keys into
its log, so it must never be reachable from another machine. uvicorn's access log is off and its
logging is left unconfigured (``log_config=None``); the host application decides what is shown.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from threatintel.simulator.app import Simulator
from threatintel.simulator.config import SimulatorConfig
from threatintel.simulator.faults import FaultInjector
from threatintel.simulator.log import RequestLog
from threatintel.simulator.scenario import VENDORS, Scenario

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8900
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0
GRACEFUL_SHUTDOWN = 1  # seconds uvicorn waits for in-flight requests before cancelling them

# The real services' base paths, appended to the simulator's URL and its per-vendor prefix.
BASE_PATHS = {"virustotal": "/api/v3", "otx": "/api/v1", "abuseipdb": "/api/v2", "ipinfo": ""}

logger = logging.getLogger(__name__)


def check_loopback(host: str) -> None:
    """Raise ValueError unless ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the simulator only listens on loopback, not {host!r}")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_config(simulator: Simulator) -> uvicorn.Config:
    return uvicorn.Config(
        simulator.app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        server_header=False,
        date_header=False,
    )


class SimulatorServer:
    """The simulator on 127.0.0.1 in a daemon thread; a context manager."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        check_loopback(host)
        self.simulator = Simulator(config)
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None

    @property
    def config(self) -> SimulatorConfig:
        return self.simulator.config

    @property
    def log(self) -> RequestLog:
        return self.simulator.log

    @property
    def faults(self) -> FaultInjector:
        return self.simulator.faults

    @property
    def url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("the simulator is not running")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._bound_port}"

    @property
    def base_urls(self) -> dict[str, str]:
        """Per-vendor base URLs, shaped like the real ones (``.../virustotal/api/v3``)."""
        return {vendor: f"{self.url}/{vendor}{BASE_PATHS[vendor]}" for vendor in VENDORS}

    def start(self) -> SimulatorServer:
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        self.simulator.hangs.rearm()
        sock = _bind(self._host, self._port)
        self._bound_port = sock.getsockname()[1]
        server = uvicorn.Server(_uvicorn_config(self.simulator))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="threatintel-simulator", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("the simulator did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Release hung requests and stop uvicorn; returns within about a second or two."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.simulator.release_hangs()
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(SHUTDOWN_TIMEOUT)
        self._server = self._thread = None
        self._bound_port = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    scenario: str | Path | None = None,
    config: SimulatorConfig | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C); ``scenario`` is a TOML file (None: the demo one).

    The file's ``[vendors.*]`` settings apply when no ``config`` is given; with a ``config``, only
    the file's ``[indicators]`` and ``[defaults]`` replace its scenario.
    """
    check_loopback(host)
    if config is None:
        config = SimulatorConfig.load(scenario)
    elif scenario is not None:
        config.scenario = Scenario.load(scenario)
    simulator = Simulator(config)
    sock = _bind(host, port)
    server = uvicorn.Server(_uvicorn_config(simulator))
    shown = f"[{host}]" if ":" in host else host
    logger.info("threat-intel simulator listening on http://%s:%d", shown, sock.getsockname()[1])
    try:
        server.run(sockets=[sock])
    finally:
        simulator.release_hangs()
        sock.close()
