"""How long does a whole `threatintel` process take to start, and to answer one indicator?

    .venv/bin/python bench/bench_startup.py     # a table; writes bench/results/startup.{json,md}
    .venv/bin/python bench/bench_startup.py --runs 20 --no-save

Median wall time of N runs (10 by default) of each command as a fresh process, next to issue 9's
bounds: `threatintel version` (and `--help`) within 3 x `python -c "import typer"` (the unit:
what the CLI framework alone costs on this machine), and one IP analysed cold within the
start-up (the median of `version`) + one upstream round trip + 50 ms.

How it runs:
- The simulator runs in this process and answers every call after LATENCY (100 ms, fixed: one
  lookup's whole process is measured, and jitter would only widen the spread).
- The CLI gets the same environment as the tests' sim_env, with CACHE_BACKEND=memory so every
  run is cold, in an empty directory so no ./.env is read, and no REDIS_URL.
- Bytecode as an installed package has it: pip compiles every module at install time, but a
  checkout run with PYTHONDONTWRITEBYTECODE (as this machine's shells are) would recompile ours
  on every start. The children keep their bytecode under a scratch PYTHONPYCACHEPREFIX, filled
  by one untimed warm-up run of each command, so no file is written into the tree.

``run()`` returns the figures as rows ``{figure, value, bound, unit, ok}`` for the bench suite;
the reference row (``import typer``) has ``bound`` and ``ok`` None. The table also shows each
command's median CPU time (user + system, from ``getrusage``): on a shared machine the wall time
moves with the load, the CPU time much less, so it is the figure to compare runs by.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig

RESULTS = Path(__file__).parent / "results"
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")
LATENCY = 0.100  # seconds per upstream answer, as in the benchmark section
SLACK = 0.050  # the allowance over start-up + one round trip
START_UP_FACTOR = 3  # `threatintel version` within 3 x `import typer`
IP = "45.20.1.9"
RUNS = 10


def cli_env(sim: SimulatorServer, home: str) -> dict[str, str]:
    """The simulator's endpoints and fake keys, limits far above one run, nothing shared."""
    drop = {"REDIS_URL", "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    for name in VENDORS:
        env[f"{name.upper()}_BASE_URL"] = sim.base_urls[name]
        env[f"{name.upper()}_API_KEY"] = f"bench-{name}-key"
        env[f"{name.upper()}_RATE_LIMIT"] = "100000"
    env |= {
        "VIRUSTOTAL_DAILY_LIMIT": "100000",
        "VIRUSTOTAL_MONTHLY_LIMIT": "100000",
        "IPINFO_ANONYMOUS_DAILY_LIMIT": "100000",
        "MAX_RETRIES": "0",
        "MAX_QUOTA_WAIT": "0",
        "CACHE_BACKEND": "memory",
        # Bytecode kept outside the tree, as an installed package has it (see the docstring).
        "PYTHONPYCACHEPREFIX": str(Path(home) / "pycache"),
        # Any default on-disk location (quota store, reports) lands in the scratch directory.
        "HOME": home,
        "XDG_CACHE_HOME": home,
        "XDG_DATA_HOME": home,
        "XDG_STATE_HOME": home,
    }
    return env


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_time(argv: list[str], env: dict[str, str], cwd: str, runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` fresh processes, after one untimed warm-up run.

    A failing run aborts the bench: a figure from a process that failed measures nothing.
    """
    walls, cpus = [], []
    for attempt in range(runs + 1):
        cpu, start = children_cpu(), time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')[-500:]}")
        if attempt:  # the first run writes the bytecode
            walls.append(wall)
            cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def row(figure: str, value: float, bound: float | None) -> dict[str, Any]:
    return {
        "figure": figure,
        "value": round(value, 4),
        "bound": None if bound is None else round(bound, 4),
        "unit": "s",
        "ok": None if bound is None else value <= bound,
    }


def run(runs: int = RUNS) -> list[dict[str, Any]]:
    """Each figure's median over ``runs`` fresh processes, with its bound and whether it is met."""
    return [row for row, _ in measure(runs)]


def measure(runs: int) -> list[tuple[dict[str, Any], float]]:
    """The rows of ``run()``, each with the command's median CPU seconds."""
    cli = str(Path(sys.executable).with_name("threatintel"))
    config = SimulatorConfig()
    for name in VENDORS:
        setattr(config, name, VendorConfig(latency=LATENCY))
    with tempfile.TemporaryDirectory() as home, SimulatorServer(config) as sim:
        env = cli_env(sim, home)

        def timed(*argv: str) -> tuple[float, float]:
            return median_time(list(argv), env, home, runs)

        (typer_s, typer_cpu) = timed(sys.executable, "-c", "import typer")
        (version_s, version_cpu) = timed(cli, "version")
        (help_s, help_cpu) = timed(cli, "--help")
        (analyze_s, analyze_cpu) = timed(cli, "analyze", IP, "--format", "json")

    start_up, relative = START_UP_FACTOR * typer_s, f"<= {START_UP_FACTOR} x import typer"
    allowance = f"<= version + {LATENCY * 1000:.0f} ms round trip + {SLACK * 1000:.0f} ms"
    one = version_s + LATENCY + SLACK
    return [
        (row("python -c 'import typer' (the unit)", typer_s, None), typer_cpu),
        (row(f"threatintel version, whole process ({relative})", version_s, start_up), version_cpu),
        (row(f"threatintel --help, whole process ({relative})", help_s, start_up), help_cpu),
        (row(f"one indicator, whole CLI process, cold ({allowance})", analyze_s, one), analyze_cpu),
    ]


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def header(runs: int) -> str:
    load = os.getloadavg()[0]
    return (
        f"whole-process start-up: median of {runs} runs after a warm-up, simulator latency "
        f"{LATENCY * 1000:.0f} ms, CACHE_BACKEND=memory, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end"
    )


def as_text(measured: list[tuple[dict[str, Any], float]], runs: int) -> str:
    lines = [header(runs), "", f"{'figure':<80} {'wall':>7} {'bound':>7} {'cpu':>7}"]
    for r, cpu in measured:
        bound = "" if r["bound"] is None else f"{r['bound']:.3f}s"
        wall = f"{r['value']:.3f}s"
        lines.append(f"{r['figure']:<80} {wall:>7} {bound:>7} {cpu:>6.3f}s  {verdict(r['ok'])}")
    return "\n".join(lines) + "\n"


def as_markdown(measured: list[tuple[dict[str, Any], float]], runs: int) -> str:
    lines = [
        header(runs) + " (`.venv/bin/python bench/bench_startup.py`).",
        "",
        "| figure | wall (median) | bound | | CPU (median) |",
        "|---|---:|---:|---|---:|",
    ]
    for r, cpu in measured:
        bound = "" if r["bound"] is None else f"{r['bound']:.3f} s"
        lines.append(
            f"| {r['figure']} | {r['value']:.3f} s | {bound} | {verdict(r['ok'])} | {cpu:.3f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="timed processes per command")
    parser.add_argument("--no-save", action="store_true", help=f"do not write under {RESULTS}")
    args = parser.parse_args()
    measured = measure(args.runs)
    sys.stdout.write(as_text(measured, args.runs))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        rows = [r | {"cpu": round(cpu, 4)} for r, cpu in measured]
        document = {"header": header(args.runs), "rows": rows}
        (RESULTS / "startup.json").write_text(json.dumps(document, indent=2) + "\n")
        (RESULTS / "startup.md").write_text(as_markdown(measured, args.runs))


if __name__ == "__main__":
    main()
