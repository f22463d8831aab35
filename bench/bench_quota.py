"""How much of a free-tier quota does a batch use, and how many 429s does it provoke?

    .venv/bin/python bench/bench_quota.py     # prints a table, writes bench/results/quota.txt

Three runs of 100 IP lookups against the simulator enforcing VirusTotal's public windows
(4/minute, 500/day, 15.5K/month per key), AbuseIPDB's 1,000/day and IPinfo's 50K/month:
one key on one instance; three keys on one instance; one key shared by three instances
through Redis (skipped when no Redis answers at 127.0.0.1:6379). Time is a LockstepClock
shared with the simulator, so 25 virtual minutes pass in seconds. Two comparisons with the
theory: "used" is the calls made over the most the sliding windows allow in the minutes
spanned (`4 x keys x (whole minutes + 1)`), and "optimum" is the shortest possible span,
`ceil(N / (4 x keys)) - 1` minutes, against the span achieved.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
import uuid
from pathlib import Path

from threatintel.clock import LockstepClock
from threatintel.engine import Engine
from threatintel.quota import MemoryQuotaStore, QuotaStore
from threatintel.settings import Settings
from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

START = 1_700_000_000.0
REDIS_URL = "redis://127.0.0.1:6379/0"
RESULTS = Path(__file__).parent / "results" / "quota.txt"
N = 100


def addresses(n: int, offset: int = 0) -> list[str]:
    return [f"45.{(i + offset) // 250 + 10}.{(i + offset) % 250 + 1}.7" for i in range(n)]


def settings_for(sim: SimulatorServer, vt_keys: list[str]) -> Settings:
    values: dict[str, object] = {"cache_backend": "memory", "max_retries": 3}
    for name, url in sim.base_urls.items():
        values[f"{name}_base_url"] = url
        values[f"{name}_api_key"] = f"bench-{name}-key"
    values["virustotal_api_key"] = ",".join(vt_keys)
    return Settings.load(**values)


def sim_config(clock: LockstepClock) -> SimulatorConfig:
    config = SimulatorConfig(clock=clock)
    config.virustotal = VendorConfig(
        windows=(SimWindow.per_minute(4), SimWindow.per_day(500), SimWindow.per_month(15_500))
    )
    config.otx = VendorConfig()
    config.abuseipdb = VendorConfig(windows=(SimWindow.per_day(1_000),))
    config.ipinfo = VendorConfig(windows=(SimWindow.per_month(50_000),))
    return config


def bound(times: list[float], keys: int) -> int:
    """The most requests `keys` x 4/minute sliding windows allow over the span used."""
    span = max(times) - min(times)
    return 4 * keys * (math.floor(span / 60 + 1e-9) + 1)


async def run(name: str, keys: int, instances: int, shared: bool) -> dict[str, object] | None:
    clock = LockstepClock(START)
    vt_keys = [f"bench-vt-key-{i}-{uuid.uuid4().hex}" for i in range(keys)]
    stores: list[QuotaStore] = []
    prefix = f"threatintel:bench:{uuid.uuid4().hex}:"
    if shared:
        from threatintel.quota.redis import RedisQuotaStore

        probe = RedisQuotaStore(REDIS_URL, prefix=prefix)
        try:
            await probe.usage("probe", [], START)
        except Exception:
            await probe.aclose()
            return None
        await probe.aclose()
    with SimulatorServer(sim_config(clock)) as sim:
        engines = []
        for _ in range(instances):
            if shared:
                from threatintel.quota.redis import RedisQuotaStore

                store: QuotaStore = RedisQuotaStore(REDIS_URL, prefix=prefix)
            else:
                store = MemoryQuotaStore()
            stores.append(store)
            engines.append(Engine(settings_for(sim, vt_keys), clock=clock, quota_store=store))
        share = math.ceil(N / instances)
        batches = [addresses(N)[i * share : (i + 1) * share] for i in range(instances)]
        wall = time.perf_counter()
        await asyncio.gather(*(e.analyze(b) for e, b in zip(engines, batches, strict=True)))
        wall = time.perf_counter() - wall
        for engine in engines:
            await engine.aclose()
        for store in stores:
            await store.aclose()
        if shared:
            await _delete_prefix(prefix)
        every = sim.log.filter(vendor="virustotal")
        # The account quota reads (overall_quotas, once per key) are not lookups.
        records = [r for r in every if not r.path.endswith("/overall_quotas")]
        times = [r.timestamp for r in records if r.status == 200 or r.status == 404]
        return {
            "run": name,
            "vt calls": len(records),
            "vt account reads": len(every) - len(records),
            "429s (all vendors)": sim.log.count(status=429),
            "virtual minutes": (max(times) - min(times)) / 60,
            "bound": bound(times, keys),
            "quota used": len(times) / bound(times, keys),
            "optimum minutes": math.ceil(len(times) / (4 * keys)) - 1,
            "wall s": wall,
        }


async def _delete_prefix(prefix: str) -> None:
    """Leave nothing behind in the Redis the benchmark borrowed."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def main() -> int:
    rows = [
        await run("1 key, 1 instance", keys=1, instances=1, shared=False),
        await run("3 keys, 1 instance", keys=3, instances=1, shared=False),
        await run("1 key, 3 instances via Redis", keys=1, instances=3, shared=True),
    ]
    lines = [
        f"quota benchmark: {N} IP lookups, VirusTotal public windows (4/min, 500/day, "
        "15.5K/month per key)",
        f"{'run':<30} {'vt calls':>8} {'429s':>5} {'v-min':>6} {'optimum':>7} {'bound':>6} "
        f"{'used':>7} {'wall s':>7} {'acct':>4}",
    ]
    for row in rows:
        if row is None:
            lines.append(f"{'1 key, 3 instances via Redis':<30} skipped: no Redis at {REDIS_URL}")
            continue
        lines.append(
            f"{row['run']!s:<30} {row['vt calls']:>8} {row['429s (all vendors)']:>5} "
            f"{row['virtual minutes']:>6.1f} {row['optimum minutes']:>7} {row['bound']:>6} "
            f"{row['quota used']:>7.1%} {row['wall s']:>7.2f} {row['vt account reads']:>4}"
        )
    lines.append(
        "v-min: virtual minutes from first to last VirusTotal call; optimum: the shortest span "
        "the windows allow; used: calls / (4 x keys x (whole minutes spanned + 1)); acct: "
        "overall_quotas reads (limits learned, once per key; not lookups)"
    )
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
