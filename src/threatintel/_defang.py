"""Defanging, refanging, and the clean-up of text pasted from mail, word processors and chat.

    defang(value)        evil.com → evil[.]com, http:// → hxxp:// (unclickable, reversible)
    refang(text)         undo the defang spellings below, token by token, idempotently
    clean_pasted(text)   Unicode punctuation, full-width forms and invisible characters → ASCII
    join_spaced(text)    "evil [.] com", "bob AT evil.com", "http:// evil.com" → one token each

indicators.extract() runs clean_pasted and join_spaced over the whole text, then refang over each
whitespace-free run; parse_indicator() runs clean_pasted and refang over its one value.

Spellings collected from public IOC tooling and reports (the corpus in
tests/fixtures/defang_corpus.tsv names the source of each):
dots ``[.] (.) {.} [dot] (dot) {dot} \\. [punto] [punkt]`` and half, repeated or mixed brackets
around a dot (``evil[.com``, ``evil.]com``, ``10.10.10.]]]10``, ``www].[evil``); ``[,]``;
``[:] [://] [:// [/] (/) [-] [@] (@) [at] (at) [et] [arroba]``; schemes ``hxxp hXXp hxtp h**p h__p
fxp meow:// xxxx:// xxxxx:// xxxxs:// [http]://``; in text also ``http//evil.com``, and spaced
``evil [.] com``, ``evil ( dot ) com``, ``evil . com`` and ``evil DOT com`` (only before a known
top-level domain), ``bob @ evil.com``, ``bob AT evil.com``, ``http :// evil.com``.

Every pattern here is a character class, a short literal alternation or a bounded repeat, with
look-arounds of a fixed few characters; none can backtrack beyond a constant, so all of this is
linear.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable

# --- defang --------------------------------------------------------------------------------


#: How a defanged link spells each scheme.
DEFANGED_SCHEMES = {"http": "hxxp", "https": "hxxps", "ftp": "fxp", "ftps": "fxps"}


def defang(value: str) -> str:
    """Make an indicator unclickable for tickets and chat: hxxp://evil[.]com, 1.2.3[.]4.

    ``refang(defang(v)) == v`` for every indicator value.
    """
    scheme, sep, rest = value.partition("://")
    if sep:
        scheme = DEFANGED_SCHEMES.get(scheme.lower(), scheme)
        host_end = len(rest)
        for stop in "/?#":
            index = rest.find(stop)
            if index != -1:
                host_end = min(host_end, index)
        return f"{scheme}://{rest[:host_end].replace('.', '[.]')}{rest[host_end:]}"
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local}[@]{domain.replace('.', '[.]')}"
    if ":" in value and "." not in value:
        return value  # IPv6 and hashes carry no dots to break
    head, dot, tail = value.rpartition(".")
    return f"{head}[.]{tail}" if dot else value


# --- refang: exact tokens ------------------------------------------------------------------

_REFANG = {
    "[.]": ".", "(.)": ".", "{.}": ".", "[dot]": ".", "(dot)": ".", "{dot}": ".", "\\.": ".",
    "[punto]": ".", "(punto)": ".", "[punkt]": ".", "(punkt)": ".",
    "[:]": ":", "(:)": ":", "{:}": ":", "[://]": "://", "(://)": "://", "{://}": "://",
    "[://": "://", "[/]": "/", "(/)": "/", "{/}": "/", "[-]": "-",
    "[@]": "@", "(@)": "@", "{@}": "@", "[at]": "@", "(at)": "@", "{at}": "@",
    "[et]": "@", "[arroba]": "@", "(arroba)": "@",
    "[www]": "www", "(www)": "www",
    "hxxp:": "http:", "hxxps:": "https:", "hxtp:": "http:", "hxtps:": "https:",
    "h**p:": "http:", "h**ps:": "https:", "h__p:": "http:", "h__ps:": "https:",
    "fxp:": "ftp:", "fxps:": "ftps:",
    "[http]:": "http:", "[https]:": "https:", "(http):": "http:", "(https):": "https:",
    # Sandboxes and some feeds rewrite the scheme to meow:// or x-out all of it.
    "meow://": "http://", "meows://": "https://",
    "xxxx://": "http://", "xxxxx://": "https://", "xxxxs://": "https://",
}  # fmt: skip


def _token_re(tokens: list[str]) -> re.Pattern[str]:
    """Longest first; grouped by first character, so the engine skips ahead to candidates.

    ASCII-only case folding: with full Unicode folding "ſ" would match "s" and miss the table.
    """
    by_first: dict[str, list[str]] = {}
    for token in sorted(tokens, key=len, reverse=True):
        by_first.setdefault(token[0], []).append(re.escape(token[1:]))
    return re.compile(
        "|".join(f"{re.escape(c)}(?:{'|'.join(rest)})" for c, rest in by_first.items()),
        re.I | re.A,
    )


# Tokens opening with a bracket or backslash, and scheme tokens, which open with a letter: the
# second pattern cannot skip ahead (letters are everywhere) and runs only when a gate is seen.
_BRACKET_TOKEN = "[({\\"
_REFANG_BRACKETS_RE = _token_re([t for t in _REFANG if t[0] in _BRACKET_TOKEN])
_REFANG_SCHEMES_RE = _token_re([t for t in _REFANG if t[0] not in _BRACKET_TOKEN])
_SCHEME_GATES = ("xx", "xt", "**", "__", "fx", "meow")
# Every token holds one of these; a run holding none (most URLs, long words) skips both patterns.
_GATES = ("[", "]", "(", ")", "{", "}", "\\", *_SCHEME_GATES)
_LONGEST_TOKEN = max(map(len, _REFANG))
_BY_LAST_CHAR: dict[str, list[tuple[str, str]]] = {}
for _token, _replacement in _REFANG.items():
    _BY_LAST_CHAR.setdefault(_token[-1], []).append((_token, _replacement))


def _refang_once(text: str) -> str:
    plain = _REFANG_BRACKETS_RE.sub(_replace_token, text)
    low = plain.lower()
    if any(gate in low for gate in _SCHEME_GATES):
        plain = _REFANG_SCHEMES_RE.sub(_replace_token, plain)
    return plain


def _replace_token(match: re.Match[str]) -> str:
    return _REFANG[match.group().lower()]


# --- refang: loose brackets around a dot ---------------------------------------------------

# "evil[.com", "evil.]com", "10.10.10.]]]10", "www].[evil", "5[,]6": brackets (at least one)
# hugging a dot or comma between two alphanumerics. The pattern opens with the bracket or dot
# itself, so the engine skips ahead to candidates; the look-behind then admits only the start of
# a bracket run, so each run is scanned once.
_LOOSE_RE = re.compile(
    r"[\[\](){}\\.,](?<=[A-Za-z0-9].)"
    r"(?:(?<=[.,])[\[\](){}]+|(?<=[\[\](){}\\])[\[\](){}\\]*[.,][\[\](){}]*)(?=[A-Za-z0-9])"
)
# What any loose match starts with: a bracket after an alphanumeric, or a dot before a bracket.
_LOOSE_HINT_RE = re.compile(r"[A-Za-z0-9.,][\[\](){}\\]")

_CLOSERS = {"]": "[", ")": "(", "}": "{"}
_CODE_LOOKBACK = 64  # how far back a closing bracket may find its opener ("rows[0].name")


def _loose_pass(text: str) -> str:
    """Rewrite every loose match; each judged against the text as rewritten so far, so a
    second pass finds nothing more ("0.(0).0": the "(" the first match took no longer makes
    the later ")." look like code)."""
    out: list[str] = []
    tail = ""  # the last _CODE_LOOKBACK characters written
    last = 0
    for match in _LOOSE_RE.finditer(text):
        tail = (tail + text[last : match.start()])[-_CODE_LOOKBACK:]
        plain = _loose(match.group(), tail)
        out.append(text[last : match.start()])
        out.append(plain)
        tail = (tail + plain)[-_CODE_LOOKBACK:]
        last = match.end()
    out.append(text[last:])
    return "".join(out)


def _loose(token: str, before: str) -> str:
    if token[0] == "\\" and token[1:] != ".":
        return token  # a backslash escapes only a dot ("evil\\.com"), not a bracket
    if "," in token and (token[0] not in "[({" or token[-1] not in "])}"):
        return token  # only "[,]" and "(,)" stand for a dot; "a],b" is a list in code
    opener = _CLOSERS.get(token[0])
    # "rows[0].name", "f(x).com": the closer ends a bracket opened just before, as in code.
    if opener is not None and before.count(opener) > before.count(token[0]):
        return token
    return "."


# "https:///evil.com/a": a third slash before a dotted name; "http:///path" has no host at all.
_TRIPLE_SLASH_RE = re.compile(r"(?<=[A-Za-z]:)///(?=[A-Za-z0-9-]{1,63}\.)")


def refang(text: str) -> str:
    """Undo common defanging: hxxp, [.], (.), {.}, [dot], [:], [://], [@], [at], \\., and more."""
    if ":///" in text:
        text = _TRIPLE_SLASH_RE.sub("//", text)
    for _ in range(3):
        low = text.lower()
        if not any(gate in low for gate in _GATES):
            break
        plain = _refang_once(text)
        if plain == text:
            break
        text = plain
    else:
        # Nested spellings such as "[[[.]]]" reveal a new token per pass; finish with one stack
        # pass rather than looping, which would be quadratic on adversarial input.
        text = _refang_stack(text)
    # Loose brackets last, once: what they leave ("evil.com") completes no token above, but
    # may complete the dotted name a third slash waits for ("https:///evil[.com").
    if _LOOSE_HINT_RE.search(text):
        text = _loose_pass(text)
    return _TRIPLE_SLASH_RE.sub("//", text) if ":///" in text else text


def _refang_stack(text: str) -> str:
    """Rewrite to a fixed point in one pass: the output never contains a defang token."""
    out: list[str] = []
    pending = list(reversed(text))
    while pending:
        out.append(pending.pop())
        candidates = _BY_LAST_CHAR.get(out[-1])
        if not candidates:
            continue
        # One lower-cased tail for all candidates; non-ASCII text may change length when
        # lower-cased, so it compares token by token instead.
        raw = "".join(out[-_LONGEST_TOKEN:])
        low = raw.lower() if raw.isascii() else None
        for token, plain in candidates:
            if len(out) < len(token):
                continue
            if low is not None:
                hit = low.endswith(token)
            else:
                tail = "".join(out[-len(token) :])
                hit = tail.isascii() and tail.lower() == token
            if hit:
                del out[-len(token) :]
                # Re-feed the replacement so tokens it completes to its left are found too.
                pending.extend(reversed(plain))
                break
    return "".join(out)


# --- pasted text ---------------------------------------------------------------------------

# Zero-width and bidi format characters: inside a word (Latin text has real spaces) they are
# dropped, "evil\u200b.com" → "evil.com"; next to other scripts they are word breaks.
_INVISIBLE_RE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_JOINERS = "\u00ad\u200c\u200d\u2060"  # soft hyphen and joiners never separate words
_CJK = "\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# Chinese, Japanese and Korean run Latin words into their own without a space ("访问evil.com").
_CJK_EDGE_RE = re.compile(f"(?<=[A-Za-z0-9])(?=[{_CJK}])|(?<=[{_CJK}])(?=[A-Za-z0-9])")
_TO_ASCII: dict[int, str | int] = {
    **{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)},  # full-width ASCII forms
    # The ideographic full stop ends a sentence, even before a Latin word ("确认。Next"), so it
    # is a space, never a dot; the full-width full stop "．" belongs to full-width names.
    0x3000: " ", 0x3001: ",", 0x3002: " ", 0xFF61: " ", 0xFF64: ",",
    0x2010: "-", 0x2011: "-",  # hyphen and non-breaking hyphen, as word processors type them
    # A full-width closer ends a word as a space would: "（evil.com）次" is not "evil.com)次".
    # "evil［.］com" still refangs, through the spaced "[.] " join.
    0xFF09: ") ", 0xFF3D: "] ", 0xFF5D: "} ",
}  # fmt: skip


