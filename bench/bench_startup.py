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
the reference row (``import typer``) has ``bound`` and ``ok`` None.
"""

from __future__ import annotations

import argparse
import json
import os
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


def median_time(argv: list[str], env: dict[str, str], cwd: str, runs: int) -> float:
    """Median wall seconds of ``runs`` fresh processes, after one untimed warm-up run.

    A failing run aborts the bench: a figure from a process that failed measures nothing.
    """
    times = []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')[-500:]}")
        if attempt:  # the first run writes the bytecode
            times.append(elapsed)
    return statistics.median(times)


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
    cli = str(Path(sys.executable).with_name("threatintel"))
    config = SimulatorConfig()
    for name in VENDORS:
        setattr(config, name, VendorConfig(latency=LATENCY))
    with tempfile.TemporaryDirectory() as home, SimulatorServer(config) as sim:
        env = cli_env(sim, home)

        def timed(*argv: str) -> float:
            return median_time(list(argv), env, home, runs)

        typer_s = timed(sys.executable, "-c", "import typer")
        version_s = timed(cli, "version")
        help_s = timed(cli, "--help")
        analyze_s = timed(cli, "analyze", IP, "--format", "json")

    start_up = START_UP_FACTOR * typer_s
    one = version_s + LATENCY + SLACK
    return [
        row("python -c 'import typer' (the unit)", typer_s, None),
        row(
            f"threatintel version, whole process (<= {START_UP_FACTOR} x import typer)",
            version_s,
            start_up,
        ),
        row(
            f"threatintel --help, whole process (<= {START_UP_FACTOR} x import typer)",
            help_s,
            start_up,
        ),
        row(
            f"one indicator, whole CLI process, cold (<= version + {LATENCY * 1000:.0f} ms "
            f"round trip + {SLACK * 1000:.0f} ms)",
            analyze_s,
            one,
        ),
    ]


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def as_text(rows: list[dict[str, Any]], runs: int) -> str:
    lines = [
        f"whole-process start-up, median of {runs} runs after a warm-up, simulator latency "
        f"{LATENCY * 1000:.0f} ms, CACHE_BACKEND=memory, Python {sys.version.split()[0]}",
        "",
        f"{'figure':<82} {'median':>8} {'bound':>8}",
    ]
    for r in rows:
        bound = "" if r["bound"] is None else f"{r['bound']:.3f}s"
        lines.append(f"{r['figure']:<82} {r['value']:>7.3f}s {bound:>8}  {verdict(r['ok'])}")
    return "\n".join(lines) + "\n"


def as_markdown(rows: list[dict[str, Any]], runs: int) -> str:
    lines = [
        f"Whole-process start-up: median of {runs} runs after a warm-up, simulator latency "
        f"{LATENCY * 1000:.0f} ms, Python {sys.version.split()[0]} "
        "(`.venv/bin/python bench/bench_startup.py`).",
        "",
        "| figure | median | bound | |",
        "|---|---:|---:|---|",
    ]
    for r in rows:
        bound = "" if r["bound"] is None else f"{r['bound']:.3f} s"
        lines.append(f"| {r['figure']} | {r['value']:.3f} s | {bound} | {verdict(r['ok'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="timed processes per command")
    parser.add_argument("--no-save", action="store_true", help=f"do not write under {RESULTS}")
    args = parser.parse_args()
    rows = run(args.runs)
    sys.stdout.write(as_text(rows, args.runs))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        document = {"runs": args.runs, "python": sys.version.split()[0], "rows": rows}
        (RESULTS / "startup.json").write_text(json.dumps(document, indent=2) + "\n")
        (RESULTS / "startup.md").write_text(as_markdown(rows, args.runs))


if __name__ == "__main__":
    main()
