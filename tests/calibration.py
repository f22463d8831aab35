"""The labelled verdict set (fixtures/verdict_labels.toml) and its confusion matrix.

    .venv/bin/python tests/calibration.py          # prints the matrix and every miss

Each entry of the set is a scenario entry (the evidence each service holds) plus the expected
label. The set is served by the simulator and looked up by the real provider clients over HTTP,
so the matrix measures the whole road: wire bodies, parse functions and scoring.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import quiet_config, sim_settings
from threatintel.cache import MemoryCache
from threatintel.engine import Engine
from threatintel.models import Analysis, VerdictLabel
from threatintel.quota import MemoryQuotaStore
from threatintel.simulator import Scenario, SimulatorServer

LABELS = Path(__file__).parent / "fixtures" / "verdict_labels.toml"
BENIGN, MALICIOUS = "benign", "malicious"
STRENGTHS = ("weak", "moderate", "strong")
COLUMNS = tuple(label.value for label in VerdictLabel)


@dataclass(frozen=True, slots=True)
class Labelled:
    value: str
    expect: str
    strength: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    value: str
    expect: str
    strength: str | None
    label: str
    score: int
    reasons: tuple[str, ...]

    @property
    def row(self) -> str:
        return f"malicious ({self.strength})" if self.strength else self.expect


def load(path: Path = LABELS) -> tuple[Scenario, list[Labelled]]:
    """The scenario to serve and the expected labels, from one file."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries: dict[str, Any] = {}
    labelled: list[Labelled] = []
    for value, raw in data["indicators"].items():
        entry = dict(raw)
        expect = entry.pop("expect")
        strength = entry.pop("strength", None)
        if expect not in (BENIGN, MALICIOUS) or (expect == MALICIOUS) != (strength in STRENGTHS):
            raise ValueError(f"{value!r}: malicious entries need a strength, benign ones none")
        entries[value] = entry
        labelled.append(Labelled(value, expect, strength))
    return Scenario.from_dict({"indicators": entries}), labelled


async def run(server: SimulatorServer, labelled: Iterable[Labelled]) -> list[Outcome]:
    """Look every labelled value up through the real clients against ``server``."""
    wanted = list(labelled)
    engine = Engine(sim_settings(server), cache=MemoryCache(), quota_store=MemoryQuotaStore())
    async with engine:
        analysis = await engine.analyze([item.value for item in wanted])
    return _match(analysis, wanted)


def _match(analysis: Analysis, wanted: list[Labelled]) -> list[Outcome]:
    by_input = {raw: e for e in analysis.enrichments for raw in (*e.inputs, e.indicator.value)}
    outcomes = []
    for item in wanted:
        found = by_input[item.value]
        verdict = found.verdict
        outcomes.append(
            Outcome(
                item.value,
                item.expect,
                item.strength,
                verdict.label.value,
                verdict.score,
                tuple(verdict.reasons),
            )
        )
    return outcomes


def matrix(outcomes: Iterable[Outcome]) -> dict[str, Counter[str]]:
    """Rows: benign and malicious by strength; columns: the labels the engine gave."""
    rows: dict[str, Counter[str]] = {"benign": Counter()}
    rows |= {f"malicious ({s})": Counter() for s in STRENGTHS}
    for outcome in outcomes:
        rows[outcome.row][outcome.label] += 1
    return rows


def render(outcomes: list[Outcome]) -> str:
    """The matrix as a Markdown table, then the entries that missed the goal."""
    rows = matrix(outcomes)
    lines = [
        "| expected \\ verdict | " + " | ".join(COLUMNS) + " | total |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for name, counts in rows.items():
        cells = " | ".join(str(counts[c]) for c in COLUMNS)
        lines.append(f"| {name} | {cells} | {sum(counts.values())} |")
    misses = [o for o in outcomes if not _meets_goal(o)]
    if misses:
        lines += ["", "Entries that miss the goal:"]
        lines += [
            f"- {o.value} [{o.row}] → {o.label} {o.score}: {'; '.join(o.reasons)}" for o in misses
        ]
    return "\n".join(lines)


def _meets_goal(outcome: Outcome) -> bool:
    if outcome.expect == BENIGN:
        return outcome.label in ("harmless", "unknown")
    if outcome.strength == "strong":
        return outcome.label == "malicious"
    return outcome.label in ("malicious", "suspicious")


def measure(path: Path = LABELS) -> list[Outcome]:
    scenario, labelled = load(path)
    config = quiet_config()
    config.scenario = scenario
    with SimulatorServer(config) as server:
        return asyncio.run(run(server, labelled))


if __name__ == "__main__":
    print(render(measure()))
