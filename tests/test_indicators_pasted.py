"""Extraction from pasted text: short IPv6 forms, Unicode punctuation, loose defangs, scope."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threatintel import _defang
from threatintel.engine import Engine
from threatintel.indicators import extract, parse_indicator, refang
from threatintel.models import IndicatorType, SourceStatus
from threatintel.simulator import SimulatorServer

T = IndicatorType
PROPERTY = settings(max_examples=200, deadline=None)


def values(text: str) -> list[str]:
    return [i.value for i in extract(text).indicators]


# --- short IPv6 forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from fe80::1 to ff02::1", ["fe80::1", "ff02::1"]),
        ("loopback ::1, ULA fd00::1", ["::1", "fd00::1"]),
        ("docs use 2001:db8::1 and 2001::1.", ["2001:db8::1", "2001::1"]),
        ("inet6 fe80::1%eth0 scope link", ["fe80::1"]),
        ("listening on [::1]:8080", ["::1"]),
        ("allow fe80::/10 and fc00::/7", ["fe80::/10", "fc00::/7"]),
    ],
)
def test_short_ipv6_forms_are_found_in_text(text: str, expected: list[str]) -> None:
    """The compressed IPv6 forms accepted as arguments are found in free text too."""
    assert values(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "at 12:30:45 and 23:59:59.999",
        "MAC 00:1a:2b:3c:4d:5e, aa:bb:cc:dd:ee:ff",
        ":: alone, and ::: too",
        "std::vector<int> v; Foo::Bar::baz(); a::b; c:: ::b",
        "dead::beef cafe::babe add::face",
        "d41d8cd9::8f00b204",
        "x = arr[::1] and y[::2]",
    ],
)
def test_ipv6_look_alikes_are_not_invented(text: str) -> None:
    """Times, MAC addresses, '::', C++ scopes, hex words and slices never become IPv6."""
    kinds = {i.type for i in extract(text).indicators}
    assert not kinds & {T.IPV6, T.CIDR}


@PROPERTY
@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)).map(
                lambda t: f"{t[0]:02d}:{t[1]:02d}:{t[2]:02d}"
            ),
            st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":")),
            st.tuples(st.text("abcdef", min_size=1, max_size=4), st.text("abcdef", max_size=4)).map(
                "::".join
            ),
            # Scopes whose first name is not hex: "A000::A" is a real IPv6 address (a000::a),
            # and the parser reads a four-digit hex group with a digit in it as one.
            st.from_regex(
                r"[G-Zg-z_][A-Za-z0-9_]{0,8}::[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True
            ),
        ),
        max_size=8,
    ).map(" ".join)
)
def test_times_macs_and_code_scopes_never_read_as_ipv6(text: str) -> None:
    """No mix of times, MAC addresses, hex words or code scopes joined by '::' yields an IPv6."""
    assert not {i.type for i in extract(text).indicators} & {T.IPV6, T.CIDR}


async def test_short_non_public_ipv6_is_extracted_but_never_sent(
    engine: Engine, sim: SimulatorServer
) -> None:
    """fe80::1, ::1, fd00::1 and 2001:db8::1 in text are listed as not queried; nothing is sent."""
    private = ["fe80::1", "::1", "fd00::1", "2001:db8::1"]
    analysis = await engine.analyze_text(f"seen {', '.join(private)} and 8.8.8.8 today")
    by_value = {e.indicator.value: e for e in analysis.enrichments}
    assert list(by_value) == [*private, "8.8.8.8"]
    for value in private:
        statuses = {r.status for r in by_value[value].sources.values()}
        assert statuses <= {SourceStatus.NOT_QUERIED_PRIVATE, SourceStatus.NOT_APPLICABLE}
        assert SourceStatus.NOT_QUERIED_PRIVATE in statuses
    assert len(sim.log) > 0
    sent = " ".join(f"{r.indicator} {r.path} {r.query}" for r in sim.log)
    for value in private:
        assert value not in sent
        assert value.replace(":", "%3A") not in sent


# --- a domain beside a URL on the same host ------------------------------------------------


def test_a_domain_named_beside_its_url_is_kept() -> None:
    """A bare domain that is also a URL's host is its own indicator, after the URL here."""
    assert values("get hxxps://evil[.]com/a, or just evil[.]com") == [
        "https://evil.com/a",
        "evil.com",
    ]
    assert values("evil.com hosts https://evil.com/a") == ["evil.com", "https://evil.com/a"]


