"""How fast extract() reads adversarial text, against a trivial linear pass and the old regex.

    .venv/bin/python bench/bench_parser.py

Builds ~1 MB of text made to break backtracking parsers (a URL followed by thousands of word
characters and a "!", endless "a.a.a", "1.1.1", "[.]", hex and bracket runs) mixed with real,
defanged indicators; times extract() over it (best of a few runs) next to text.split() plus
str.translate, the floor for anything that looks at every character. Then it times the URL regex
of the system we replaced on short inputs, each in a subprocess with a timeout, to show the
contrast. The output is also written to bench/results/parser.txt.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from threatintel.indicators import extract

OLD_REGEX = r"^(https?:\/\/)?([\da-z\.-]+)\.([a-z\.]{2,6})([\/\w\.-]*)*\/?$"
RUNS = 3
OLD_TIMEOUT = 10.0  # seconds per old-regex attempt; it doubles with every extra character
RESULTS = Path(__file__).parent / "results" / "parser.txt"

REPORT = """\
Phishing from billing[@]invoices-secure{n}[.]com linking to
hxxps://login{n}.micros0ft-support[.]com/owa/auth.php?id={n} and http://203.0.{a}.{b}:8080/p.exe
C2 185.220.{a}[.]{b}, 2a0b:f4c2::{n:x}, evil{n}(.)ru; hash {md5}; CVE-2023-{n:05d}; AS{n}.
Dropped invoice{n}.pdf; rules version 2.4.{n}; ts 12:30:{b}.
"""


def sections() -> dict[str, str]:
    """Each adversarial pattern at ~100 kB, plus ~250 kB of realistic defanged reports."""
    reports = "".join(
        REPORT.format(n=n, a=n % 250, b=n * 7 % 250, md5=hashlib.md5(b"%d" % n).hexdigest())
        for n in range(1, 1200)
    )
    return {
        "URL + 5,000 word chars + '!'": ("http://example.com/" + "a" * 5000 + "! ") * 20,
        "old ReDoS string, 50 chars": ("http://example.com/" + "a" * 30 + "! ") * 2000,
        "a.a.a.a... (one run)": "a." * 50_000,
        "1.1.1.1... (one run)": "1." * 50_000,
        "[.][.][.]... (one run)": "[.]" * 33_000,
        "nested [[[.]]] (one run)": "[" * 50_000 + "." + "]" * 50_000,
        "hex run (one run)": "0123456789abcdef" * 6_250,
        "unbalanced brackets": "(" * 50_000 + "http://x.com/" + ")" * 50_000,
        "http://[ repeated": "http://[" * 12_500,
        "colons (one run)": ":" * 100_000,
        "realistic defanged reports": reports,
    }


def best(fn: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def trivial_pass(text: str) -> None:
    """A floor: split on whitespace and map every character once."""
    text.split()
    text.translate(str.maketrans(".[]()", "     "))


def old_regex_seconds(n: int) -> float | None:
    """Seconds the old regex takes on 'http://example.com/' + 'a' * n + '!', or None on timeout."""
    code = (
        "import re, time\n"
        f"r = re.compile({OLD_REGEX!r})\n"
        f"s = 'http://example.com/' + 'a' * {n} + '!'\n"
        "t = time.perf_counter(); r.match(s); print(time.perf_counter() - t)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=OLD_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return None
    return float(done.stdout)


def main() -> None:
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    say(f"extract() benchmark: Python {platform.python_version()} on {platform.machine()}")
    say()
    parts = sections()
    say(f"{'section':34} {'bytes':>9} {'seconds':>8} {'MB/s':>7} {'found':>6} {'rejected':>8}")
    for name, text in parts.items():
        seconds = best(lambda text=text: extract(text))
        result = extract(text)
        say(
            f"{name:34} {len(text):9,d} {seconds:8.3f} {len(text) / seconds / 1e6:7.2f}"
            f" {len(result.indicators):6d} {len(result.rejected):8d}"
        )
    text = "\n".join(parts.values())
    size = len(text.encode())
    seconds = best(lambda: extract(text))
    result = extract(text)
    floor = best(lambda: trivial_pass(text))
    say()
    say(f"all sections together: {size:,d} bytes ({size / 1e6:.2f} MB)")
    say(
        f"  extract():           {seconds:.3f} s  ({size / seconds / 1e6:.2f} MB/s), best of {RUNS}"
    )
    say(f"  indicators found:    {len(result.indicators):,d}   rejected: {len(result.rejected):,d}")
    say(f"  trivial linear pass: {floor:.4f} s  (text.split() + str.translate)")
    say(f"  ratio:               {seconds / floor:.0f}x the trivial pass")
    say()
    say(f"old regex {OLD_REGEX}")
    say("on 'http://example.com/' + 'a' * n + '!' (subprocess, timeout 10 s):")
    last: tuple[int, float] | None = None
    for n in (12, 14, 16, 18, 20, 22):
        took = old_regex_seconds(n)
        if took is None:
            say(f"  n={n:2d} ({n + 20} chars): > {OLD_TIMEOUT:.0f} s, killed")
            break
        say(f"  n={n:2d} ({n + 20} chars): {took:8.3f} s")
        last = (n, took)
    if last is not None:
        n, took = last
        # Each extra character doubles the work; extrapolate to the 50-character input.
        estimate = took * 2 ** (30 - n)
        redos = "http://example.com/" + "a" * 30 + "!"
        ours = best(lambda: extract(redos), runs=100)
        say(f"  n=30 (50 chars): ~{estimate:,.0f} s extrapolated")
        say(f"  extract() on that 50-char string: {ours * 1e6:.0f} µs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
