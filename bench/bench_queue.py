"""Issue 11's figure: a batch job's throughput with 1, 2 and 4 `threatintel worker` processes.

    .venv/bin/python bench/bench_queue.py                    # 2,000 mixed indicators per run
    .venv/bin/python bench/bench_queue.py --count 500 --workers 1 2 --no-save

For each worker count: an emptied Redis database (cache, quotas, jobs and the queue all
start cold), that many `threatintel worker --concurrency 4` processes (the installed console
script, default settings but the simulator's endpoints), then one job of ``--count`` fresh
mixed indicators submitted from this process through ``Service.submit`` with
EMBEDDED_WORKER=false, so the workers alone run it. Timed from submission to the job's
``done``; the simulator (in this process, 100 ms +- 30 ms per answer, no quotas) logs every
upstream call, so duplicates are counted too.

Printed per run: indicators/s, upstream lookups/s, the workers' CPU seconds (from /proc) and
the two bounds a run cannot beat: the latency bound (every lookup waits ~100 ms, at most
MAX_WORKERS in flight per provider per worker) and the CPU bound (the CPU the run used,
spread over this machine's cores, which the simulator and Redis share). Writes
bench/results/queue.json unless --no-save.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simbench import (
    LATENCY,
    RESULTS,
    bench_env,
    duplicate_calls,
    lookups,
    mixed_indicators,
    simulator,
)

REDIS_URL = "redis://127.0.0.1:6379/9"
CONSOLE_SCRIPT = str(Path(sys.executable).parent / "threatintel")
CONCURRENCY = 4
MAX_WORKERS = 50  # the setting's default: in-flight lookups per provider per process
STARTED = "working on queued job chunks"


def clear_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match="threatintel*"))
    if keys:
        client.delete(*keys)
    client.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    workers = []
    for index in range(count):
        log = logs / f"worker-{index}.log"
        with log.open("wb") as stderr:
            workers.append(
                subprocess.Popen(
                    [CONSOLE_SCRIPT, "worker", "--concurrency", str(CONCURRENCY)],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            )
    until = time.monotonic() + 60
    for index, worker in enumerate(workers):
        log = logs / f"worker-{index}.log"
        while STARTED not in log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > until:
                sys.exit(f"worker {index} did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
    return workers


async def run_job(values: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Submit the job here (queue only) and wait for it; (seconds, indicators done)."""
    os.environ.update(env)
    from threatintel.service import Service
    from threatintel.settings import Settings

    settings = Settings.load(embedded_worker=False)
    async with Service(settings) as service:
        began = time.perf_counter()
        job = await service.submit(values, label="bench")
        job = await service.wait(job.id, timeout=600)
        seconds = time.perf_counter() - began
    if job.state.value != "done":
        sys.exit(f"the job ended {job.state.value}: {job.message}")
    return seconds, job.done


def one_run(workers: int, count: int, offset: int) -> dict[str, Any]:
    clear_redis()
    values = mixed_indicators(count, offset=offset)
    with simulator() as sim, tempfile.TemporaryDirectory() as home:
        env = bench_env(sim, home, REDIS_URL=REDIS_URL)
        procs = start_workers(workers, env, Path(home))
        try:
            seconds, done = asyncio.run(run_job(values, env))
            cpu = sum(cpu_seconds(p.pid) for p in procs)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
        asked = len(lookups(sim))
        duplicates = duplicate_calls(sim)
    cores = os.cpu_count() or 1
    latency_bound = asked * LATENCY / (workers * MAX_WORKERS * 4)
    return {
        "workers": workers,
        "indicators": done,
        "seconds": round(seconds, 2),
        "indicators_per_s": round(done / seconds, 1),
        "lookups_per_s": round(asked / seconds, 1),
        "lookups": asked,
        "duplicate_lookups": duplicates,
        "worker_cpu_s": round(cpu, 2),
        "cpu_ms_per_indicator": round(1000 * cpu / done, 2),
        "latency_bound_s": round(latency_bound, 2),
        "cpu_bound_s": round(cpu / min(cores, workers), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    runs = []
    for n, workers in enumerate(args.workers):
        run = one_run(workers, args.count, offset=n * args.count)
        runs.append(run)
        print(
            f"{workers} worker(s): {run['indicators']} indicators in {run['seconds']} s = "
            f"{run['indicators_per_s']}/s ({run['lookups_per_s']} lookups/s), "
            f"{run['duplicate_lookups']} duplicate lookups; worker CPU {run['worker_cpu_s']} s "
            f"({run['cpu_ms_per_indicator']} ms/indicator); bounds: latency "
            f"{run['latency_bound_s']} s, CPU {run['cpu_bound_s']} s on "
            f"{os.cpu_count()} cores",
            flush=True,
        )
    if not args.no_save:
        out = RESULTS / "queue.json"
        machine = {"cores": os.cpu_count(), "python": platform.python_version()}
        out.write_text(json.dumps({"machine": machine, "runs": runs}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