def _invisible(match: re.Match[str]) -> str:
    text, at = match.string, match.start()
    if match.group() in _JOINERS:
        return ""
    near = text[at - 1 : at] + text[at + 1 : at + 2]
    return "" if near.isascii() else " "


_SCANNED_UP_TO = 0x20000  # the BMP and the symbol and emoji planes; CJK extensions are letters


@functools.cache
def _separator_re() -> re.Pattern[str]:
    """Every non-ASCII punctuation, space or symbol character except U+FFFD, as one class.

    U+FFFD stays: it is what undecodable bytes became, and binary noise must stay glued.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(0x80, _SCANNED_UP_TO):
        if code in _TO_ASCII or code == 0xFFFD or unicodedata.category(chr(code))[0] not in "PZS":
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = (re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)
    return re.compile("[" + "".join(parts) + "]")


def clean_pasted(text: str) -> str:
    """Typographic quotes, dashes, ellipses, guillemets, CJK and full-width punctuation end an
    indicator; full-width letters and dots become ASCII; invisible characters are dropped."""
    if text.isascii():
        return text
    text = _INVISIBLE_RE.sub(_invisible, text)
    text = text.translate(_TO_ASCII)
    text = _separator_re().sub(" ", text)
    return _CJK_EDGE_RE.sub(" ", text)


# --- spaced defangs ------------------------------------------------------------------------

_BRACKET_TOKEN_RE = re.compile(
    r"[\[({](?: {1,2}(TOKEN) {0,2}|(TOKEN) {1,2}|(?<= .)(TOKEN)|(TOKEN)(?=. ))[\])}]".replace(
        "TOKEN", r"\.|dot|punto|punkt|@|at|arroba|://|:|/"
    ),
    re.I | re.A,
)
_BRACKETED = {".": "[.]", "dot": "[.]", "punto": "[.]", "punkt": "[.]", "@": "[@]", "at": "[@]"}
# Each pattern opens with its rare literal and looks behind from there (see _LOOSE_RE). A match
# keeps the spaces before it; the bracket join that runs next takes them.
_SPACED_DOT_RE = re.compile(
    r"(?:\.|DOT)(?:(?<=[A-Za-z0-9] \.)|(?<=[A-Za-z0-9]  \.)|(?<=[A-Za-z0-9] DOT)"
    r"|(?<=[A-Za-z0-9]  DOT)) {1,2}(?=[a-z])"
)
_SPACED_AT_RE = re.compile(
    r"@(?:(?<=[A-Za-z0-9] @)|(?<=[A-Za-z0-9]  @)) {1,2}(?=[A-Za-z0-9])"
    r"|AT(?:(?<=[a-z0-9] AT)|(?<=[a-z0-9]  AT)) {1,2}(?=[a-z0-9])"
)
_SPACED_SCHEME_RE = re.compile(
    r"([hHfF](?:(?<=[hH])[xXtT*_]{2}(?<![A-Za-z0-9/]...)|(?<=[fF])[xXtT](?<![A-Za-z0-9/]..))"
    r"[pP][sS]?) {0,2}(\[?:\]?|) {0,2}(/{2,3}\]?) {0,2}(?=[A-Za-z0-9\[])"
)
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _join_brackets(text: str) -> str:
    """ "evil [.] com", "evil ( dot ) com", "bob [at] evil.com" → "evil[.]com", "bob[@]evil.com"."""
    out: list[str] = []
    last = 0
    for match in _BRACKET_TOKEN_RE.finditer(text):
        start, end = match.span()
        left, right = start, end
        while left > max(last, start - 2) and text[left - 1] == " ":
            left -= 1
        while right < min(len(text), end + 2) and text[right] == " ":
            right += 1
        if not (left > 0 and right < len(text)):
            continue
        if text[left - 1] not in _ALNUM or text[right] not in _ALNUM:
            continue
        inner = next(group for group in match.groups() if group).lower()
        out += (text[last:left], _BRACKETED.get(inner, f"[{inner}]"))
        last = right
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def join_spaced(text: str, known_tld: Callable[[str], bool]) -> str:
    """Join defangs written with spaces into one run, keeping them marked as defanged.

    A bare " . " or " DOT " joins only before a known top-level domain ("evil . com"), so prose
    ("the end . Then") and acronyms stay apart; lower-case " dot " and " at " are prose, never
    joined.
    """

    def spaced_dot(match: re.Match[str]) -> str:
        line, end = match.string, match.end()
        stop = end
        while stop < len(line) and stop - end < 64 and line[stop] in _LABEL_CHARS:
            stop += 1
        # Lower case only: after " . " prose starts a sentence ("down . Today we ...").
        return "[.]" if known_tld(line[end:stop]) else match.group()

    # Each pass runs only if its literal is there: most text has none of them.
    if " ." in text or "  ." in text or " DOT " in text:
        text = _SPACED_DOT_RE.sub(spaced_dot, text)
    if "@ " in text or " AT " in text:
        text = _SPACED_AT_RE.sub("[@]", text)
    if " " in text:
        text = _join_brackets(text)
    # "http :// evil.com", "https:/// evil.com": one scheme, no spaces, two slashes.
    return _SPACED_SCHEME_RE.sub(_spaced_scheme, text)


def _spaced_scheme(match: re.Match[str]) -> str:
    if match[2] and " " not in match.group():
        return match.group()  # refang() reads the unspaced spellings, "https:///evil.com" too
    return match[1] + (match[2] or ":") + match[3]  # "http//evil.com" lost its colon


# "fooATbar.com", "bob@evilDOTcom": an upper-case AT or DOT inside an otherwise lower-case word.
_GLUED_RE = re.compile(r"(?<=[a-z0-9])(AT|DOT)(?=[a-z0-9])")


def unglue(atom: str) -> str:
    """Read a glued AT or DOT in an otherwise lower-case atom; anything else is left alone."""
    plain = _GLUED_RE.sub(lambda m: "@" if m.group() == "AT" else ".", atom)
    if plain == atom or any(ch.isupper() for ch in plain):
        return atom  # CamelCase, base64 and acronyms carry other capitals
    return plain
