"""Batch work spread over `threatintel worker` processes on the local Redis: one API process
takes a job of 2,000 indicators, three workers run its chunks against the simulator (100 ms per
answer), one is killed with SIGKILL midway, and the job still ends with every indicator once and
no answered lookup asked upstream twice."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from http_server import CONSOLE_SCRIPT, ServerProcess
from support import VENDOR_NAMES, emptied_redis_database, sim_env
from threatintel.simulator import SimulatorServer

TOKEN = "workers-token-7c1f9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A database of its own on the local Redis, emptied before and after (no other test uses it).
REDIS_DB = 12
STARTED = re.compile(r"worker (\S+): working on queued job chunks")
#: Bounds for polling (never slept on: each poll waits on a process or a request).
START_TIMEOUT = 30.0
#: Indicators per chunk: the job's chunk N holds input indicators N*50 to N*50+49.
BATCH_SIZE = 50
JOB_TIMEOUT = 150.0


def indicators(count: int) -> list[str]:
    """``count`` distinct public indicators, half IPv4 (four sources each), half domains (two)."""
    half = count // 2
    ips = [f"45.{33 + i // 250}.{i % 250}.{7 + i % 3}" for i in range(half)]
    domains = [f"bad{i}.malware-host.net" for i in range(count - half)]
    return ips + domains


@pytest.fixture
def shared_redis() -> Iterator[str]:
    """REDIS_URL of an emptied database of its own; skips when no Redis answers."""
    with emptied_redis_database(REDIS_DB, "the worker tests") as url:
        yield url


class WorkerProcess:
    """`threatintel worker` in a process, with API keys of its own (so the simulator's log
    tells which worker asked what); ``name`` once it works."""

    def __init__(self, env: dict[str, str], index: int, log_dir: Path) -> None:
        self.keys = {name: f"{name}-worker-{index}" for name in VENDOR_NAMES}
        own = {f"{name.upper()}_API_KEY": key for name, key in self.keys.items()}
        # stderr to a file, not a pipe: a pipe nobody reads fills up and stops the worker
        # in the middle of writing a log line.
        self.log = log_dir / f"worker-{index}.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [CONSOLE_SCRIPT, "worker", "--concurrency", "2", "--name", f"w{index}"],
                env={**os.environ, **env, **own},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self) -> None:
        """Return once the worker says it works (bounded; waits on the process, not a clock)."""
        until = time.monotonic() + START_TIMEOUT
        while STARTED.search(self.stderr) is None:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited: {self.stderr}")
            if time.monotonic() > until:
                raise TimeoutError(f"the worker did not start: {self.stderr}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def wait_for(client: httpx.Client, url: str, done: int) -> dict[str, object]:
    """The job once it has ``done`` results or has finished (long polls, bounded)."""
    until = time.monotonic() + JOB_TIMEOUT
    while True:
        status: dict[str, object] = client.get(url, params={"wait": 1}).json()
        if status["state"] in {"done", "failed", "cancelled"}:
            return status
        assert isinstance(status["done"], int)
        if status["done"] >= done:
            return status
        if time.monotonic() > until:
            raise TimeoutError(f"the job did not get on: {status}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_worker_loses_nothing_and_repeats_no_answered_lookup(
    sim: SimulatorServer, shared_redis: str, tmp_path: Path
) -> None:
    """Three workers run a 2,000-indicator job; one is SIGKILLed midway; its chunks are
    delivered again, the job finishes with each indicator exactly once, and the only lookups
    asked twice are ones the killed worker had in flight when it died."""
    for name in VENDOR_NAMES:
        getattr(sim.config, name).latency = 0.1
    values = indicators(2_000)
    env = sim_env(
        sim,
        THREATINTEL_API_TOKEN=TOKEN,
        REDIS_URL=shared_redis,
        EMBEDDED_WORKER="false",
        JOB_REDELIVERY_TIMEOUT="3",
        BATCH_SIZE=str(BATCH_SIZE),
        API_RATE_LIMIT="0",
    )
    workers = [WorkerProcess(env, index, tmp_path) for index in range(3)]
    try:
        for worker in workers:
            worker.wait_started()
        with ServerProcess(env) as api, httpx.Client(headers=AUTH, timeout=30) as client:
            created = client.post(f"{api.url}/api/v1/jobs", json={"iocs": values})
            assert created.status_code == 202, created.text
            links = created.json()["links"]
            job_url = f"{api.url}{links['self']}"

            midway = wait_for(client, job_url, done=600)
            assert midway["state"] == "running", midway
            victim = workers[0]
            victim.process.send_signal(signal.SIGKILL)
            assert victim.stop() == -signal.SIGKILL

            final = wait_for(client, job_url, done=len(values) + 1)
            assert final["state"] == "done", final
            assert (final["done"], final["total"]) == (len(values), len(values))

            report = client.get(f"{api.url}{links['results']}", params={"format": "jsonl"})
            assert report.status_code == 200
            seen = [json.loads(line)["indicator"]["value"] for line in report.text.splitlines()]
            assert sorted(seen) == sorted(values)  # every indicator, each exactly once
    finally:
        for worker in workers:
            worker.stop()

    records = [r for r in sim.log.records() if r.status == 200 and r.indicator is not None]
    assert sim.log.dropped == 0
    victim_keys = set(workers[0].keys.values())
    survivor_keys = {key for worker in workers[1:] for key in worker.keys.values()}
    # The chunks the killed worker held when it died: those it started and never finished,
    # as its own log says. Only their indicators may have had a lookup in flight.
    log = workers[0].stderr
    started = {int(n) for n in re.findall(r"chunk (\d+) started", log)}
    finished = {int(n) for n in re.findall(r"chunk (\d+) done", log)}
    held = started - finished  # empty if it died between two chunks: then nothing repeats
    assert finished, "the killed worker had done no work: the kill was not midway"
    chunk_of = {value: index // BATCH_SIZE for index, value in enumerate(values)}
    asked: dict[tuple[str, str | None], list[str | None]] = {}
    for record in records:
        asked.setdefault((record.vendor, record.indicator), []).append(record.key)
    assert survivor_keys & {key for keys in asked.values() for key in keys}
    for (vendor, indicator), keys in asked.items():
        if len(keys) == 1:
            continue
        # Asked twice only if the killed worker asked it for a chunk it died holding, and a
        # survivor once more: a lookup whose answer reached the shared cache is not asked again.
        assert len(keys) == 2 and keys[0] in victim_keys and keys[1] in survivor_keys, keys
        assert chunk_of[str(indicator)] in held, (vendor, indicator, sorted(held))
