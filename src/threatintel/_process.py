"""How the CLI's own process is set up (never a program that imports threatintel).

    prepare()  # once, first thing in `threatintel ...`

Two process-wide settings a library must not impose on its host, both measured by issue 9's
benchmark (bench/bench_worker.py prepares its process the same way, so it measures what
`threatintel analyze` runs):

- httpx imports its own command-line client (click, pygments, much of rich: ~35 ms, a tenth
  of a one-indicator run, and ~5 MB) whenever click is installed, and uvicorn installs it.
  This process never runs that client: marking the module absent makes httpx skip it
  (Python's import system treats a None entry as "cannot be imported"; httpx then keeps a
  stub).
- A batch keeps every result until it is reported, and each full garbage collection walks all
  of them: with Python's default thresholds a 10,000-indicator run answered from the cache
  spent about 40% of its CPU in the collector (bench/run.py, warm_10k), growing faster than
  the run itself. Full collections a tenth as often bring that down to a few percent;
  young-generation collections, which keep short-lived garbage in check, keep their pace.
- Once the engine is up, what start-up left behind (modules, pydantic's validators, the
  settings, the engine: hundreds of thousands of objects that live as long as the process) is
  moved out of the collector's sight (``gc.freeze``): the one full collection a warm
  10,000-indicator run still has no longer walks them all (about 0.35 s, an eighth of the
  run's CPU, on the bench machine). Only in a process ``prepare`` set up: freezing keeps the
  frozen objects' cycles alive for good, fine for a command that exits, not for a host.
"""

from __future__ import annotations

import gc
import sys
from typing import Final

#: Collections of the middle generation between two full ones (Python's default is 10).
FULL_COLLECTION_EVERY: Final = 100
#: Net allocations of tracked objects between two young collections (Python's default: 700).
YOUNG_COLLECTION_EVERY: Final = 10_000


_prepared = False


def prepare() -> None:
    """Set this process up as the CLI's: before httpx is imported, and only once it is ours."""
    global _prepared
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    tune_collector()
    _prepared = True


def settle() -> None:
    """Start-up is over (the engine is up, the work begins): leave what exists now out of the
    collector's scans. Does nothing unless ``prepare`` ran in this process."""
    if _prepared:
        gc.freeze()


def tune_collector() -> None:
    """Make full collections rarer in this process, and young ones too: asyncio leaves
    cyclic garbage behind every task and future, so with Python's default (a young collection
    per 700 net allocations) the HTTP server spent about a quarter of its CPU collecting and
    its slowest answers waited on it (bench_http_load.py: 1,050-1,170 -> ~1,500 lookups/s,
    p99 98-110 -> 59-70 ms). A young collection per YOUNG_COLLECTION_EVERY holds a few MB
    more garbage between collections."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_COLLECTION_EVERY), middle, max(old, FULL_COLLECTION_EVERY))
