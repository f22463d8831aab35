"""How long does a whole `threatintel` process take to start, and to answer one indicator?

    .venv/bin/python bench/bench_startup.py   # prints a table, writes bench/results/startup.txt
    .venv/bin/python bench/bench_startup.py --runs 20 --no-save

Median wall time of N runs (10 by default) of each command as a fresh process, next to issue 9's
goals: `threatintel version` within 3 x `python -c "import typer"` (the unit: what the CLI
framework alone costs on this machine), and one IP analysed cold within the start-up (the
median of `version`) + one upstream round trip + 50 ms. The simulator runs in this process and
answers every call after LATENCY (100 ms, fixed: the simulator has no jitter); the CLI gets the
same environment as the tests' sim_env, with CACHE_BACKEND=memory so every run is cold, in an
empty directory so no ./.env is read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig

RESULTS = Path(__file__).parent / "results" / "startup.txt"
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")
LATENCY = 0.100  # seconds per upstream answer, as in the benchmark section
SLACK = 0.050  # the allowance over start-up + one round trip
IP = "45.20.1.9"


def cli_env(sim: SimulatorServer, home: str) -> dict[str, str]:
    """The simulator's endpoints and fake keys, limits far above one run, nothing shared."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
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
        # Any default on-disk location (quota store, reports) lands in the scratch directory.
        "HOME": home,
        "XDG_CACHE_HOME": home,
        "XDG_DATA_HOME": home,
        "XDG_STATE_HOME": home,
    }
    return env


def median_time(argv: list[str], env: dict[str, str], cwd: str, runs: int) -> float:
    """Median wall seconds of ``runs`` fresh processes; a failing run aborts the bench."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="processes per command (median)")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args()

    cli = str(Path(sys.executable).with_name("threatintel"))
    config = SimulatorConfig()
    for name in VENDORS:
        setattr(config, name, VendorConfig(latency=LATENCY))
    with tempfile.TemporaryDirectory() as home, SimulatorServer(config) as sim:
        env = cli_env(sim, home)

        def timed(*argv: str) -> float:
            return median_time(list(argv), env, home, args.runs)

        typer_s = timed(sys.executable, "-c", "import typer")
        version_s = timed(cli, "version")
        help_s = timed(cli, "--help")
        analyze_s = timed(cli, "analyze", IP, "--format", "json")
        calls = len(sim.log.records())

    version_goal = 3 * typer_s
    analyze_goal = version_s + LATENCY + SLACK
    rows = [
        ("python -c 'import typer'", typer_s, "(the unit)"),
        ("threatintel version", version_s, f"<= 3 x import typer = {version_goal:.3f} s"),
        ("threatintel --help", help_s, f"<= {version_goal:.3f} s (as version)"),
        (
            f"threatintel analyze {IP} (cold)",
            analyze_s,
            f"<= start-up + {LATENCY * 1000:.0f} ms + {SLACK * 1000:.0f} ms = {analyze_goal:.3f} s",
        ),
    ]
    verdicts = [
        version_s <= version_goal,
        help_s <= version_goal,
        analyze_s <= analyze_goal,
    ]
    lines = [
        f"whole-process start-up, median of {args.runs} runs, simulator latency "
        f"{LATENCY * 1000:.0f} ms, CACHE_BACKEND=memory, Python {sys.version.split()[0]}",
        "",
        f"{'command':<40} {'median':>8}  goal",
    ]
    for (name, seconds, goal), ok in zip(rows, [None, *verdicts], strict=True):
        mark = "" if ok is None else ("  met" if ok else "  MISSED")
        lines.append(f"{name:<40} {seconds:>7.3f}s  {goal}{mark}")
    lines.append(f"\nupstream calls seen by the simulator: {calls} ({args.runs} analyze runs)")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
