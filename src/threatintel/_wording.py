"""Words for counts, shared by the verdict reasons, the attribution and every report.

A leaf module (it imports nothing of ours), so scoring, attribution and the reports can all use
it without an import cycle.
"""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``plural(1, "indicator")`` is "1 indicator", ``plural(2, "indicator")`` "2 indicators"."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
