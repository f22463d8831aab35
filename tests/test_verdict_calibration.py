"""The labelled verdict set, looked up by the real clients over HTTP against the simulator."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from calibration import LABELS, Outcome, load, matrix, measure
from threatintel.engine import Engine
from threatintel.indicators import parse_indicator
from threatintel.models import Votes
from threatintel.simulator import SimulatorServer


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


def test_no_benign_indicator_is_malicious_and_few_are_suspicious(outcomes: list[Outcome]) -> None:
    """Popular infrastructure is never malicious, and at most 1 in 10 is suspicious."""
    benign = [o for o in outcomes if o.expect == "benign"]
    labels = Counter(o.label for o in benign)
    assert labels["malicious"] == 0, [o.value for o in benign if o.label == "malicious"]
    assert labels["suspicious"] * 10 <= len(benign), [
        o.value for o in benign if o.label == "suspicious"
    ]


def test_malicious_ones_are_flagged_and_strong_evidence_is_malicious(
    outcomes: list[Outcome],
) -> None:
    """At least 95% of malicious entries are flagged, and every strong one is malicious."""
    malicious = [o for o in outcomes if o.expect == "malicious"]
    flagged = [o for o in malicious if o.label in ("malicious", "suspicious")]
    assert len(flagged) * 100 >= 95 * len(malicious), [
        (o.value, o.label) for o in malicious if o not in flagged
    ]
    weak_verdicts = [
        (o.value, o.label, o.reasons)
        for o in malicious
        if o.strength == "strong" and o.label != "malicious"
    ]
    assert not weak_verdicts


def test_confusion_matrix_is_pinned(outcomes: list[Outcome]) -> None:
    """The matrix of expected against given labels is exactly the published one."""
    rows = {name: [counts[c] for c in COLUMNS] for name, counts in matrix(outcomes).items()}
    assert rows == PINNED


COLUMNS = ("malicious", "suspicious", "harmless", "unknown")
# docs/verdicts.md publishes this matrix; `python tests/calibration.py` prints it.
# Before issue 7's scoring changes the same set gave: benign [0, 21, 13, 7], weak [0, 1, 0, 4],
# moderate [2, 5, 0, 1], strong [14, 2, 0, 0].
PINNED = {
    "benign": [0, 0, 23, 18],
    "malicious (weak)": [0, 5, 0, 0],
    "malicious (moderate)": [2, 6, 0, 0],
    "malicious (strong)": [16, 0, 0, 0],
}


async def test_the_clients_surface_the_known_good_signals(
    sim: SimulatorServer, make_engine: Callable[..., Engine]
) -> None:
    """Ranks, votes, trusted publishers, pulse sizes, usage types and anycast reach the results."""
    sim.config.scenario, _ = load(LABELS)
    chrome = "79f5e62bf4831894f1a207bb9d9f20de5b5db9130e184356f1c985fbee04b88d"
    analysis = await make_engine().analyze(["google.com", chrome, "8.8.8.8"])
    google, installer, resolver = (e.sources for e in analysis.enrichments)
    assert google["virustotal"].popularity_rank == 1
    assert google["virustotal"].votes == Votes(harmless=410, malicious=60)
    assert installer["virustotal"].trusted_publisher == "Google LLC"
    sizes = [p.indicator_count or 0 for p in resolver["otx"].pulses]
    assert sizes and min(sizes) >= 400
    abuse = resolver["abuseipdb"].abuse
    assert abuse is not None and abuse.usage_type == "Content Delivery Network"
    geo = resolver["ipinfo"].geo
    assert geo is not None and geo.anycast and geo.asn == 15169