async def test_a_domain_beside_its_url_is_looked_up_as_a_domain(
    engine: Engine, sim: SimulatorServer
) -> None:
    """analyze_text asks VirusTotal about the domain and about the URL, separately."""
    analysis = await engine.analyze_text(
        "hxxps://cdn-update-check[.]net/a and cdn-update-check[.]net"
    )
    assert [e.indicator.type for e in analysis.enrichments] == [T.URL, T.DOMAIN]
    paths = [r.path for r in sim.log.filter(vendor="virustotal")]
    assert "/virustotal/api/v3/domains/cdn-update-check.net" in paths
    assert any(p.startswith("/virustotal/api/v3/urls/") for p in paths)


# --- text pasted from mail, word processors and chat ---------------------------------------

WRAPPERS = [
    ("\u201c", "\u201d"),  # “ ”
    ("\u2018", "\u2019"),  # ‘ ’
    ("\u00ab", "\u00bb"),  # « »
    ("\u2039", "\u203a"),  # ‹ ›
    ("\u201e", "\u201c"),  # „ “
    ("\u300c", "\u300d"),  # 「 」
    ("\u300e", "\u300f"),  # 『 』
    ("\u3010", "\u3011"),  # 【 】
    ("\uff08", "\uff09"),  # （ ）
    ("\u00a0", "\u2026"),  # no-break space, ellipsis
    ("\u2014", "\u2013"),  # em dash, en dash
    ("\u3000", "\u3002"),  # ideographic space, ideographic full stop
    ("\u3001", "\ufe50"),  # ideographic comma, small comma
    ("\u2022 ", "\uff0c"),  # bullet, full-width comma
]


@pytest.mark.parametrize(("before", "after"), WRAPPERS)
@pytest.mark.parametrize(
    ("indicator", "value"),
    [
        ("https://example.com/a", "https://example.com/a"),
        ("hxxps://example[.]com", "https://example.com/"),
        ("evil-cdn.net", "evil-cdn.net"),
        ("185.220.101[.]4", "185.220.101.4"),
    ],
)
def test_unicode_punctuation_ends_an_indicator(
    before: str, after: str, indicator: str, value: str
) -> None:
    """Typographic quotes, brackets, dashes, spaces and CJK punctuation end the indicator."""
    assert values(f"see{before}{indicator}{after}next") == [value]


def test_a_url_followed_by_a_curly_quote_is_not_rejected() -> None:
    """'https://example.com”' is the URL, in text and given alone."""
    assert values("https://example.com\u201d") == ["https://example.com/"]
    assert parse_indicator("https://example.com\u201d").value == "https://example.com/"
    assert parse_indicator("\u201cevil.com\u201d").value == "evil.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\uff45\uff56\uff49\uff4c\uff0e\uff43\uff4f\uff4d", ["evil.com"]),  # full-width
        ("evil\uff3b.\uff3dcom", ["evil.com"]),  # full-width brackets
        ("\u8bbf\u95eeevil-cdn.net\u83b7\u53d6", ["evil-cdn.net"]),  # 访问evil-cdn.net获取
        ("evil.\u200bcom and evil\u00adcdn.net", ["evil.com", "evilcdn.net"]),
        ("\ufeffevil.com", ["evil.com"]),
        ("ok\U0001f6a8evil.com\U0001f6a8", ["evil.com"]),  # emoji either side
    ],
)
def test_pasted_unicode_is_normalised(text: str, expected: list[str]) -> None:
    """Full-width forms become ASCII, invisible characters vanish, CJK text is set apart."""
    assert values(text) == expected


def test_undecodable_bytes_still_glue_short_names() -> None:
    """U+FFFD is not punctuation: a short name glued to it stays noise."""
    assert values("\ufffds.gy\ufffd") == []


