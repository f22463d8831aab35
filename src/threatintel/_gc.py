"""The garbage collector's pace for the CLI's own process (never a program importing us).

    tune_collector()  # once, at the start of `threatintel ...`

A batch keeps every result until it is reported, and each full collection walks all of them:
with Python's default thresholds a 10,000-indicator run answered from the cache spent about
40% of its CPU in the collector (bench/run.py, warm_10k), growing faster than the run itself.
Full collections a tenth as often bring that down to a few percent; young-generation
collections, which keep short-lived garbage in check, go on at their usual pace.
"""

from __future__ import annotations

import gc
from typing import Final

#: Collections of the middle generation between two full ones (Python's default is 10).
FULL_COLLECTION_EVERY: Final = 100


def tune_collector() -> None:
    """Make full collections rarer in this process; the other thresholds stay as they are."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, max(old, FULL_COLLECTION_EVERY))
