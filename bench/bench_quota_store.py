"""What one acquire costs the SQLite quota store as a sliding window fills up.

    .venv/bin/python bench/bench_quota_store.py            # up to 100,000 live grants
    .venv/bin/python bench/bench_quota_store.py --max 20000

One key, one hour window (OTX's) with a limit far above the run, as a paid key has: the
acquires of a 100,000-indicator batch all stay live for the whole run. Before the store kept
per-window row totals it counted every live grant on each acquire, ~5 ms at 50,000 on the
store's one thread, which capped such a batch near 200 upstream calls per second
(bench/run.py rss_100k). Prints microseconds per acquire (wall and CPU) for each band of
live grants; a flat column is the point. Time is passed in, so nothing waits.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from threatintel.quota import Window
from threatintel.quota.sqlite import SQLiteQuotaStore

START = 1_700_000_000.0
STEP = 0.005  # seconds between acquires: 200 per second, all inside the hour


async def run(top: int) -> list[tuple[int, float, float]]:
    """(live grants at the end of the band, µs wall per acquire, µs CPU per acquire)."""
    windows = [Window.per_hour(10_000_000)]
    bands = [b for b in (1_000, 10_000, 25_000, 50_000, 100_000) if b <= top] or [top]
    out = []
    with tempfile.TemporaryDirectory() as home:
        async with SQLiteQuotaStore(Path(home) / "quota.sqlite3") as store:
            now, done = START, 0
            for band in bands:
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(band - done):
                    now += STEP
                    if not (await store.acquire("otx:bench", windows, now)).granted:
                        raise SystemExit("a grant was refused: the limit should be far away")
                n = band - done
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                out.append((band, 1e6 * wall / n, 1e6 * cpu / n))
                done = band
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=100_000, help="live grants to reach")
    args = parser.parse_args()
    print(f"{'live grants up to':>18}  {'µs/acquire wall':>16}  {'µs/acquire CPU':>15}")
    for band, wall, cpu in asyncio.run(run(args.max)):
        print(f"{band:>18,}  {wall:>16.0f}  {cpu:>15.0f}")


if __name__ == "__main__":
    main()
