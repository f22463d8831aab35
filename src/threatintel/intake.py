"""Intake: the one place input is parsed, deduplicated and screened, a piece at a time.

    intake = Intake(keyguard)
    for indicator, spelling in intake.feed_values(["hxxp://evil[.]com/x", "8.8.8.8"]):
        ...                                   # each NEW indicator once, with how it was written
    for chunk in open("timeline.txt"):        # text: lines, or any chunks (a line may span two)
        for indicator, spelling in intake.feed_text(chunk):
            ...
    for indicator, spelling in intake.finish():  # the last line if the text had no final newline
        ...
    intake.spellings(indicator)   # every spelling seen so far ("http://h:80/x", "hxxp://h/x")
    intake.claim(indicator)       # ...and forget them: the engine does this as it answers
    intake.rejected, intake.counts
    intake.close()                # the spill file, if the seen-set grew past memory

Values are things given on purpose (arguments, pasted lines): each is parsed as one indicator,
and a value that is none is read as text, as a pasted line holding several. Text is read line by
line with the stricter free-text rules (``indicators.extract``). Everything stays bounded however
long the input is:

- a line is read in pieces of at most MAX_LINE characters, cut where a token ends, so a file
  without newlines (minified JSON, a binary blob) cannot build one huge string;
- the set of indicators already seen holds SEEN_IN_MEMORY digests, then spills to a temporary
  SQLite file (one index lookup per candidate past that point; an in-memory set of 100,000
  URLs would cost tens of MB, a Bloom filter would drop real indicators as "seen");
- spellings are kept for indicators not yet claimed, MAX_SPELLINGS each; the engine claims
  them when it answers, so they cost at most its window of indicators in flight;
- rejected candidates: the first MAX_REJECTED distinct ones, the rest only counted.

Our own API keys are screened here (``KeyGuard``): a value holding one is rejected by its
fingerprint and never becomes an indicator, and a spelling shows the key masked.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from threatintel._keyguard import KeyGuard
from threatintel.errors import InvalidIndicator, NoIndicators
from threatintel.indicators import extract, parse_indicator
from threatintel.models import Indicator, Rejected

__all__ = [
    "MAX_LINE",
    "MAX_REJECTED",
    "MAX_SPELLINGS",
    "Intake",
    "IntakeCounts",
    "Pair",
    "Text",
    "Values",
]

#: The longest piece of a line parsed at once (far above any indicator: URLs stop at 2,048).
MAX_LINE = 65_536
#: Distinct indicators remembered in memory before the seen-set spills to disk.
SEEN_IN_MEMORY = 50_000
#: Spellings kept per indicator: enough to join a result back to every row that named it.
MAX_SPELLINGS = 16
#: Distinct rejected candidates kept; beyond them, only a count.
MAX_REJECTED = 1_000
#: A spelling is shown at most this long (keys masked before the cut, as they always were).
SHOWN = 200
#: Where a long line may be cut: places no indicator spans.
_CUT_AT = " \t,;\"'<>|"

#: A new indicator and the spelling it came with (None for text that names several, and for
#: indicators given already parsed).
Pair = tuple[Indicator, str | None]
#: What a request may hold: raw values (or parsed indicators), and text, whole or in chunks;
#: plain or async iterables (a file's lines, stdin read in a thread, an upload).
Values = Iterable[str | Indicator] | AsyncIterable[str | Indicator]
Text = str | Iterable[str] | AsyncIterable[str]
#: Reading yields to the event loop this often, so lookups progress while a big input is read.
_YIELD_EVERY = 64
_T = TypeVar("_T")


@dataclass(slots=True)
class IntakeCounts:
    """What the intake has read so far."""

    values: int = 0  # explicit values (blank ones not counted)
    lines: int = 0  # lines of text (pieces of an over-long line count once each)
    indicators: int = 0  # distinct indicators handed on
    duplicates: int = 0  # further spellings of indicators already handed on
    rejected: int = 0  # rejected candidates, all of them
    rejected_omitted: int = 0  # rejected candidates beyond MAX_REJECTED, not kept
    long_lines: int = 0  # lines cut into pieces because they were longer than MAX_LINE


class Intake:
    """Incremental parse, dedupe, spellings, rejects and key screening for one request."""

    def __init__(
        self,
        keyguard: KeyGuard,
        *,
        seen_in_memory: int = SEEN_IN_MEMORY,
        spill_dir: Path | None = None,
    ) -> None:
        self._guard = keyguard
        self._seen_limit = max(1, seen_in_memory)
        self._spill_dir = spill_dir
        self._seen: set[bytes] = set()
        self._spill: sqlite3.Connection | None = None
        self._spill_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._spellings: dict[tuple[str, str], list[str]] = {}
        self._rejected: dict[tuple[str, str], Rejected] = {}
        self._partial: list[str] = []
        self._partial_len = 0
        self.counts = IntakeCounts()

    # --- reading ------------------------------------------------------------------------
    async def read(self, values: Values = (), text: Text | None = None) -> AsyncIterator[Indicator]:
        """Each new indicator of ``values``, then of ``text`` (the engine's stream reads this).

        Other tasks get a turn every _YIELD_EVERY values or chunks, so lookups go on while a
        big plain iterable is parsed.
        """
        steps = 0
        async for value in _items((values,) if isinstance(values, str) else values):
            for indicator, _ in self.feed_value(value):
                yield indicator
            steps += 1
            if steps % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        texts = () if text is None else (text,) if isinstance(text, str) else text
        async for chunk in _items(texts):
            for indicator, _ in self.feed_text(chunk):
                yield indicator
            steps += 1
            if steps % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        for indicator, _ in self.finish():
            yield indicator

    def feed_values(self, values: Iterable[str | Indicator]) -> Iterator[Pair]:
        """Parse values given on purpose; yield each new indicator with its spelling."""
        for value in values:
            yield from self.feed_value(value)

    def feed_value(self, value: str | Indicator) -> Iterator[Pair]:
        if isinstance(value, Indicator):  # parsed already (a job's manifest): not re-parsed
            self.counts.values += 1
            yield from self._take(value, None)
            return
        raw = value.strip()
        if not raw:
            return
        self.counts.values += 1
        if len(raw) > MAX_LINE:  # a blob pasted as one value: read it as the text it is
            yield from self.feed_text(raw)
            yield from self.finish()
            return
        # Keys masked before the cut: a cut through a key would leave a piece of it.
        shown = self._guard.scrub(raw)[:SHOWN]
        try:
            indicator = parse_indicator(raw)
        except InvalidIndicator as exc:
            extraction = extract(raw)
            if not extraction.indicators:
                self._reject(Rejected(candidate=shown, reason=exc.reason))
                return
            for found in extraction.indicators:
                yield from self._take(found, shown)
            for item in extraction.rejected:
                self._reject(item)
            return
        yield from self._take(indicator, shown)

    def feed_text(self, chunk: str) -> Iterator[Pair]:
        """Extract from a chunk of free text; a line split across chunks is read whole."""
        if not chunk:
            return
        if "\0" in chunk:  # a stray NUL (a log, a truncated record): a separator, as a space
            chunk = chunk.replace("\0", " ")
        if "\n" not in chunk:
            self._partial.append(chunk)
            self._partial_len += len(chunk)
            if self._partial_len > MAX_LINE:
                yield from self._long_line()
            return
        lines = chunk.split("\n")
        if self._partial:
            lines[0] = "".join(self._partial) + lines[0]
            self._partial.clear()
        last = lines.pop()
        for line in lines:
            yield from self._line(line)
        self._partial_len = 0
        if last:
            self._partial.append(last)
            self._partial_len = len(last)
            if self._partial_len > MAX_LINE:
                yield from self._long_line()

    def finish(self) -> Iterator[Pair]:
        """The text's last line, if it did not end with a newline."""
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
            yield from self._line(line)

    def _long_line(self) -> Iterator[Pair]:
        """Parse the head of an over-long line, up to where its last token ends; keep the rest."""
        text = "".join(self._partial)
        self.counts.long_lines += 1
        while len(text) > MAX_LINE:
            head = text[:MAX_LINE]
            cut = max(head.rfind(ch) for ch in _CUT_AT)
            cut = cut + 1 if cut > 0 else MAX_LINE  # one run of MAX_LINE characters: no indicator
            yield from self._line(text[:cut])
            text = text[cut:]
        self._partial = [text] if text else []
        self._partial_len = len(text)

    def _line(self, line: str) -> Iterator[Pair]:
        self.counts.lines += 1
        extraction = extract(line)
        found = extraction.indicators
        token = line.strip()
        # A line that is one token naming one indicator (a file of one indicator per line)
        # keeps its spelling, so results join back to the rows they came from.
        spelling = None
        if len(found) == 1 and len(token.split(None, 1)) == 1:
            spelling = self._guard.scrub(token)[:SHOWN]
        for indicator in found:
            yield from self._take(indicator, spelling)
        for item in extraction.rejected:
            self._reject(item)

    # --- dedupe, spellings, rejects ----------------------------------------------------
    def _take(self, indicator: Indicator, spelling: str | None) -> Iterator[Pair]:
        hidden = self._guard.hidden(indicator.value)
        if hidden is not None:  # one of our own keys: never an indicator
            self._reject(hidden)
            return
        key = (indicator.type.value, indicator.value)
        if self._add(key):
            self.counts.indicators += 1
            self._spellings[key] = [spelling] if spelling else []
            yield indicator, spelling
            return
        self.counts.duplicates += 1
        kept = self._spellings.get(key)
        if kept is not None and spelling and spelling not in kept and len(kept) < MAX_SPELLINGS:
            kept.append(spelling)

    def spellings(self, indicator: Indicator) -> list[str]:
        """The spellings seen for ``indicator`` and not yet claimed."""
        return list(self._spellings.get((indicator.type.value, indicator.value), ()))

    def claim(self, indicator: Indicator) -> list[str]:
        """The spellings seen for ``indicator``, forgotten here: later ones are only counted."""
        return self._spellings.pop((indicator.type.value, indicator.value), [])

    def require(self) -> None:
        """NoIndicators, listing what was skipped, if nothing read so far was an indicator: the
        one test of an empty request (the engine's stream, and a job's input, use it)."""
        if not self.counts.indicators:
            raise NoIndicators(self.rejected)

    @property
    def rejected(self) -> list[Rejected]:
        """Distinct rejected candidates, in the order met (the first MAX_REJECTED)."""
        return list(self._rejected.values())

    def _reject(self, item: Rejected) -> None:
        hidden = self._guard.hidden(item.candidate)
        item = item if hidden is None else hidden
        self.counts.rejected += 1
        key = (item.candidate, item.reason)
        if key in self._rejected:
            return
        if len(self._rejected) >= MAX_REJECTED:
            self.counts.rejected_omitted += 1
            return
        self._rejected[key] = item

    # --- the bounded seen-set ------------------------------------------------------------
    def _add(self, key: tuple[str, str]) -> bool:
        """Remember ``key``; False if it was seen before."""
        # A 16-byte digest instead of the value: a fifth of the memory for a long URL, and
        # collisions are out of reach at any input size.
        digest = hashlib.blake2b(f"{key[0]}\0{key[1]}".encode(), digest_size=16).digest()
        if digest in self._seen:
            return False
        if self._spill is not None:
            row = self._spill.execute("SELECT 1 FROM seen WHERE digest = ?", (digest,)).fetchone()
            if row is not None:
                return False
        self._seen.add(digest)
        if len(self._seen) >= self._seen_limit:
            self._spill_seen()
        return True

    def _spill_seen(self) -> None:
        if self._spill is None:
            self._spill_tmp = tempfile.TemporaryDirectory(
                prefix="threatintel-intake-", dir=self._spill_dir
            )
            path = Path(self._spill_tmp.name) / "seen.sqlite3"
            # Private to this request and deleted with it: no durability needed.
            self._spill = sqlite3.connect(path)
            self._spill.executescript(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                "CREATE TABLE seen (digest BLOB PRIMARY KEY) WITHOUT ROWID;"
            )
        self._spill.executemany(
            "INSERT OR IGNORE INTO seen (digest) VALUES (?)", ((d,) for d in self._seen)
        )
        self._spill.commit()
        self._seen.clear()

    @property
    def spilled(self) -> bool:
        """Whether the seen-set outgrew memory and lives on disk now."""
        return self._spill is not None

    def close(self) -> None:
        """Delete the spill file, if any. The intake can still be read (rejected, counts)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        if self._spill_tmp is not None:
            self._spill_tmp.cleanup()
            self._spill_tmp = None
        self._seen.clear()

    def __enter__(self) -> Intake:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _items(source: Iterable[_T] | AsyncIterable[_T]) -> AsyncIterator[_T]:
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
    else:
        for item in source:
            yield item
