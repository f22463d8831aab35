"""What the benchmark scripts share: the simulator at 100 ms +- 30 ms, inputs, measured runs.

    with simulator() as sim, tempfile.TemporaryDirectory() as home:
        result = run_worker(["analyze", str(path)], bench_env(sim, home))

Every figure runs its client in a fresh process (bench_worker.py) so the simulator, which
runs in the calling process, does not share an interpreter lock with the client it serves.
Keys are the simulator's fake keys; every URL is on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from threatintel.simulator import RequestRecord, SimulatorConfig, SimulatorServer, VendorConfig

BENCH = Path(__file__).parent
RESULTS = BENCH / "results"
WORKER = BENCH / "bench_worker.py"
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")
LATENCY = 0.100  # seconds per upstream answer (the benchmark conditions)
JITTER = 0.030  # +- seconds around it
UNLIMITED = "1000000"  # per-window limits far above any run: only the quota figure has limits


@contextmanager
def simulator(latency: float = LATENCY, jitter: float = JITTER) -> Iterator[SimulatorServer]:
    """The simulator on 127.0.0.1, no quotas, no faults, every vendor at latency +- jitter."""
    config = SimulatorConfig()
    for name in VENDORS:
        setattr(config, name, VendorConfig(latency=latency, jitter=jitter))
    with SimulatorServer(config) as sim:
        yield sim


def bench_env(sim: SimulatorServer, home: str, **extra: str) -> dict[str, str]:
    """Settings for a client process: the simulator's endpoints and keys, no vendor limits in
    the way, files under ``home``; everything else (MAX_WORKERS, BATCH_SIZE...) the default."""
    drop = {"REDIS_URL", "CACHE_BACKEND", "MAX_WORKERS", "BATCH_SIZE"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.endswith("_LIMIT")}
    for name in VENDORS:
        env[f"{name.upper()}_BASE_URL"] = sim.base_urls[name]
        env[f"{name.upper()}_API_KEY"] = f"bench-{name}-key"
        env[f"{name.upper()}_RATE_LIMIT"] = UNLIMITED
    env |= {
        "VIRUSTOTAL_DAILY_LIMIT": UNLIMITED,
        "VIRUSTOTAL_MONTHLY_LIMIT": UNLIMITED,
        "IPINFO_ANONYMOUS_DAILY_LIMIT": UNLIMITED,
        "HOME": home,
        "XDG_CACHE_HOME": home,
        "XDG_DATA_HOME": home,
        "XDG_STATE_HOME": home,
        "XDG_CONFIG_HOME": home,
    }
    return env | extra


def run_worker(args: list[str], env: dict[str, str], cwd: str) -> dict[str, Any]:
    """Run bench_worker.py with ``args``; its JSON answer (a failing run aborts the bench)."""
    done = subprocess.run(
        [sys.executable, str(WORKER), *args], env=env, cwd=cwd, capture_output=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"bench worker {args[0]} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def mixed_indicators(n: int, offset: int = 0) -> list[str]:
    """``n`` distinct public indicators: 40% IPv4, 25% domains, 15% URLs, 20% SHA-256 hashes.

    IPs are asked of all four sources, the rest of VirusTotal and OTX: about 2.8 upstream
    calls per indicator. Values are unique per (index + offset), so runs with different
    offsets never share a cache entry.
    """
    out = []
    for i in range(offset, offset + n):
        kind = i % 20
        if kind < 8:
            out.append(f"{45 + i // 62_500 % 100}.{i // 250 % 250 + 1}.{i % 250 + 1}.{kind + 1}")
        elif kind < 13:
            out.append(f"host{i}.bench-{kind}.com")
        elif kind < 16:
            out.append(f"http://site{i}.bench.net/path/{kind}")
        else:
            out.append(hashlib.sha256(f"bench-{i}".encode()).hexdigest())
    return out


def respellings(values: list[str]) -> list[str]:
    """Other spellings of the same indicators (defanged, upper-case): inputs that must not
    cause a second upstream call."""
    out = []
    for value in values:
        if value.startswith("http://"):
            out.append(value.replace("http://", "hxxp://").replace(".", "[.]", 1))
        elif "." in value:
            out.append(value.replace(".", "[.]"))
        else:
            out.append(value.upper())
    return out


def write_input(path: Path, values: list[str]) -> Path:
    path.write_text("\n".join(values) + "\n", encoding="utf-8")
    return path


def lookups(sim: SimulatorServer) -> list[RequestRecord]:
    """The simulator's logged lookups (requests about an indicator; not account reads such as
    VirusTotal's overall_quotas)."""
    return [r for r in sim.log.records() if r.indicator is not None and r.status is not None]


def duplicate_calls(sim: SimulatorServer) -> int:
    """Lookups that asked a vendor something it had already answered (same path and query):
    every one is wasted quota."""
    seen = Counter((r.vendor, r.path, r.query) for r in lookups(sim))
    return sum(count - 1 for count in seen.values())
