"""How fast, and in how much memory, does `threatintel batch` get through a large file?

    .venv/bin/python bench/bench_batch.py      # prints a table; writes bench/results/batch.txt
    .venv/bin/python bench/bench_batch.py --cold 500 --lines 20000 --no-save

Three whole-process runs of `threatintel batch FILE --format jsonl -o OUT --quiet`, each with a
fresh SQLite job store and cache under a scratch directory:

- cold: ``--cold`` mixed public indicators (domains, addresses, URLs, hashes), every source asked
  through the simulator (no latency: the client is measured, not the network);
- warm: the same file again as a new job, answered from the SQLite cache;
- ingest: ``--lines`` lines of private addresses, which no source is asked about, so the run
  is the streaming path alone: read, parse, dedupe in the store, write rows and JSON Lines.

Peak RSS is the child's (``ru_maxrss`` of the finished process).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_startup import VENDORS
from bench_startup import cli_env as startup_env

from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig

RESULTS = Path(__file__).parent / "results" / "batch.txt"


def cli_env(sim: SimulatorServer, home: str) -> dict[str, str]:
    """bench_startup's environment (simulator, fake keys, high limits), with the default
    SQLite cache and job store in the scratch directory."""
    env = startup_env(sim, home)
    env |= {
        "CACHE_BACKEND": "sqlite",
        "CACHE_DIR": str(Path(home) / "cache"),
        "XDG_CONFIG_HOME": str(Path(home) / "config"),
    }
    return env


def mixed(count: int) -> list[str]:
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            out.append(f"host{i}.bench-{i % 97}[.]com")
        elif kind == 1:
            out.append(f"45.{(i // 65536) % 200 + 20}.{(i // 256) % 256}.{i % 256}")
        elif kind == 2:
            out.append(f"hxxp://bench{i}[.]net/path/{i}")
        else:
            out.append(hashlib.sha256(str(i).encode()).hexdigest())
    return out


def run(env: dict[str, str], source: Path, out: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB, and lines written, for one batch process."""
    started = time.perf_counter()
    pid = subprocess.Popen(
        [sys.executable, "-m", "threatintel", "batch", str(source), "-o", str(out), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ).pid
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"batch failed on {source.name}")
    with out.open() as handle:
        lines = sum(1 for _ in handle)
    return elapsed, usage.ru_maxrss / 1024, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=1_000, help="mixed indicators asked cold")
    parser.add_argument("--lines", type=int, default=100_000, help="lines for the ingest run")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    config = SimulatorConfig()
    for name in VENDORS:
        setattr(config, name, VendorConfig())
    rows = []
    with SimulatorServer(config) as sim, tempfile.TemporaryDirectory() as home:
        env = cli_env(sim, home)
        work = Path(home)
        source = work / "mixed.txt"
        source.write_text("".join(v + "\n" for v in mixed(args.cold)))
        for label in ("cold", "warm (SQLite cache)"):
            seconds, rss, lines = run(env, source, work / "out.jsonl")
            rate = lines / seconds * 60
            rows.append((f"{args.cold:,} mixed, {label}", seconds, rate, rss, lines))
        private = work / "private.txt"
        with private.open("w") as handle:
            for i in range(args.lines):
                handle.write(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256} seen at step {i}\n")
        seconds, rss, lines = run(env, private, work / "private.jsonl")
        rows.append(
            (f"{args.lines:,} lines, ingest only", seconds, lines / seconds * 60, rss, lines)
        )
        requests = len(sim.log.records())
    header = f"{'run':<34} {'seconds':>8} {'per min':>9} {'peak RSS':>9} {'rows':>7}"
    table = [header, "-" * len(header)]
    for name, seconds, rate, rss, lines in rows:
        table.append(f"{name:<34} {seconds:8.1f} {rate:9,.0f} {rss:7.0f}MB {lines:7,}")
    table.append(
        f"simulator requests: {requests:,}; child peak RSS over all runs: "
        f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB"
    )
    # Shared machines skew every figure: say how busy this one was.
    table.append(
        "load average (1/5/15 min) at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    )
    text = "\n".join(table)
    print(text)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
