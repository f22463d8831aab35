"""One measured run in a fresh process, for bench/run.py (not meant to be run by hand).

    python bench/bench_worker.py analyze INPUT_FILE [--stream] [--providers otx,ipinfo]
                                 [--vt-window SECONDS] [--profile OUT.prof]
                                 [--transport default|httpcore]
    python bench/bench_worker.py warm INDICATOR --rounds 200

Settings come from the environment that run.py builds (the simulator's endpoints and keys, a
scratch cache directory). Each run prints one JSON object on stdout: wall and CPU seconds of
the measured part, how many enrichments and which source statuses came back, and the
process's peak RSS (``resource.getrusage``: kilobytes on Linux). A separate process per figure
keeps the client's CPU apart from the simulator's (which runs in run.py) and makes peak RSS
the figure's own.

``--stream`` consumes ``Engine.stream`` and keeps only counts, as a batch job does (bounded
memory); without it, or before the engine has ``stream``, ``Engine.analyze`` collects every
enrichment. ``--vt-window`` shortens VirusTotal's per-minute window to SECONDS (the simulator
is given the same window), so the free tier's pace can be measured in seconds, not hours.
``--transport httpcore`` hands the engine httpx's own pooled client (the transport before
issue 9) for bench_transport.py's comparison.
"""

from __future__ import annotations

import contextlib

# Set up as the CLI's own process is (httpx's command-line client left out, the collector's
# pace), before httpx is imported and when this version does it, so that the figures are
# those of `threatintel analyze`.
with contextlib.suppress(ImportError):
    from threatintel._process import prepare

    prepare()

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from threatintel.engine import Engine
from threatintel.models import Enrichment
from threatintel.quota import Window
from threatintel.settings import Settings
from threatintel.wiring import USER_AGENT


def _count(counts: Counter[str], enrichment: Enrichment) -> None:
    for result in enrichment.sources.values():
        counts[str(result.status.value)] += 1


async def _run(
    engine: Engine, values: list[str], providers: list[str] | None, stream: bool
) -> tuple[int, Counter[str], str]:
    """(enrichments, statuses, the path taken) of one run over ``values``."""
    counts: Counter[str] = Counter()
    if stream and hasattr(engine, "stream"):
        done = 0
        async for enrichment in engine.stream(values, providers=providers):
            done += 1
            _count(counts, enrichment)
        return done, counts, "stream"
    analysis = await engine.analyze(values, providers=providers)
    for enrichment in analysis.enrichments:
        _count(counts, enrichment)
    return len(analysis.enrichments), counts, "analyze"


async def analyze(args: argparse.Namespace) -> dict[str, Any]:
    values = args.input.read_text(encoding="utf-8").splitlines()
    providers = args.providers.split(",") if args.providers else None
    windows = None
    if args.vt_window:
        windows = {"virustotal": [Window.per_minute(4, seconds=args.vt_window)]}
    settings = Settings.load()
    client = None
    if args.transport == "httpcore":
        # httpx's own pool, configured as build_client configured it before issue 9.
        client = httpx.AsyncClient(
            timeout=settings.request_timeout,
            limits=httpx.Limits(
                max_connections=max(10, settings.max_workers * 2),
                max_keepalive_connections=max(10, settings.max_workers),
            ),
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
        )
    async with Engine(settings, windows=windows, client=client) as engine:
        with contextlib.suppress(ImportError):  # as `threatintel analyze` does (cli_run)
            from threatintel._process import settle

            settle()
        profiler = None
        if args.profile is not None:
            import cProfile

            profiler = cProfile.Profile(time.process_time)  # CPU, not waiting
            profiler.enable()
        started = time.time()
        wall, cpu = time.perf_counter(), time.process_time()
        done, counts, path = await _run(engine, values, providers, args.stream)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
    if client is not None:
        await client.aclose()
    return {
        "started": started,
        "seconds": wall,
        "cpu_seconds": cpu,
        "inputs": len(values),
        "enrichments": done,
        "statuses": dict(counts),
        "path": path,
    }


async def warm(indicator: str, rounds: int) -> dict[str, Any]:
    """p50 of one indicator answered from the cache, in one engine kept open (a server's case)."""
    async with Engine(Settings.load()) as engine:
        first = await engine.analyze([indicator])  # cold: fills the cache
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            analysis = await engine.analyze([indicator])
            times.append(time.perf_counter() - start)
    cached = all(
        r.cached for e in analysis.enrichments for r in e.sources.values() if r.status.answered
    )
    counts: Counter[str] = Counter()
    for enrichment in first.enrichments:
        _count(counts, enrichment)
    return {
        "p50": statistics.median(times),
        "p90": statistics.quantiles(times, n=10)[-1],
        "rounds": rounds,
        "all_cached": cached,
        "statuses": dict(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("analyze")
    one.add_argument("input", type=Path)
    one.add_argument("--profile", type=Path)
    one.add_argument("--stream", action="store_true")
    one.add_argument("--providers")
    one.add_argument("--vt-window", type=float)
    one.add_argument("--transport", choices=["default", "httpcore"], default="default")
    hot = sub.add_parser("warm")
    hot.add_argument("indicator")
    hot.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    if args.mode == "analyze":
        out = asyncio.run(analyze(args))
    else:
        out = asyncio.run(warm(args.indicator, args.rounds))
    out["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
