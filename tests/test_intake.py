"""Intake: the one place input is parsed, deduplicated and screened, a piece at a time."""

from __future__ import annotations

from threatintel._keyguard import KEY_REASON, KeyGuard
from threatintel.indicators import parse_indicator
from threatintel.intake import MAX_LINE, MAX_REJECTED, MAX_SPELLINGS, Intake
from threatintel.settings import Settings

VT_KEY = "ab" * 32


def guard(**overrides: str) -> KeyGuard:
    return KeyGuard(Settings.load(**overrides))


def values_of(pairs: object) -> list[str]:
    return [indicator.value for indicator, _ in pairs]  # type: ignore[attr-defined]


def test_each_indicator_is_handed_on_once_with_every_spelling() -> None:
    """Spellings of one indicator give one pair; the others are recorded as its spellings."""
    intake = Intake(guard())
    pairs = list(intake.feed_values(["http://host.example.com:80/x", "8.8.8.8"]))
    pairs += intake.feed_values(["hxxp://host.example[.]com/x", "http://host.example.com:80/x"])
    assert values_of(pairs) == ["http://host.example.com/x", "8.8.8.8"]
    url = pairs[0][0]
    spellings = ["http://host.example.com:80/x", "hxxp://host.example[.]com/x"]
    assert intake.spellings(url) == spellings
    assert intake.claim(url) == spellings
    assert intake.claim(url) == [] and intake.spellings(url) == []  # claimed, then forgotten
    assert intake.counts.indicators == 2 and intake.counts.duplicates == 2


def test_spellings_are_capped_per_indicator() -> None:
    """No more than MAX_SPELLINGS spellings are kept for one indicator."""
    intake = Intake(guard())
    list(intake.feed_values(f"8.8.8.8{'.' * i}" for i in range(MAX_SPELLINGS + 5)))
    assert len(intake.spellings(parse_indicator("8.8.8.8"))) == MAX_SPELLINGS


def test_the_seen_set_spills_to_disk_and_still_dedupes() -> None:
    """Past its in-memory limit the seen-set lives in SQLite and still recognises old ones."""
    with Intake(guard(), seen_in_memory=10) as intake:
        first = values_of(intake.feed_values(f"10.0.0.{i}" for i in range(50)))
        assert intake.spilled
        again = values_of(intake.feed_values(f"10.0.0.{i}" for i in range(60)))
    assert len(first) == 50
    assert again == [f"10.0.0.{i}" for i in range(50, 60)]


def test_a_line_split_across_chunks_is_read_whole() -> None:
    """Text chunks that cut an indicator in two still yield it, and a final unterminated line
    is read by finish()."""
    intake = Intake(guard())
    pairs = list(intake.feed_text("seen 45.142.2"))
    pairs += intake.feed_text("12.61 today\nand evil-upd")
    pairs += intake.feed_text("ate.com")
    pairs += intake.finish()
    assert values_of(pairs) == ["45.142.212.61", "evil-update.com"]
    assert intake.counts.lines == 2


def test_a_huge_line_is_read_in_pieces() -> None:
    """A line far longer than MAX_LINE is cut where tokens end: indicators at both ends are
    found, and no piece held is longer than MAX_LINE."""
    intake = Intake(guard())
    pairs = list(intake.feed_text("45.142.212.61 "))
    filler = "word " * (MAX_LINE // 2)
    for _ in range(4):
        pairs += intake.feed_text(filler)
    pairs += intake.feed_text("evil-update.com\n")
    assert values_of(pairs) == ["45.142.212.61", "evil-update.com"]
    assert intake.counts.long_lines >= 1


def test_rejects_are_capped_and_the_rest_counted() -> None:
    """At most MAX_REJECTED distinct rejects are kept; the others are counted, not kept."""
    intake = Intake(guard())
    list(intake.feed_values(f"999.1.{i // 250}.{i % 250}" for i in range(MAX_REJECTED + 7)))
    assert len(intake.rejected) == MAX_REJECTED
    assert intake.counts.rejected_omitted == 7
    assert intake.counts.rejected == MAX_REJECTED + 7


def test_our_own_key_is_rejected_by_fingerprint_and_masked_in_spellings() -> None:
    """A configured key given as a value, or met in text, is rejected by its label and never
    handed on; a pasted line holding it keeps its spelling with the key masked."""
    intake = Intake(guard(virustotal_api_key=VT_KEY))
    pairs = list(intake.feed_values([VT_KEY, f"8.8.8.8 {VT_KEY}"]))
    pairs += intake.feed_text(f"upload {VT_KEY} 1.1.1.1\n")
    assert values_of(pairs) == ["8.8.8.8", "1.1.1.1"]
    assert {r.reason for r in intake.rejected} == {KEY_REASON}
    shown = [*intake.spellings(pairs[0][0]), *(r.candidate for r in intake.rejected)]
    assert shown and not any(VT_KEY in text for text in shown)


def test_parsed_indicators_are_taken_as_they_are() -> None:
    """An Indicator given as a value is not parsed again and has no spelling."""
    intake = Intake(guard())
    indicator = parse_indicator("EVIL-UPDATE.COM.")
    assert list(intake.feed_values([indicator])) == [(indicator, None)]
    assert list(intake.feed_values(["evil-update.com"])) == []
