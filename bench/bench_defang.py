"""How well extract() reads the defang corpus: found rate, misses and invented indicators.

    .venv/bin/python bench/bench_defang.py

The corpus (tests/fixtures/defang_corpus.tsv) holds defang styles collected from public IOC
tooling and reports, and text pasted from mail clients, word processors and chat, each with the
canonical indicators extract() must return ("-": nothing). tests/test_defang_corpus.py asserts
the goal (>= 95% found, no invention); this prints the numbers, every miss and every invention,
and the time to read the whole corpus. The output is also written to bench/results/defang.txt.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from defang_corpus import CORPUS, load_cases, score

RESULTS = Path(__file__).parent / "results" / "defang.txt"
RUNS = 5


def main() -> None:
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    cases = load_cases()
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = score(cases)
        timings.append(time.perf_counter() - start)
    negatives = sum(1 for case in cases if not case.expected)
    say(f"defang corpus: {CORPUS.name}, {result.cases} cases ({negatives} must yield nothing)")
    say(f"  found:     {result.found}/{result.expected} = {result.found_rate:.1%} (goal >= 95%)")
    say(f"  invented:  {len(result.inventions)} (goal 0)")
    say(f"  time:      {min(timings) * 1e3:.1f} ms for the corpus, best of {RUNS}")
    for case, value in result.misses:
        say(f"  miss       {case.text!r}: {value}  [{case.source}]")
    for case, value in result.inventions:
        say(f"  invented   {case.text!r}: {value}  [{case.source}]")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
