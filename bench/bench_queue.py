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
from collections import Counter
from pathlib import Path
from typing import Any

from simbench import (
    LATENCY,
    RESULTS,
    bench_env,
    mixed_indicators,
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
                for other in workers:  # none may be left behind to take a later run's chunks
                    other.kill()
                sys.exit(f"worker {index} did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
    return workers


async def run_job(values: list[str], env: dict[str, str]) -> tuple[float, int, dict[str, int]]:
    """Submit the job here (queue only) and wait for it; (seconds, indicators done, how many
    source answers ended in each status)."""
    os.environ.update(env)
    from threatintel.service import Service
    from threatintel.settings import Settings

    settings = Settings.load(embedded_worker=False)
    async with Service(settings) as service:
        began = time.perf_counter()
        job = await service.submit(values, label="bench")
        job = await service.wait(job.id, timeout=600)
        seconds = time.perf_counter() - began
        statuses: Counter[str] = Counter()
        async for body in service.jobs.results(job.id):
            for source in json.loads(body)["sources"].values():
                statuses[source["status"]] += 1
    if job.state.value != "done":
        sys.exit(f"the job ended {job.state.value}: {job.message}")
    return seconds, job.done, dict(statuses)


SIMULATOR = """
import json, sys
sys.path.insert(0, {bench!r})
from simbench import bench_env, duplicate_calls, lookups, simulator
with simulator() as sim:
    print(json.dumps(sim.base_urls), flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    print(json.dumps([len(lookups(sim)), duplicate_calls(sim)]), flush=True)
"""


class SimulatorProcess:
    """The simulator in a process of its own: its CPU is then measured apart from the bench's
    and the workers'. Its request log's figures come back when its stdin closes."""

    def __init__(self) -> None:
        code = SIMULATOR.format(bench=str(Path(__file__).parent))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.base_urls: dict[str, str] = json.loads(self.proc.stdout.readline())

    def finish(self) -> tuple[int, int]:
        """(lookups asked, duplicate lookups), once the simulator has stopped."""
        out, _ = self.proc.communicate("", timeout=60)
        asked, duplicates = json.loads(out)
        return int(asked), int(duplicates)


def redis_pid() -> int | None:
    found = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    return int(found.stdout.split()[0]) if found.stdout.split() else None


def one_run(workers: int, count: int, offset: int) -> dict[str, Any]:
    clear_redis()
    values = mixed_indicators(count, offset=offset)
    sim = SimulatorProcess()
    redis = redis_pid()
    with tempfile.TemporaryDirectory() as home:
        env = bench_env(sim, home, REDIS_URL=REDIS_URL)  # type: ignore[arg-type]
        logs = Path(os.environ.get("BENCH_LOGS", home))
        procs = start_workers(workers, env, logs)
        try:
            sim_cpu, redis_cpu = cpu_seconds(sim.proc.pid), cpu_seconds(redis) if redis else 0.0
            seconds, done, statuses = asyncio.run(run_job(values, env))
            cpu = sum(cpu_seconds(p.pid) for p in procs)
            sim_cpu = cpu_seconds(sim.proc.pid) - sim_cpu
            redis_cpu = (cpu_seconds(redis) - redis_cpu) if redis else 0.0
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            asked, duplicates = sim.finish()
    cores = os.cpu_count() or 1
    latency_bound = asked * LATENCY / (workers * MAX_WORKERS * 4)
    # Everything on this machine that the run needs shares its cores: the bound is the CPU
    # of workers, simulator and Redis together, spread over every core.
    cpu_total = cpu + sim_cpu + redis_cpu
    return {
        "workers": workers,
        "indicators": done,
        "seconds": round(seconds, 2),
        "indicators_per_s": round(done / seconds, 1),
        "lookups_per_s": round(asked / seconds, 1),
        "lookups": asked,
        "duplicate_lookups": duplicates,
        "source_statuses": statuses,
        "worker_cpu_s": round(cpu, 2),
        "cpu_ms_per_indicator": round(1000 * cpu / done, 2),
        "latency_bound_s": round(latency_bound, 2),
        "simulator_cpu_s": round(sim_cpu, 2),
        "redis_cpu_s": round(redis_cpu, 2),
        "cpu_bound_s": round(max(cpu / workers, cpu_total / cores), 2),
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
            f"({run['cpu_ms_per_indicator']} ms/indicator), simulator {run['simulator_cpu_s']} s, "
            f"Redis {run['redis_cpu_s']} s; bounds: latency "
            f"{run['latency_bound_s']} s, CPU {run['cpu_bound_s']} s on "
            f"{os.cpu_count()} cores; answers {run['source_statuses']}",
            flush=True,
        )
    if not args.no_save:
        out = RESULTS / "queue.json"
        machine = {"cores": os.cpu_count(), "python": platform.python_version()}
        out.write_text(json.dumps({"machine": machine, "runs": runs}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
