"""Find, classify and normalise indicators of compromise. Pure parsing: no I/O.

    refang(text)                 hxxp://evil[.]com → http://evil.com (idempotent)
    parse_indicator(raw)         one value given on purpose → Indicator, or InvalidIndicator
    extract(text)                every indicator in free text, plus what was skipped and why
    non_public_reason(ind)       why an indicator must not be sent to a third party, or None
    registrable_domain(host)     sub.example.co.uk → example.co.uk

Free text is held to a higher bar than a value given on purpose, because binary noise, logs and
code produce short look-alikes by chance. In text an IPv6 address needs three hex groups, an
embedded IPv4 ("2001:db8::1", "::ffff:1.2.3.4"), or a short form people write on purpose: "::1",
or a four-digit first group with a digit in it plus one more group ("fe80::1", "fd00::1",
"2001::1"; not "::b", "c::", "a::b" or "dead::beef"); an IPv6 network two groups, or one such
first group ("fe80::/10"); an AS number needs at least two digits and no leading zero (AS15169,
not AS2 or AS02); and a domain whose registrable label is shorter than three characters (t.co,
fb.me) must be defanged or set apart by whitespace or punctuation, not glued to stray symbols
or undecodable bytes.
An IPv4-mapped IPv6 address (::ffff:8.8.8.8) is the IPv4 address, in text and given alone.

Everything here runs in linear time. The parser this replaces validated URLs with a backtracking
regular expression that hung for 30 s on a 50-character string, so the only patterns below are
single character classes or alternations of short literals; structure is found with str methods,
``ipaddress``, ``idna`` and the bundled public suffix list, and every candidate is length-capped.

The rules for one candidate (names, addresses, URLs, trimming) live in ``_parsing``; this module
scans text for candidates, says what must stay private, and is the public import path of both.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Sequence

import idna

from threatintel._defang import clean_pasted, defang, join_spaced, refang, unglue
from threatintel._parsing import (
    _AUTHORITY_END,
    _DEFANGED_TEXT,
    _EXPLICIT,
    _SHOWN,
    _T,
    _TEXT,
    _TEXT_SHORT_LABEL,
    _V6_CIDR_RE,
    DEFAULT_INTERNAL_DOMAINS,
    MAX_DOMAIN_LENGTH,
    MAX_URL_LENGTH,
    _classify,
    _known_tld,
    _Mode,
    _Result,
    _trim_end,
    _url,
    parse_indicator,
    registrable_domain,
)
from threatintel._special import (
    address_reason,
    asn_reason,
    host_reason,
    network_reason,
)
from threatintel.models import Extraction, Indicator, IndicatorType, Rejected

__all__ = [
    "DEFAULT_INTERNAL_DOMAINS",
    "defang",
    "extract",
    "non_public_reason",
    "parse_indicator",
    "refang",
    "registrable_domain",
]

_RUN_RE = re.compile(r"[^\s\"'<>`]+")
_INTERESTING_RE = re.compile(r"[0-9.:@]")
_URL_END_RE = re.compile(r"[,|\\^{}\[\]]")
_ATOM_RE = re.compile(r"[\w.\-@:/+]+")
_DEFANG_HINT_RE = re.compile(r"[\[\](){}\\:]|//")
# The lookbehind is one fixed character, so this cannot backtrack: "xhttp://" is not a URL.
_SCHEME_RE = re.compile(r"(?<![A-Za-z0-9])(?:https?|ftps?)://", re.I | re.A)
_SPLIT_ORDER = "/:@+"


class _Collector:
    def __init__(self) -> None:
        self.found: dict[tuple[IndicatorType, str], Indicator] = {}
        self.rejected: dict[str, Rejected] = {}
        # Text repeats itself (logs above all): classify each distinct candidate once.
        self.memo: dict[tuple[str, _Mode], _Result] = {}

    def classify(self, candidate: str, mode: _Mode) -> _Result:
        key = (candidate, mode)
        if key not in self.memo:
            self.memo[key] = _classify(candidate, mode)
        return self.memo[key]

    def take(self, result: _Result, candidate: str) -> None:
        if isinstance(result, Indicator):
            self.found.setdefault((result.type, result.value), result)
        elif result is not None:
            shown = candidate if len(candidate) <= _SHOWN else candidate[: _SHOWN - 3] + "..."
            if shown not in self.rejected:
                self.rejected[shown] = Rejected(candidate=shown, reason=result)

    def extraction(self) -> Extraction:
        # A domain named on its own stays even when a URL on the same host is found too: the
        # sources answer a domain lookup (resolutions, registrar, pulses on the name) and a URL
        # lookup (that one resource) with different evidence. A URL's host alone is not added.
        return Extraction(
            indicators=list(self.found.values()), rejected=list(self.rejected.values())
        )


def extract(text: str) -> Extraction:
    """Every indicator in free text, first appearance first, and the candidates we skipped."""
    out = _Collector()
    # Pasted text: typographic punctuation ends an indicator, "evil [.] com" is one token.
    text = join_spaced(clean_pasted(text), _known_tld)
    # JSON may escape slashes ("http:\/\/evil.com\/"); no indicator contains a backslash-slash.
    for match in _RUN_RE.finditer(text.replace("\\/", "/")):
        run = match.group()
        mode = _TEXT
        if _DEFANG_HINT_RE.search(run):
            plain = refang(run)
            if plain != run:
                run, mode = plain, _DEFANGED_TEXT
        if _INTERESTING_RE.search(run):
            _scan_run(run, mode, out)
    return out.extraction()


_COMMA_HOST_RE = re.compile(r"[A-Za-z0-9-]+(?:,[A-Za-z0-9-]+)+(?::[0-9]{1,5})?")


def _comma_host(run: str, start: int) -> tuple[str, int] | None:
    """A URL host defanged with commas for dots, refanged, and how many characters it spans."""
    window = run[start : start + MAX_DOMAIN_LENGTH]
    stop = _AUTHORITY_END.search(window)
    authority = window[: stop.start()] if stop else window
    if not _COMMA_HOST_RE.fullmatch(authority):
        return None
    labels = authority.partition(":")[0].split(",")
    if not (len(labels) == 4 and all(x.isdigit() for x in labels)) and not labels[-1].isalpha():
        return None  # neither an IPv4 address nor a name ending in a word: a CSV row
    return authority.replace(",", "."), len(authority)


def _scan_run(run: str, mode: _Mode, out: _Collector) -> None:
    """Cut the URLs out of one whitespace-free run, then read the rest as smaller atoms."""
    pos = 0
    while (scheme := _SCHEME_RE.search(run, pos)) is not None:
        start, end = scheme.span()
        head = run[start:end]
        if run.startswith("[", end):
            close = run.find("]", end, end + 64)
            if close > 0 and ":" in run[end:close]:
                head, end = run[start : close + 1], close + 1  # an IPv6 host's brackets
            else:
                end += 1  # "http://[evil.com": a half bracket defangs the host, holds no IPv6
        stop = _URL_END_RE.search(run, end)
        if stop and stop.group() == "," and (host := _comma_host(run, end)) is not None:
            head, end = head + host[0], end + host[1]  # "http://192,168,0,1", "http://evil,com/"
            stop = _URL_END_RE.search(run, end)
        _scan_atoms(run[pos:start], mode, out)
        candidate = head + run[end : stop.start() if stop else len(run)]
        end = stop.start() if stop else len(run)
        if len(candidate) > 2 * MAX_URL_LENGTH:
            out.take("URL longer than 2,048 characters", candidate)
        else:
            candidate = _trim_end(candidate)
            out.take(out.classify(candidate, _EXPLICIT), candidate)
        pos = end
    _scan_atoms(run[pos:], mode, out)


# Quotes, <, > and whitespace already end a run, so they arrive as "" (a run boundary).
_CLEAN_EDGES = frozenset("()[]{},;!?=|&*")


def _clean_edge(ch: str) -> bool:
    """Whitespace or punctuation: how prose and data set a name apart, unlike binary noise."""
    if not ch:
        return True  # the start or end of a run, which whitespace or quotes delimit
    if ch.isascii():
        return ch.isspace() or ch in _CLEAN_EDGES
    # Curly quotes, guillemets, no-break spaces; not U+FFFD, which is what undecodable bytes became.
    return unicodedata.category(ch)[0] in "PZ"


def _scan_atoms(segment: str, mode: _Mode, out: _Collector) -> None:
    for match in _ATOM_RE.finditer(segment):
        start, end = match.span()
        atom, atom_mode = match.group(), mode
        if segment.startswith("(", end):
            continue  # a call in pasted code (console.log(...), path.open()), not an indicator
        if (
            atom.startswith("::")
            and segment[start - 2 : start - 1].isalnum()
            and segment[start - 1 : start] == "["
        ):
            continue  # "x[::1]" is a slice in pasted code, not the loopback address
        if ("AT" in atom or "DOT" in atom) and (plain := unglue(atom)) != atom:
            atom, atom_mode = plain, _DEFANGED_TEXT  # "fooATbar.com", "bob@evilDOTcom"
        edges = (segment[start - 1 : start], segment[end : end + 1])
        _take_atom(atom, atom_mode, out, _SPLIT_ORDER, keep_rejects=True, edges=edges)


def _short_name(indicator: Indicator) -> bool:
    """A domain whose registrable label ("t" in t.co, "ó" in xn--yqa.gr) is very short."""
    if indicator.type is not _T.DOMAIN:
        return False
    labels = (indicator.registrable_domain or indicator.value).split(".")
    # Without a registrable domain (x.local, a.corp) the label before the special TLD counts.
    label = labels[0] if indicator.registrable_domain or len(labels) < 2 else labels[-2]
    if label.startswith("xn--"):
        try:
            label = idna.decode(label)
        except (idna.IDNAError, UnicodeError, ValueError):
            return True
    return len(label) < _TEXT_SHORT_LABEL


def _take_atom(
    atom: str,
    mode: _Mode,
    out: _Collector,
    seps: str,
    *,
    keep_rejects: bool,
    edges: tuple[str, str],
) -> None:
    """Classify an atom whole; failing that, split it (path, then port, then mailbox).

    ``edges`` are the characters just outside the whole atom ("" at a run boundary); the pieces
    of a split atom share them.
    """
    core = atom.strip(".-/@+")
    if not _V6_CIDR_RE.fullmatch(core):
        core = core.strip(".-/@+:")
    if len(core) < 3:
        return
    found = out.classify(core, mode)
    if (
        isinstance(found, Indicator)
        and not mode.defanged
        and _short_name(found)
        and not (_clean_edge(edges[0]) and _clean_edge(edges[1]))
    ):
        # A character or two before a public suffix turns up by chance in binary noise ("s.gy",
        # "6.cl"); real short names (t.co, fb.me) come defanged or set apart by spaces and
        # punctuation. Skipped silently: noise is not an attempt worth a rejection reason.
        return
    if found is not None:
        if keep_rejects or isinstance(found, Indicator):
            out.take(found, core)
        return
    for i, sep in enumerate(seps):
        if sep in core:
            for n, piece in enumerate(core.split(sep)):
                # Later path segments (evil.com/invoice.pdf) are file names by design: only
                # an indicator found there is worth keeping, not a complaint about it.
                keep = keep_rejects and not (sep == "/" and n > 0)
                if len(piece) >= 3:
                    _take_atom(piece, mode, out, seps[i + 1 :], keep_rejects=keep, edges=edges)
            return


# --- scope ---------------------------------------------------------------------------------


def non_public_reason(
    indicator: Indicator, internal_domains: Sequence[str] = DEFAULT_INTERNAL_DOMAINS
) -> str | None:
    """Why this indicator must not be sent to a third party, or None if it may be."""
    kind, value = indicator.type, indicator.value
    try:
        if kind in (_T.IPV4, _T.IPV6):
            return address_reason(ipaddress.ip_address(value))
        if kind is _T.CIDR:
            return network_reason(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return "malformed address"  # never built by this module; refuse rather than leak
    if kind is _T.DOMAIN:
        return host_reason(value, internal_domains)
    if kind is _T.EMAIL:
        return host_reason(value.rpartition("@")[2], internal_domains)
    if kind is _T.URL:
        host = indicator.host
        if host is None:
            parsed = _url(value, _EXPLICIT)
            host = parsed.host if isinstance(parsed, Indicator) else None
        if not host:
            return "URL without a usable host"
        # Only a host with a colon (IPv6) or ending in a digit (IPv4) can be an address:
        # the others skip ip_address, whose two failed parses cost more than the whole check.
        if ":" in host or host[-1].isdigit():
            try:
                return address_reason(ipaddress.ip_address(host))
            except ValueError:
                pass
        return host_reason(host, internal_domains)
    if kind is _T.ASN and value[2:].isdigit():
        return asn_reason(int(value[2:]))
    return None
