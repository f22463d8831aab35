"""How long does each report format take for a large batch, and how much memory?

    .venv/bin/python bench/bench_reports.py [N]   # prints a table, writes bench/results/reports.txt

Builds a batch of N (default 1,000) enrichments by analysing the demo sample against the
simulator once and re-labelling copies of its indicators, then renders every format, timing the
best of three runs and tracing peak Python memory. The floor to compare with is
`model_dump_json` of the same batch: every renderer must at least walk the models once.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
import tracemalloc
from pathlib import Path

from threatintel.attribution import attribute
from threatintel.engine import Engine
from threatintel.indicators import parse_indicator
from threatintel.models import Analysis, Enrichment, Indicator, IndicatorType
from threatintel.reports import FORMATS, render
from threatintel.settings import Settings
from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig, demo_sample

RESULTS = Path(__file__).parent / "results" / "reports.txt"


async def demo_batch() -> Analysis:
    config = SimulatorConfig.load(None)
    for name in ("virustotal", "otx", "abuseipdb", "ipinfo"):
        setattr(config, name, VendorConfig())
    with SimulatorServer(config) as sim:
        values: dict[str, object] = {"cache_backend": "memory"}
        for name, url in sim.base_urls.items():
            values[f"{name}_base_url"] = url
            values[f"{name}_api_key"] = f"bench-{name}"
            values[f"{name}_rate_limit"] = 1_000_000
        values["virustotal_daily_limit"] = values["virustotal_monthly_limit"] = 1_000_000
        async with Engine(Settings.load(**values), trust_env=False) as engine:
            return await engine.analyze_text(demo_sample())


def variant(indicator: Indicator, i: int) -> Indicator:
    """A distinct, valid indicator of the same type (a benchmark needs realistic values)."""
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    value = {
        IndicatorType.IPV4: f"45.{10 + i // 250}.{i % 250}.9",
        IndicatorType.IPV6: f"2a0d:5600:{i:x}::1",
        IndicatorType.DOMAIN: f"host{i}.{indicator.registrable_domain or indicator.value}",
        IndicatorType.URL: f"{indicator.value}{'&' if '?' in indicator.value else '?'}n={i}",
        IndicatorType.MD5: digest[:32],
        IndicatorType.SHA1: digest[:40],
        IndicatorType.SHA256: digest,
    }.get(indicator.type)
    return indicator if value is None else parse_indicator(value)


def scaled(analysis: Analysis, n: int) -> Analysis:
    """n enrichments: copies of the demo's, each with a distinct indicator value."""
    base = [e for e in analysis.enrichments if e.indicator.queryable]
    out: list[Enrichment] = []
    for i in range(n):
        source = base[i % len(base)]
        indicator = source.indicator if i < len(base) else variant(source.indicator, i)
        out.append(source.model_copy(update={"indicator": indicator}))
    return analysis.model_copy(update={"enrichments": out, "attribution": attribute(out)})


def measure(label: str, fn: object) -> tuple[str, float, float, int]:
    assert callable(fn)
    best = float("inf")
    size = 0
    for _ in range(3):
        started = time.perf_counter()
        text = fn()
        best = min(best, time.perf_counter() - started)
        size = len(text)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return label, best, peak / 1e6, size


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    analysis = scaled(asyncio.run(demo_batch()), n)
    rows = [measure("floor: model_dump_json", lambda: analysis.model_dump_json())]
    for fmt in FORMATS:
        if fmt == "stix" and n > 2_000:
            continue  # stix2 validates every pattern it builds: about 2.6 ms per indicator
        rows.append(measure(fmt, lambda fmt=fmt: render(analysis, fmt)))  # type: ignore[misc]
    floor = rows[0][1]
    lines = [
        f"report benchmark: {n} indicators (demo enrichments re-labelled), best of 3",
        f"{'format':<26} {'seconds':>8} {'x floor':>8} {'ms/ind.':>8} {'peak MB':>8} {'out MB':>8}",
    ]
    for label, seconds, peak, size in rows:
        lines.append(
            f"{label:<26} {seconds:>8.3f} {seconds / floor:>8.1f} {1000 * seconds / n:>8.2f} "
            f"{peak:>8.1f} {size / 1e6:>8.2f}"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
