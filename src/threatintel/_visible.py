"""The one cleaning step for text that reaches a terminal or a human-facing file.

    visible(text)              hidden characters shown as escapes; tab and newline become spaces
    visible(text, lines=True)  the same, but tab and newline kept (HTML text)
    one_line(text, limit)      visible(), whitespace runs collapsed to one space, cut with "…"
    hidden(ch)                 whether a character must never reach a screen as itself

Upstream answers (pulse names, tags, WHOIS and geolocation strings) and analysed files are
attacker-controlled. Printed raw, an ESC sequence clears the screen (``ESC c``), sets the window
title (OSC 0), writes the clipboard (OSC 52) or plants a hyperlink (OSC 8); backspaces and
carriage returns overwrite what was printed; a bidi override (U+202E) reorders what the analyst
reads; a zero-width character makes two different strings look the same.

A hidden character is one of Unicode category C — controls (Cc: C0, DEL and the C1 block with
CSI U+009B), formats (Cf: the bidi embeddings, overrides and isolates U+202A–202E and
U+2066–2069, the marks U+200E, U+200F and U+061C, the zero-width U+200B–200D, U+2060 and U+FEFF,
the soft hyphen, tag characters), surrogates (Cs), private use (Co), unassigned (Cn) — or a line
or paragraph separator (Zl, Zp). Each is replaced by its Python escape, which is plain ASCII and
says what was there: ESC → ``\\x1b``, CR → ``\\r``, U+202E → ``\\u202e``, U+E0041 →
``\\U000e0041``. Not U+FFFD: an analyst should tell a clipboard write (``\\x1b]52;``) from an
undecodable byte, and nothing is dropped silently. The escape is for reading, not reversible (a
backslash already in the text stays as it is). Tab and newline are the deliberate exceptions:
one line (terminal cells, CSV cells, stderr lines) turns them into spaces; ``lines=True`` keeps
them for formats where they are layout (HTML text, where they show as a space anyway).

Every human-facing renderer (table, Markdown, CSV, HTML, and the flattened descriptions of
STIX and MISP) and every CLI line that quotes upstream or input text goes through here. JSON
documents (JSON, JSON Lines, STIX, MISP) keep values exact: ``json_escape_hidden`` writes each
hidden character as a JSON ``\\uXXXX`` escape, the same value, so a JSON report printed to a
terminal is inert too. URLs are cleaned earlier, by the
parser: it keeps a hidden character in a URL only percent-encoded (``percent_encode_hidden``).
"""

from __future__ import annotations

import unicodedata

__all__ = ["hidden", "json_escape_hidden", "one_line", "percent_encode_hidden", "visible"]

_HIDDEN_SEPARATORS = frozenset({"Zl", "Zp"})
_MAX_REMEMBERED = 4096


def hidden(ch: str) -> bool:
    """Whether one character is a control, format, surrogate, private, unassigned or line break."""
    category = unicodedata.category(ch)
    return category[0] == "C" or category in _HIDDEN_SEPARATORS


def _escape(code: int) -> str:
    if code == 13:
        return "\\r"  # as Python writes it: the one control a reader meets often
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class _Table(dict[int, str | int]):
    """A ``str.translate`` table filled on demand, so a character's category is looked up once."""

    def __init__(self, *, lines: bool) -> None:
        super().__init__({9: 9, 10: 10} if lines else {9: " ", 10: " "})

    def __missing__(self, code: int) -> str | int:
        value: str | int = _escape(code) if hidden(chr(code)) else code
        if len(self) < _MAX_REMEMBERED:  # hostile text may try every code point
            self[code] = value
        return value


_ONE_LINE = _Table(lines=False)
_LINES = _Table(lines=True)


def visible(text: object, *, lines: bool = False) -> str:
    """``text`` with every hidden character shown as its escape (see the module docstring)."""
    text = str(text)
    if text.isprintable():  # the common case: nothing hidden, not even a tab or a newline
        return text
    return text.translate(_LINES if lines else _ONE_LINE)


def one_line(text: object, limit: int | None = None) -> str:
    """One line of visible text: whitespace runs become one space; cut to ``limit`` with "…".

    With a limit only the first 4 × ``limit`` characters are read: a megabyte of upstream text
    costs no more than a short one.
    """
    text = str(text)
    if limit is not None:
        text = text[: limit * 4]
    if (
        text.isprintable()  # so its only whitespace is " " (every other kind is not printable)
        and (limit is None or len(text) <= limit)
        and "  " not in text
        and text[:1] != " "
        and text[-1:] != " "
    ):
        # Already one visible line: the common case for vendor names, tags and labels, which
        # scoring clips by the tens per indicator (~80,000 per 10,000 warm indicators).
        return text
    flat = " ".join(visible(text).split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - 1].rstrip() + "…"


def percent_encode_hidden(text: str) -> str:
    """A URL part with each hidden character percent-encoded as UTF-8 ("\\x1b" → "%1B")."""
    if text.isprintable():
        return text
    return "".join(
        "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")) if hidden(ch) else ch
        for ch in text
    )


def json_escape_hidden(document: str) -> str:
    """A JSON document with every hidden character written as a ``\\uXXXX`` escape.

    The value is unchanged (``"\\u202e"`` is U+202E to any JSON reader); only the bytes a
    terminal would act on are gone. A hidden character only occurs inside a JSON string (the
    syntax is printable ASCII and whitespace), except the newlines and indentation of the
    layout, which are kept. Characters beyond U+FFFF become a surrogate pair, as JSON spells them.
    """
    if document.isprintable():
        return document
    return document.translate(_JSON)


class _JsonTable(dict[int, str | int]):
    """``str.translate`` table for json_escape_hidden, filled on demand like _Table."""

    def __missing__(self, code: int) -> str | int:
        value: str | int = code
        if code not in (9, 10, 13) and hidden(chr(code)):
            if code < 0x10000:
                value = f"\\u{code:04x}"
            else:
                high, low = divmod(code - 0x10000, 0x400)
                value = f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"
        if len(self) < _MAX_REMEMBERED:
            self[code] = value
        return value


_JSON = _JsonTable()
