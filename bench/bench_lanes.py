"""Lanes per provider: which MAX_WORKERS default, and does a slow provider hold up the others?

    .venv/bin/python bench/bench_lanes.py                 # table; writes bench/results/lanes.txt
    .venv/bin/python bench/bench_lanes.py -n 400 --workers 5,10,25 --no-save

1. Throughput by MAX_WORKERS (HTTP calls in flight per provider, taken after the quota
   grant): N mixed indicators (IPs, domains, URLs, hashes in turn), cold (memory cache), every
   provider answering after LATENCY (100 ms, fixed: the simulator has no jitter), no quota in
   the way. Wall time, indicators a minute, upstream calls a second, and this process's CPU
   time: where the curve flattens, the client (not the upstream) is the bound.
2. Lanes: 100 IPs with VirusTotal at its free tier (4 a minute) and a 10 s deadline. The other
   three providers should be done in about the time their own calls take, and the VirusTotal
   lookups still waiting come back ``pending`` instead of holding everything up for 25 min.

The simulator runs in a child process, so its CPU does not compete with the client's for the
GIL (on a shared machine the numbers still move with the load; compare within one run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simbench import mixed_indicators  # bench/ is on the path when a script runs

from threatintel.cache import MemoryCache
from threatintel.cli_sim import simulator_settings
from threatintel.engine import Engine, LookupEvent
from threatintel.models import SourceStatus
from threatintel.quota import MemoryQuotaStore
from threatintel.settings import Settings

RESULTS = Path(__file__).parent / "results" / "lanes.txt"
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")
LATENCY = 0.100


def serve() -> None:
    """The child: the simulator with LATENCY on every vendor and no quotas, until stdin ends."""
    from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig

    config = SimulatorConfig()
    for name in VENDORS:
        setattr(config, name, VendorConfig(latency=LATENCY))
    with SimulatorServer(config) as server:
        print(json.dumps(server.base_urls), flush=True)
        sys.stdin.read()


class Simulator:
    """The simulator in a child process; ``cpu`` is the CPU seconds it used, once it ended
    (when it is close to a run's wall time, the simulator, not the client, was the bound)."""

    def __enter__(self) -> Simulator:
        self._before = _children_cpu()
        self._child = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdout is not None
        self.urls: dict[str, str] = json.loads(self._child.stdout.readline())
        self.cpu = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._child.stdin is not None
        self._child.stdin.close()
        self._child.wait(timeout=30)
        self.cpu = _children_cpu() - self._before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def settings_for(urls: dict[str, str], **overrides: Any) -> Settings:
    """The demo's settings (the simulator's endpoints, no quotas, memory cache), no retries."""
    values: dict[str, Any] = {"max_retries": 0, "max_quota_wait": 0}
    return simulator_settings(urls, **(values | overrides))


async def throughput(urls: dict[str, str], n: int, workers: int) -> dict[str, float]:
    settings = settings_for(urls, max_workers=workers)
    calls = 0

    def count(event: LookupEvent) -> None:
        nonlocal calls
        calls += not event.cached

    async with Engine(
        settings, quota_store=MemoryQuotaStore(), on_lookup=count, trust_env=False
    ) as engine:
        cpu, wall = time.process_time(), time.perf_counter()
        done = 0
        async for _ in engine.stream(mixed_indicators(n)):
            done += 1
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    return {
        "max_workers": workers,
        "indicators": done,
        "seconds": round(wall, 2),
        "per_minute": round(done / wall * 60),
        "calls_per_second": round(calls / wall),
        "cpu_seconds": round(cpu, 2),
    }


async def lanes(urls: dict[str, str], deadline: float) -> dict[str, float]:
    settings = settings_for(urls, virustotal_rate_limit=4, max_quota_wait=None, rate_limit_margin=0)
    finished: dict[str, float] = {}
    start = time.perf_counter()

    def note(event: LookupEvent) -> None:
        finished[event.provider] = time.perf_counter() - start

    values = [f"45.{i // 250 + 90}.{i % 250 + 1}.9" for i in range(100)]
    cache = MemoryCache()
    async with Engine(
        settings, cache=cache, quota_store=MemoryQuotaStore(), on_lookup=note, trust_env=False
    ) as engine:
        analysis = await engine.analyze(values, deadline=deadline)
    pending = sum(
        e.sources["virustotal"].status is SourceStatus.PENDING for e in analysis.enrichments
    )
    return {
        "deadline": deadline,
        "answered_in": round(time.perf_counter() - start, 2),
        "otx_done_at": round(finished.get("otx", -1), 2),
        "abuseipdb_done_at": round(finished.get("abuseipdb", -1), 2),
        "ipinfo_done_at": round(finished.get("ipinfo", -1), 2),
        "virustotal_answered": 100 - pending,
        "virustotal_pending": pending,
    }


def table(rows: list[dict[str, float]]) -> str:
    keys = list(rows[0])
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(str(row[k]) for k in keys) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000, help="indicators per throughput run")
    parser.add_argument("--workers", default="5,10,20,50,100", help="MAX_WORKERS values")
    parser.add_argument("--deadline", type=float, default=10.0, help="lanes run deadline (s)")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name}")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    runs = []
    for workers in args.workers.split(","):
        with Simulator() as sim:
            run = asyncio.run(throughput(sim.urls, args.n, int(workers)))
        runs.append(run | {"simulator_cpu_seconds": round(sim.cpu, 2)})
    with Simulator() as sim:
        lane = asyncio.run(lanes(sim.urls, args.deadline))
    report = (
        f"1. {args.n} mixed indicators, cold, {LATENCY * 1000:.0f} ms per call, by MAX_WORKERS "
        "(per provider)\n\n"
        + table(runs)
        + "\n\n2. 100 IPs, VirusTotal at 4/min, the others unlimited, deadline "
        f"{args.deadline:g} s (seconds since the start)\n\n" + table([lane]) + "\n"
    )
    print(report)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report)


if __name__ == "__main__":
    main()
