"""The defang corpus: at least 95% of expected indicators found, and not one invented."""

from __future__ import annotations

from defang_corpus import CORPUS, load_cases, score

FOUND_GOAL = 0.95


def test_corpus_is_large_and_sourced() -> None:
    """The corpus holds 150+ cases, negatives among them, each naming where its style came from."""
    cases = load_cases()
    assert len(cases) >= 150
    assert sum(1 for case in cases if not case.expected) >= 20
    assert all(case.source.strip() for case in cases)
    assert len({case.text for case in cases}) == len(cases), f"duplicate case in {CORPUS.name}"


def test_defang_corpus_found_rate_and_no_inventions() -> None:
    """extract() finds >= 95% of the corpus's indicators in canonical form and invents none."""
    result = score(load_cases())
    invented = [f"{case.text!r} -> {value}" for case, value in result.inventions]
    assert invented == []
    missed = [f"{case.text!r} ({case.source})" for case, _ in result.misses]
    assert result.found_rate >= FOUND_GOAL, missed
