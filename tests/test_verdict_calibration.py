"""The labelled verdict set, looked up by the real clients over HTTP against the simulator."""

from __future__ import annotations

from collections import Counter

import pytest

from calibration import LABELS, Outcome, load, matrix, measure
from threatintel.indicators import parse_indicator


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return measure()


def test_the_set_covers_every_kind_and_strength() -> None:
    """At least 60 entries: every indicator type, benign ones and each strength of malicious."""
    _, labelled = load(LABELS)
    assert len(labelled) >= 60
    kinds = Counter(parse_indicator(item.value).type.value for item in labelled)
    assert {"ipv4", "ipv6", "domain", "url", "md5", "sha1", "sha256"} <= set(kinds)
    rows = Counter(item.strength or item.expect for item in labelled)
    assert rows["benign"] >= 30 and all(rows[s] >= 5 for s in ("weak", "moderate", "strong"))


def test_confusion_matrix_is_pinned(outcomes: list[Outcome]) -> None:
    """The matrix of expected against given labels is exactly the published one."""
    rows = {name: [counts[c] for c in COLUMNS] for name, counts in matrix(outcomes).items()}
    assert rows == PINNED


COLUMNS = ("malicious", "suspicious", "harmless", "unknown")
# docs/verdicts.md publishes this matrix; `python tests/calibration.py` prints it.
PINNED = {
    "benign": [0, 21, 13, 7],
    "malicious (weak)": [0, 1, 0, 4],
    "malicious (moderate)": [2, 5, 0, 1],
    "malicious (strong)": [14, 2, 0, 0],
}
