"""Score extract() on the defang corpus (tests/fixtures/defang_corpus.tsv).

Shared by tests/test_defang_corpus.py, which pins the score, and bench/bench_defang.py, which
prints it. A case's expected indicators are found when extract() returns each of them; anything
else it returns for that case is an invented indicator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from threatintel.indicators import extract

CORPUS = Path(__file__).parent / "fixtures" / "defang_corpus.tsv"
_ESCAPE_RE = re.compile(r"\\(n|t|u[0-9a-fA-F]{4})")
_ESCAPES = {"n": "\n", "t": "\t"}


@dataclass(frozen=True, slots=True)
class Case:
    text: str
    expected: frozenset[str]
    source: str


@dataclass(slots=True)
class Score:
    cases: int = 0
    expected: int = 0
    found: int = 0
    misses: list[tuple[Case, str]] = field(default_factory=list)
    inventions: list[tuple[Case, str]] = field(default_factory=list)

    @property
    def found_rate(self) -> float:
        return self.found / self.expected if self.expected else 1.0


def _unescape(raw: str) -> str:
    return _ESCAPE_RE.sub(
        lambda m: _ESCAPES.get(m[1]) or chr(int(m[1][1:], 16)),
        raw,
    )


def load_cases(path: Path = CORPUS) -> list[Case]:
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        text, expected, source = line.split("\t")
        values = frozenset() if expected == "-" else frozenset(expected.split(" "))
        if not source.strip():
            raise ValueError(f"{path.name}:{number}: every case names its source")
        cases.append(Case(_unescape(text), values, source))
    return cases


def score(cases: list[Case]) -> Score:
    result = Score()
    for case in cases:
        got = {indicator.value for indicator in extract(case.text).indicators}
        result.cases += 1
        result.expected += len(case.expected)
        result.found += len(case.expected & got)
        result.misses += [(case, value) for value in sorted(case.expected - got)]
        result.inventions += [(case, value) for value in sorted(got - case.expected)]
    return result
