"""Issue 10's load figure: single-indicator lookups over HTTP, 50 concurrent clients, warm cache.

    .venv/bin/python bench/bench_http_load.py                 # 20 s of load, wrk if installed
    .venv/bin/python bench/bench_http_load.py --seconds 5 --client python

One `threatintel server --transport http` process (the installed console script, default
settings but for the simulator's endpoints, a token, and API_RATE_LIMIT=0 because every bench
client comes from 127.0.0.1 and would share one client's budget) serves the simulator's
answers from its SQLite cache: the cache is warmed first with one POST /api/v1/analyze of the
indicators, then the clients send `GET /api/v1/indicators/{value}` round the same indicators
for the given time. The load comes from a second process: wrk (Debian's package, C, one
thread per core) when installed, else an aiohttp client (``--client python``), which needs a
core of its own and so measures less. Prints throughput, p50/p99 latency, errors and the
server's peak RSS (VmHWM), each next to the issue's goal, and writes
bench/results/http_load.json unless --no-save.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from simbench import RESULTS, bench_env, mixed_indicators, simulator

TOKEN = "bench-token-0123456789"
GOALS = {"throughput": 1_000.0, "p99_ms": 100.0, "rss_mb": 150.0, "cpu_ms_per_lookup": 1.0}
CONNECTIONS = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(base: str, proc: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    import httpx

    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit("server did not answer /health in time")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(base: str, paths: list[str], seconds: float, home: str) -> dict[str, Any]:
    script = Path(home) / "paths.lua"
    listed = ",\n".join(json.dumps(p) for p in paths)
    script.write_text(
        f"local paths = {{\n{listed}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f'  return wrk.format("GET", paths[(i % #paths) + 1], '
        f'{{["Authorization"] = "Bearer {TOKEN}"}})\nend\n'
    )
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency", "-s", str(script)]
    out = subprocess.run([*cmd, base], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock_errors = re.search(r"Socket errors:.*", out)
    return {
        "client": "wrk -t1 -c50",
        "throughput": float(rate.group(1)) if rate else float("nan"),
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock_errors.group(0) if sock_errors else "",
    }


async def _python_load(base: str, paths: list[str], seconds: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    bad = 0
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal bad
        i = n
        while time.perf_counter() < stop:
            started = time.perf_counter()
            async with session.get(base + paths[i % len(paths)], headers=headers) as resp:
                await resp.read()
                bad += resp.status != 200
            latencies.append(time.perf_counter() - started)
            i += CONNECTIONS

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(n, session) for n in range(CONNECTIONS)))
        took = time.perf_counter() - began
    latencies.sort()
    return {
        "client": "aiohttp, 50 tasks, one process",
        "throughput": len(latencies) / took,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "non_2xx": bad,
        "socket_errors": "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--indicators", type=int, default=500)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--cache", choices=["sqlite", "memory", "redis"], default="sqlite", help="CACHE_BACKEND"
    )
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument(
        "--py-spy", metavar="FILE", help="also sample the server with py-spy (collapsed stacks)"
    )
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    values = [v for v in mixed_indicators(args.indicators * 2) if not v.startswith("http")]
    values = values[: args.indicators]
    paths = [f"/api/v1/indicators/{quote(v, safe='')}" for v in values]
    threatintel = str(Path(sys.executable).with_name("threatintel"))
    with simulator() as sim, tempfile.TemporaryDirectory() as home:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = bench_env(
            sim,
            home,
            THREATINTEL_API_TOKEN=TOKEN,
            API_RATE_LIMIT="0",
            CACHE_DIR=str(Path(home) / "cache"),
            CACHE_BACKEND=args.cache,
            **({"REDIS_URL": "redis://127.0.0.1:6379/14"} if args.cache == "redis" else {}),
        )
        server = subprocess.Popen(
            [threatintel, "server", "--transport", "http", "--port", str(port)],
            env=env,
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(home) / "server.log", "wb"),  # noqa: SIM115 - closed with the dir
        )
        try:
            wait_healthy(base, server)
            import httpx

            began = time.perf_counter()
            warm = httpx.post(
                f"{base}/api/v1/analyze",
                json={"iocs": values},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            )
            warm.raise_for_status()
            warm_s = time.perf_counter() - began
            spy = None
            if args.py_spy:
                spy_cmd = [str(Path(sys.executable).with_name("py-spy")), "record"]
                spy_cmd += ["--format", "raw", "-o", args.py_spy, "-d", str(int(args.seconds))]
                spy = subprocess.Popen(
                    [*spy_cmd, "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            cpu_before = cpu_seconds(server.pid)
            if use_wrk:
                result = run_wrk(base, paths, args.seconds, home)
            else:
                result = asyncio.run(_python_load(base, paths, args.seconds))
            served = result["throughput"] * args.seconds
            # The server's CPU per lookup, whatever else the machine runs: 1,000 lookups/s
            # on the one core a Python process computes on needs at most 1 ms each.
            result["cpu_ms_per_lookup"] = (cpu_seconds(server.pid) - cpu_before) / served * 1000
            result["rss_mb"] = vm_hwm_mb(server.pid)
            if spy is not None:
                spy.wait(timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=30)
        log_tail = (Path(home) / "server.log").read_text(errors="replace")[-1500:]
    result |= {
        "cache": args.cache,
        "seconds": args.seconds,
        "indicators": len(values),
        "warm_seconds": round(warm_s, 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(f"load: {result['client']}, {args.seconds:g} s, {len(values)} warm indicators")
    for name, unit, better in (
        ("throughput", "lookups/s", max),
        ("p50_ms", "ms", min),
        ("p99_ms", "ms", min),
        ("rss_mb", "MB", min),
        ("cpu_ms_per_lookup", "ms CPU", min),
    ):
        goal = GOALS.get(name)
        value = result[name]
        verdict = ""
        if goal is not None:
            met = value >= goal if better is max else value <= goal
            sign = ">=" if better is max else "<="
            verdict = f"(goal {sign} {goal:g}: {'met' if met else 'MISSED'})"
        print(f"  {name:<11} {value:>10.1f} {unit:<10} {verdict}")
    print(f"  non-2xx     {result['non_2xx']:>10} {result['socket_errors']}")
    if result["non_2xx"]:
        print("server log tail:\n" + log_tail)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "http_load.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
