"""What the own-key screen costs on a large input: extraction vs. screening, 4 keys configured.

    .venv/bin/python bench/bench_keyguard.py

Every value the engine parses is checked against the configured API keys (whole key, or a piece
of 16+ characters at either end) before any lookup; this prints the time beside extract()'s on
the same text, so the screen's share of a run is visible. The output is also written to
bench/results/keyguard.txt.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from threatintel._keyguard import KeyGuard
from threatintel.indicators import extract
from threatintel.models import Indicator
from threatintel.settings import Settings

LINES = 17_000  # three indicators a line: 51,000 in all


def main() -> None:
    keys = {
        f"{name}_api_key": hashlib.sha256(name.encode()).hexdigest()
        for name in ("virustotal", "otx", "abuseipdb", "ipinfo")
    }
    guard = KeyGuard(Settings.load(**keys))
    text = "".join(
        f"host{i}.example.com 10.1.{i // 250}.{i % 250} {hashlib.md5(b'%d' % i).hexdigest()}\n"
        for i in range(LINES)
    )
    started = time.perf_counter()
    extraction = extract(text)
    extracted = time.perf_counter() - started
    found: dict[Indicator, list[str]] = {indicator: [] for indicator in extraction.indicators}
    started = time.perf_counter()
    kept, _ = guard.screen(found, list(extraction.rejected))
    screened = time.perf_counter() - started
    report = (
        f"{len(found)} indicators, {len(keys)} keys: extract {extracted:.2f} s, "
        f"screen {screened * 1000:.0f} ms ({screened / extracted:.0%} of extract); "
        f"kept {len(kept)}\n"
    )
    print(report, end="")
    (Path(__file__).parent / "results" / "keyguard.txt").write_text(report)


if __name__ == "__main__":
    main()
