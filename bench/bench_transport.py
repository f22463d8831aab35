"""What does the HTTP transport cost per upstream request? httpcore's pool against aiohttp's.

    .venv/bin/python bench/bench_transport.py           # writes bench/results/transport.md
    .venv/bin/python bench/bench_transport.py --quick   # 400 indicators, fewer settings

Mixed indicators (about 2.8 upstream calls each) against the simulator at 100 ms +- 30 ms, in
a fresh client process per run (bench_worker.py), two ways:

- direct: plain HTTP to the simulator on 127.0.0.1;
- proxy: HTTPS through a CONNECT proxy, as corporate users have: the simulator served over TLS
  with a throwaway certificate (trusted through SSL_CERT_FILE) and a small tunnelling proxy,
  both on 127.0.0.1 in this process (HTTPS_PROXY).

For each transport: wall time, indicators a minute and the client's CPU per upstream call
without a profiler, at several MAX_WORKERS; then one cProfile run (400 indicators,
MAX_WORKERS=50, through the proxy) per transport and its top functions by own CPU time (the
profiler's timer is process CPU time, so waiting in epoll counts for nothing). cProfile's own
cost per Python call inflates many-small-call code such as httpcore's pool scans, so the
profile shows *where* the CPU goes and the unprofiled runs show *how much*.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import uvicorn
from simbench import (
    JITTER,
    LATENCY,
    RESULTS,
    VENDORS,
    bench_env,
    mixed_indicators,
    run_worker,
    simulator,
    write_input,
)

from threatintel.simulator import Simulator, SimulatorConfig, SimulatorServer, VendorConfig
from threatintel.simulator.server import BASE_PATHS

TRANSPORTS = {"httpcore": "httpx 0.x on httpcore's pool (before)", "default": "aiohttp (after)"}


class TunnelProxy:
    """A minimal HTTPS proxy: answers CONNECT host:port and splices bytes both ways."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        method, target, _ = head.split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host != "127.0.0.1":  # loopback only, like the simulator
            writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def __enter__(self) -> TunnelProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextmanager
def tls_simulator(home: Path) -> Iterator[tuple[Simulator, int, Path]]:
    """The simulator over HTTPS on 127.0.0.1 with a throwaway certificate (its path given)."""
    cert, key = home / "cert.pem", home / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    config = SimulatorConfig()
    for name in VENDORS:
        setattr(config, name, VendorConfig(latency=LATENCY, jitter=JITTER))
    simulator_app = Simulator(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            simulator_app.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield simulator_app, sock.getsockname()[1], cert
    finally:
        server.should_exit = True
        thread.join(5)


def top(profile: Path, limit: int = 12) -> str:
    """The profile's heaviest functions by own time, as a Markdown table."""
    stats = pstats.Stats(str(profile), stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    lines = ["| function | calls | own s | cumulative s | share of CPU, cumulative |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for (file, line, name), (_, calls, own, cumulative, _) in entries[:limit]:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}({name})" if line else name
        lines.append(
            f"| `{where}` | {calls:,} | {own:.2f} | {cumulative:.2f} | "
            f"{100 * cumulative / total:.0f}% |"
        )
    return f"total {total:.2f} s\n\n" + "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        sys.exit("openssl is needed to make the proxy run's certificate")
    sizes = [(400, 50)] if args.quick else [(1000, 10), (1000, 50), (1000, 200)]
    lines = [
        "# Transport: CPU per upstream request, httpcore's pool against aiohttp's",
        "",
        f"`python bench/bench_transport.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; simulator at 100 ms +- 30 ms "
        "on 127.0.0.1, mixed indicators (2.8 upstream calls each), memory cache, one client "
        "process per run. CPU is the client process's own (`time.process_time`), no profiler.",
        "",
        "| route | transport | indicators | MAX_WORKERS | wall s | indicators/min "
        "| CPU ms per upstream call |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        with simulator() as sim:
            lines += _runs("direct (HTTP)", bench_env(sim, scratch), home, sizes, sim)
        with tls_simulator(home) as (tls, port, cert), TunnelProxy() as proxy:
            env = _tls_env(port, cert, proxy.port, scratch)
            lines += _runs("HTTPS via CONNECT proxy", env, home, sizes, tls)
            profiles = {}
            for transport in TRANSPORTS:
                out = home / f"{transport}.prof"
                path = write_input(home / f"prof-{transport}.txt", mixed_indicators(400, 7_000))
                penv = env | {"MAX_WORKERS": "50", "CACHE_BACKEND": "memory"}
                run_worker(
                    ["analyze", str(path), "--transport", transport, "--profile", str(out)],
                    penv,
                    scratch,
                )
                profiles[transport] = top(out)
    for transport, label in TRANSPORTS.items():
        lines += [
            "",
            f"## cProfile, {label}: 400 indicators, MAX_WORKERS=50, HTTPS via CONNECT proxy",
            "",
            profiles[transport],
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("transport-quick.md" if args.quick else "transport-runs.md")).write_text(text)
    return 0


def _runs(
    route: str,
    env: dict[str, str],
    home: Path,
    sizes: list[tuple[int, int]],
    sim: SimulatorServer | Simulator,
) -> list[str]:
    lines = []
    for n, workers in sizes:
        for transport, label in TRANSPORTS.items():
            sim.log.clear()
            path = write_input(home / "in.txt", mixed_indicators(n, offset=workers * 10_000))
            envw = env | {"MAX_WORKERS": str(workers), "CACHE_BACKEND": "memory"}
            out = run_worker(["analyze", str(path), "--transport", transport], envw, str(home))
            calls = max(len(sim.log), 1)
            lines.append(
                f"| {route} | {label} | {n:,} | {workers} | {out['seconds']:.2f} | "
                f"{60 * n / out['seconds']:,.0f} | {1000 * out['cpu_seconds'] / calls:.2f} |"
            )
            print(lines[-1], flush=True)
    return lines


def _tls_env(port: int, cert: Path, proxy_port: int, home: str) -> dict[str, str]:
    """bench_env's settings, but HTTPS base URLs, the proxy and the certificate to trust."""

    urls = {name: f"https://127.0.0.1:{port}/{name}{BASE_PATHS[name]}" for name in VENDORS}
    env = bench_env(SimpleNamespace(base_urls=urls), home)  # type: ignore[arg-type]
    env |= {"HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}", "SSL_CERT_FILE": str(cert)}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return env


if __name__ == "__main__":
    sys.exit(main())