# --- loose defangs: refanged, or skipped, never a wrong indicator --------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example[.com", ["example.com"]),
        ("example.]com", ["example.com"]),
        ("www].[example].[com", ["www.example.com"]),
        ("10.10.10.]]]10", ["10.10.10.10"]),
        ("example(.)com(/)path", ["example.com"]),
        ("http://example(.)com(/)path", ["http://example.com/path"]),
        ("10\\.10\\.10\\.10", ["10.10.10.10"]),
        ("5[,]6[,]7(,)8", ["5.6.7.8"]),
        ("hxxps[:]//evil{.}com h**p://evil.org/x", ["https://evil.com/", "http://evil.org/x"]),
        ("http[://evil.com/a meow://evil.org/b", ["http://evil.com/a", "http://evil.org/b"]),
        ("evil [.] com, evil2 ( dot ) com, evil3 . com", ["evil.com", "evil2.com", "evil3.com"]),
        (
            "bob [at] evil.com; ann AT evil.org; foo@barDOTcom",
            ["bob@evil.com", "ann@evil.org", "foo@bar.com"],
        ),
        ("http://example[.com/ http://example,com/", ["http://example.com/"]),
        (
            "http://[example.com/a http://192,168,0,1",
            ["http://example.com/a", "http://192.168.0.1/"],
        ),
        ("http :// evil.com/a https:///evil.org/b", ["http://evil.com/a", "https://evil.org/b"]),
    ],
)
def test_loose_defangs_are_refanged(text: str, expected: list[str]) -> None:
    """Half, repeated, mixed and spaced brackets, escapes and odd schemes are refanged."""
    assert values(text) == expected


# Read as written, not refanged: AT next to a capital is part of the word.
ALLOWED = {"foomatbar.com", "fooatabar.com"}


@pytest.mark.parametrize(
    "text",
    [
        "rows[0].name and obj[key].email and f(x).com",
        "Buy some milk (and eggs).",
        "the dot com bubble; meet at noon at the office",
        "It went down . Today we patched",
        "9,10,11,12 and example,com and polka-dot-dress",
        "fooMATbar.com fooATAbar.com",
        "http:///path",
    ],
)
def test_prose_and_code_are_not_refanged_into_indicators(text: str) -> None:
    """Indexing in code, prose words and CSV rows are left alone: nothing is refanged."""
    assert not any("@" in v or "." in v for v in values(text) if v not in ALLOWED)


def test_no_single_label_url_from_a_broken_defang() -> None:
    """The defangs that used to become http://example/ give the full host or nothing."""
    for text in ("http://example[.com/", "http://example,com/", "http://[example.com"):
        assert "http://example/" not in values(text)


def test_refang_undoes_the_new_spellings_idempotently() -> None:
    """refang() reads half brackets, bracketed words and sandbox schemes, and is idempotent."""
    text = "hxxps[://evil[.com/a meows://x[punkt]org bob(arroba)x.org xxxxx://a.b/"
    once = refang(text)
    assert once == "https://evil.com/a https://x.org bob@x.org https://a.b/"
    assert refang(once) == once


def test_every_refang_token_passes_the_cheap_gate() -> None:
    """Each defang token holds a gate substring, so the quick pre-check never skips one."""
    for token in _defang._REFANG:
        assert any(gate in token for gate in _defang._GATES), token


ADVERSARIAL = [
    "a" + "]" * 20_000 + ".",
    "a" + "[" * 20_000 + "x",
    "a" + "." + "]" * 20_000,
    "a" + " ." * 20_000,
    "a" + " DOT " * 10_000,
    "\u200b" * 20_000 + "a.com",
    "\u8bbfa" * 20_000,
    "http://" + "a," * 20_000,
    "http://[" + "a" * 20_000,
    "a :// " * 10_000,
    "x" + ":///" * 20_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_new_patterns_stay_linear(text: str) -> None:
    """Inputs built against the new patterns finish (the per-test timeout is the bound)."""
    extract(text * 5)
    refang(text * 5)
