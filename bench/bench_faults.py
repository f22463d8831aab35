"""Do transient faults change verdicts, and what does a dead service cost?

    .venv/bin/python bench/bench_faults.py   # prints a table, writes bench/results/faults.txt
    .venv/bin/python bench/bench_faults.py --seeds 3 --max-retries 3 --no-save

For each seed (ten by default): 100 mixed indicators (IPs, domains, URLs, hashes) analysed
once against a quiet simulator and once with 30% of calls to every service failing with a 5xx,
a reset or a hang; "equal" counts the indicators whose verdict label is the same in both runs.
Then one run with VirusTotal failing every call: how many calls it received, and how much
longer (in virtual seconds) the run took than the quiet one. Default MAX_RETRIES (4, unless
--max-retries says otherwise) and breaker settings; REQUEST_TIMEOUT is 0.3 s so hangs cost
little real time. Time is a LockstepClock, so backoffs and cool-downs pass instantly and time
stands still while a lookup talks HTTP. Each indicator draws its faults from its own seeded
stream in the simulator, so a seed gives the same faults in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import time
from pathlib import Path

from threatintel.cache import MemoryCache
from threatintel.clock import LockstepClock
from threatintel.engine import Engine
from threatintel.models import Analysis, SourceStatus
from threatintel.quota import MemoryQuotaStore
from threatintel.resilience import DEFAULT_MAX_RETRIES
from threatintel.settings import Settings
from threatintel.simulator import FaultKind, SimulatorConfig, SimulatorServer, VendorConfig

START = 1_700_000_000.0
RESULTS = Path(__file__).parent / "results" / "faults.txt"
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")
TRANSIENT = (FaultKind.SERVER_ERROR, FaultKind.RESET, FaultKind.HANG)


def indicators(n: int) -> list[str]:
    """IPs, domains, URLs and hashes in turn; the simulator gives each a hashed truth."""
    kinds = (
        lambda i: f"45.{i // 250 + 20}.{i % 250 + 1}.9",
        lambda i: f"host{i}.parcel-notice{i % 7}.com",
        lambda i: f"http://files{i}.update-mirror{i % 5}.net/get/{i}.bin",
        lambda i: hashlib.sha256(f"sample-{i}".encode()).hexdigest(),
    )
    return [kinds[i % 4](i) for i in range(n)]


def configure(sim: SimulatorServer, rates: dict[str, float]) -> None:
    for vendor in VENDORS:
        rate = rates.get(vendor, 0.0)
        kinds = TRANSIENT if rate < 1 else (FaultKind.SERVER_ERROR,)
        setattr(sim.config, vendor, VendorConfig(fault_rate=rate, fault_kinds=kinds))


async def analyse(
    sim: SimulatorServer, values: list[str], max_retries: int = DEFAULT_MAX_RETRIES
) -> tuple[Analysis, float, int]:
    """One run on a fresh engine: the analysis, the virtual seconds it took, its retries."""
    clock = LockstepClock(START)
    values_by_name: dict[str, object] = {
        "cache_backend": "memory",
        "request_timeout": 0.3,
        "max_retries": max_retries,
    }
    for name, url in sim.base_urls.items():
        values_by_name[f"{name}_base_url"] = url
        values_by_name[f"{name}_api_key"] = f"bench-{name}-key"
    for name in ("virustotal_rate_limit", "virustotal_daily_limit", "virustotal_monthly_limit"):
        values_by_name[name] = 100_000  # quotas are another benchmark's subject
    settings = Settings.load(**values_by_name)
    async with Engine(
        settings, clock=clock, cache=MemoryCache(clock=clock), quota_store=MemoryQuotaStore()
    ) as engine:
        analysis = await engine.analyze(values)
        retries = sum(stats.retries for stats in engine.stats.values())
    return analysis, clock.now - START, retries


def equal_verdicts(a: Analysis, b: Analysis) -> int:
    return sum(
        x.verdict.label == y.verdict.label
        for x, y in zip(a.enrichments, b.enrichments, strict=True)
    )


def opened(analysis: Analysis) -> int:
    return sum(
        r.status is SourceStatus.CIRCUIT_OPEN
        for e in analysis.enrichments
        for r in e.sources.values()
    )


async def main(seeds: int, max_retries: int) -> list[str]:
    values = indicators(100)
    lines = [
        f"fault benchmark: 100 mixed indicators, MAX_RETRIES={max_retries}, default breaker",
        f"{'seed':>4}  {'equal/100':>9}  {'circuit_open':>12}  {'retries':>7}  {'wall s':>6}",
    ]
    total = 0
    worst = 100
    for seed in range(seeds):
        with SimulatorServer(SimulatorConfig(seed=seed)) as sim:
            configure(sim, {})
            clean, _, _ = await analyse(sim, values)
            configure(sim, dict.fromkeys(VENDORS, 0.3))
            started = time.perf_counter()
            noisy, _, retries = await analyse(sim, values, max_retries)
            wall = time.perf_counter() - started
        equal = equal_verdicts(clean, noisy)
        total += equal
        worst = min(worst, equal)
        lines.append(f"{seed:>4}  {equal:>9}  {opened(noisy):>12}  {retries:>7}  {wall:>6.1f}")
    lines.append(
        f"mean equal verdicts {total / seeds:.1f}/100, worst {worst}/100 over {seeds} seeds"
    )
    with SimulatorServer(SimulatorConfig()) as sim:
        configure(sim, {})
        _, quiet, _ = await analyse(sim, values)
        sim.log.clear()
        configure(sim, {"virustotal": 1.0})
        dead, took, _ = await analyse(sim, values)
        calls = sim.log.count(vendor="virustotal")
    lines.append(
        f"dead VirusTotal: {calls} calls, {opened(dead)} circuit_open, run took "
        f"{took:.1f} virtual s (quiet run {quiet:.1f} s): +{took - quiet:.1f} s"
    )
    return lines


if __name__ == "__main__":
    # A simulated reset ends a request without an answer, which uvicorn reports once per
    # reset: hundreds of lines that would bury the table.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--max-retries", type=int, default=DEFAULT_MAX_RETRIES, help="default: MAX_RETRIES's"
    )
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args()
    output = asyncio.run(main(args.seeds, args.max_retries))
    print("\n".join(output))
    if not args.no_save:
        RESULTS.write_text("\n".join(output) + "\n", encoding="utf-8")
