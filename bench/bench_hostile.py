"""How long the providers take to read a hostile 40,000-entry answer (issue 8 §2).

    .venv/bin/python bench/bench_hostile.py                          # this checkout
    PYTHONPATH=/path/to/old/src .venv/bin/python bench/bench_hostile.py   # before, to compare

Builds the "huge" bodies of tests/hostile.py (VirusTotal: 40,000 engines that flagged and
40,000 tags; OTX: 40,000 pulses, one with 40,000 families, techniques and tags, and 40,000
validation entries) and times json.loads plus the provider's parse (best of a few runs). The
parse runs on the event loop, where no timeout can interrupt it, so this time is how long every
other lookup stalls. The output is also written to bench/results/hostile.txt unless the
package comes from elsewhere (a "before" run).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import threatintel
from hostile import HUGE, huge_otx, huge_vt
from threatintel.models import Indicator, IndicatorType
from threatintel.providers.otx import OTX
from threatintel.providers.virustotal import VirusTotal

RUNS = int(os.environ.get("BENCH_RUNS", "3"))  # BENCH_RUNS=1 for the slow "before"
IP = "45.9.148.1"
RESULTS = Path(__file__).parent / "results" / "hostile.txt"


async def measure() -> list[str]:
    indicator = Indicator(type=IndicatorType.IPV4, value=IP)
    lines = []
    async with httpx.AsyncClient() as client:
        for provider, body in (
            (VirusTotal(client, "http://127.0.0.1"), huge_vt(IP)),
            (OTX(client, "http://127.0.0.1"), huge_otx(IP)),
        ):
            best = float("inf")
            for _ in range(RUNS):
                started = time.perf_counter()
                provider.parse(indicator, json.loads(body))
                best = min(best, time.perf_counter() - started)
            lines.append(
                f"{provider.name:<11} {len(body) / 1e6:5.1f} MB body  parse {best * 1000:9.1f} ms"
            )
    return lines


def main() -> None:
    source = Path(threatintel.__file__).resolve().parent
    head = [
        f"# {HUGE:,} entries per list; best of {RUNS}; json.loads + parse",
        f"# python {platform.python_version()} on {platform.machine()}; package at {source}",
    ]
    text = "\n".join([*head, *asyncio.run(measure())]) + "\n"
    sys.stdout.write(text)
    if source == (Path(__file__).parent.parent / "src" / "threatintel").resolve():
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
