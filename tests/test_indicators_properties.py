"""Property tests: the parser never crashes, refang is idempotent, extraction round-trips."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threatintel.errors import InvalidIndicator
from threatintel.indicators import extract, non_public_reason, parse_indicator, refang
from threatintel.models import Indicator, IndicatorType

INDICATORISH = "0123456789abcdef.:/[]()hxtpsHX@-_ \n"
DEFANGISH = INDICATORISH + "{}\\dotDOTaAfF,;!?'\"<>%#=+"
# Text pasted from mail, word processors and chat: quotes, CJK and full-width forms, invisibles.
PASTED = DEFANGISH + "*m\u201c\u201d\u00ab\u3002\uff0e\uff3b\u200b\u2026\u00a0"
FRAGMENTS = [
    "http://",
    "hxxps[:]//",
    "[.]",
    "(dot)",
    "[@]",
    "example.com",
    "ex.co.uk",
    "1.2.3.4",
    "::1",
    "2001:db8::",
    ":8080",
    "/path?q=1#f",
    "invoice.pdf",
    "CVE-2021-44228",
    "AS15169",
    "d41d8cd98f00b204e9800998ecf8427e",
    "/24",
    "user@",
    "münchen.de",
    "xn--",
    ")",
    "]",
    "[",
    " ",
    ",",
    # The loose and spaced spellings, short IPv6 and code look-alikes.
    "hxxps[://",
    "[.",
    ".]",
    "]].",
    " [.] ",
    " . ",
    " AT ",
    "AT",
    "meow://",
    "http//",
    ":///",
    "[,]",
    "x[::1]",
    "fe80::1",
    "rows[0].",
]

text_like = st.one_of(
    st.text(),
    st.text(alphabet=INDICATORISH),
    st.text(alphabet=DEFANGISH),
    st.text(alphabet=PASTED),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(alphabet=INDICATORISH, max_size=4)).map("".join),
)
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(text_like)
def test_extract_never_raises(text: str) -> None:
    """extract() returns an Extraction for any text, and scoping its output never raises."""
    extraction = extract(text)
    for indicator in extraction.indicators:
        non_public_reason(indicator)


@SETTINGS
@given(text_like)
def test_parse_indicator_raises_only_invalid_indicator(text: str) -> None:
    """parse_indicator() either returns an Indicator or raises InvalidIndicator with a reason."""
    try:
        indicator = parse_indicator(text)
    except InvalidIndicator as exc:
        assert exc.reason
    else:
        assert parse_indicator(indicator.value) == indicator


@SETTINGS
@given(text_like)
def test_refang_is_idempotent(text: str) -> None:
    """Refanging already refanged text changes nothing."""
    once = refang(text)
    assert refang(once) == once


@SETTINGS
@given(text_like)
def test_extracted_indicators_round_trip(text: str) -> None:
    """Every extracted indicator parses back, from its value alone, to the same indicator."""
    for indicator in extract(text).indicators:
        assert parse_indicator(indicator.value) == indicator


@SETTINGS
@given(text_like)
def test_extraction_has_no_duplicates(text: str) -> None:
    """Indicators are unique by (type, value) and rejects are unique by candidate."""
    extraction = extract(text)
    keys = [(i.type, i.value) for i in extraction.indicators]
    assert len(keys) == len(set(keys))
    candidates = [r.candidate for r in extraction.rejected]
    assert len(candidates) == len(set(candidates))


@SETTINGS
@given(st.ip_addresses(v=4))
def test_ipv4_mapped_spellings_read_as_the_ipv4_address(address: IPv4Address) -> None:
    """Both spellings of an IPv4-mapped address, alone or in text, give the IPv4 address."""
    high, low = int(address) >> 16, int(address) & 0xFFFF
    expected = Indicator(type=IndicatorType.IPV4, value=str(address))
    for spelling in (f"::ffff:{address}", f"::ffff:{high:x}:{low:x}"):
        assert parse_indicator(spelling) == expected
        assert extract(f"seen {spelling}, twice").indicators == [expected]


def test_refang_judges_a_closer_against_the_text_as_rewritten() -> None:
    """'0.(0).0' refangs in one pass to what a second pass keeps (the '(' the first loose
    match took no longer makes the later ').' look like code); code stays code."""
    assert refang("0.(0).0") == refang(refang("0.(0).0")) == "0.0.0"
    assert refang("rows[0].name f(x).com") == "rows[0].name f(x).com"
