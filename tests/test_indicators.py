"""Indicator parsing: refang, classify, normalise, extract from text, and scope."""

from __future__ import annotations

import contextlib
import random

import pytest

from threatintel import indicators
from threatintel.errors import InvalidIndicator
from threatintel.indicators import (
    DEFAULT_INTERNAL_DOMAINS,
    extract,
    non_public_reason,
    parse_indicator,
    refang,
    registrable_domain,
)
from threatintel.models import Indicator, IndicatorType

T = IndicatorType
MD5 = "44d88612fea8a8f36de82e1278abb02f"
SHA1 = "3395856ce81f2b7382dee72602f798b642f14140"
SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"


def found(text: str) -> list[tuple[str, str]]:
    return [(i.type.value, i.value) for i in extract(text).indicators]


def rejected(text: str) -> dict[str, str]:
    return {r.candidate: r.reason for r in extract(text).rejected}


@pytest.mark.parametrize(
    "value",
    [
        "http://evil.com/a.b?c=d.e",
        "https://1.2.3.4:8080/x",
        "evil.co.uk",
        "1.2.3.4",
        "a@b-corp.com",
        "2001:db8::1",
        "d41d8cd98f00b204e9800998ecf8427e",
    ],
)
def test_defang_is_undone_by_refang(value: str) -> None:
    """Defanged values are unclickable yet refang back to exactly the original."""
    shown = indicators.defang(value)
    assert indicators.refang(shown) == value
    if "." in value.split("/")[2 if "://" in value else 0]:
        assert "[.]" in shown


def test_public_surface() -> None:
    """The module exports exactly the documented names and the default internal suffixes."""
    assert sorted(indicators.__all__) == [
        "DEFAULT_INTERNAL_DOMAINS",
        "defang",
        "extract",
        "non_public_reason",
        "parse_indicator",
        "refang",
        "registrable_domain",
    ]
    assert DEFAULT_INTERNAL_DOMAINS == (".local", ".internal", ".lan", ".home.arpa")


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("8.8.8.8", T.IPV4, "8.8.8.8"),
        ("2606:4700:4700::1111", T.IPV6, "2606:4700:4700::1111"),
        ("evil.example.com", T.DOMAIN, "evil.example.com"),
        ("https://evil.com/a", T.URL, "https://evil.com/a"),
        (MD5.upper(), T.MD5, MD5),
        (SHA1, T.SHA1, SHA1),
        (SHA256, T.SHA256, SHA256),
        ("Bob@Evil.COM", T.EMAIL, "bob@evil.com"),
        ("mailto:bob+tag@evil.com", T.EMAIL, "bob+tag@evil.com"),
        ("cve-2021-44228", T.CVE, "CVE-2021-44228"),
        ("as15169", T.ASN, "AS15169"),
        ("ASN13335", T.ASN, "AS13335"),
        ("10.0.0.0/8", T.CIDR, "10.0.0.0/8"),
        ("10.1.2.3/8", T.CIDR, "10.0.0.0/8"),
        ("2001:DB8::/32", T.CIDR, "2001:db8::/32"),
        ("1" * 32, T.MD5, "1" * 32),
    ],
)
def test_each_type_is_classified(raw: str, kind: IndicatorType, value: str) -> None:
    """Every indicator type is recognised from its usual spelling and given its canonical value."""
    indicator = parse_indicator(raw)
    assert (indicator.type, indicator.value) == (kind, value)


def test_only_the_seven_lookup_types_are_queryable() -> None:
    """Emails, CVEs, ASNs and CIDRs are recognised but reported as not queryable."""
    assert parse_indicator("8.8.8.8").queryable
    for raw in ("a@evil.com", "CVE-2021-44228", "AS15169", "8.8.8.0/24"):
        assert not parse_indicator(raw).queryable


@pytest.mark.parametrize(
    ("defanged", "plain"),
    [
        ("hxxp://evil.com", "http://evil.com"),
        ("hxxps://evil.com", "https://evil.com"),
        ("hXXps://evil.com", "https://evil.com"),
        ("HXXP://evil.com", "http://evil.com"),
        ("fxp://evil.com", "ftp://evil.com"),
        ("fxps://evil.com", "ftps://evil.com"),
        ("evil[.]com", "evil.com"),
        ("evil(.)com", "evil.com"),
        ("evil{.}com", "evil.com"),
        ("evil[dot]com", "evil.com"),
        ("evil(dot)com", "evil.com"),
        ("evil{dot}com", "evil.com"),
        ("evil[DOT]com", "evil.com"),
        ("evil\\.com", "evil.com"),
        ("http[:]//evil.com", "http://evil.com"),
        ("http[://]evil.com", "http://evil.com"),
        ("hxxp[://]evil.com", "http://evil.com"),
        ("http://evil.com[/]x", "http://evil.com/x"),
        ("bob[@]evil.com", "bob@evil.com"),
        ("bob(@)evil.com", "bob@evil.com"),
        ("bob[at]evil.com", "bob@evil.com"),
        ("hxxps[:]//evil[.]co[.]uk", "https://evil.co.uk"),
    ],
)
def test_refang_styles(defanged: str, plain: str) -> None:
    """Each common defanging style is undone, case-insensitively."""
    assert refang(defanged) == plain


@pytest.mark.parametrize("text", ["[[[.]]]", "hxxp[[:]]//x", "\\[.]", "[[://]]", "(((@)))", "a.b"])
def test_refang_is_idempotent_on_nested_tokens(text: str) -> None:
    """Refanging twice gives the same text as refanging once, even for nested tokens."""
    once = refang(text)
    assert refang(once) == once


def test_refang_leaves_ordinary_prose_alone() -> None:
    """Text without defang tokens comes back unchanged (brackets, 'at', 'dot' as words)."""
    text = "meet at noon (or later) [see notes]; dot the i's; fxp transfers"
    assert refang(text) == text


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("EVIL.Example.COM", "evil.example.com"),
        ("evil.com.", "evil.com"),
        ("evil.com,", "evil.com"),
        ("'evil.com';", "evil.com"),
        ("(evil.com)", "evil.com"),
        ("<evil.com>", "evil.com"),
        ("evil.com/", "evil.com"),
        ("  evil.com!?  ", "evil.com"),
        ('"evil[.]com".', "evil.com"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("MÜNCHEN.DE", "xn--mnchen-3ya.de"),
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
        ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("example.online", "example.online"),
        ("github.io", "github.io"),
        ("x.zip", "x.zip"),
    ],
)
def test_domain_normalisation(raw: str, value: str) -> None:
    """Domains are lower-cased, IDNA-encoded and stripped of trailing dots and punctuation."""
    indicator = parse_indicator(raw)
    assert (indicator.type, indicator.value) == (T.DOMAIN, value)


@pytest.mark.parametrize(
    ("host", "registrable"),
    [
        ("sub.example.co.uk", "example.co.uk"),
        ("a.b.example.com", "example.com"),
        ("example.online", "example.online"),
        ("evil.github.io", "evil.github.io"),
        ("github.io", "github.io"),
        ("Sub.Example.CO.UK.", "example.co.uk"),
        ("8.8.8.8", None),
        ("co.uk", None),
        ("not-a-tld.invalidtld", None),
        ("intranet", None),
    ],
)
def test_registrable_domain(host: str, registrable: str | None) -> None:
    """The registrable part follows the public suffix list, private section included."""
    assert registrable_domain(host) == registrable


def test_domain_indicator_carries_registrable_domain() -> None:
    """A domain indicator knows its registrable domain; a bare domain is never a URL."""
    indicator = parse_indicator("sub.example.co.uk")
    assert indicator == Indicator(
        type=T.DOMAIN, value="sub.example.co.uk", registrable_domain="example.co.uk"
    )
    assert parse_indicator("example.com").type is T.DOMAIN


@pytest.mark.parametrize(
    ("raw", "value", "host"),
    [
        ("http://example.com", "http://example.com/", "example.com"),
        ("HTTP://EXAMPLE.COM/Path?Q=A#Frag", "http://example.com/Path?Q=A#Frag", "example.com"),
        ("http://example.com:80/", "http://example.com/", "example.com"),
        ("https://example.com:443/x", "https://example.com/x", "example.com"),
        ("http://example.com:443/x", "http://example.com:443/x", "example.com"),
        ("https://example.com:8443", "https://example.com:8443/", "example.com"),
        ("http://example.com:0080/", "http://example.com/", "example.com"),
        ("http://example.com?q=1", "http://example.com/?q=1", "example.com"),
        ("http://example.com#top", "http://example.com/#top", "example.com"),
        ("http://example.com/a?b=1&c=2", "http://example.com/a?b=1&c=2", "example.com"),
        ("ftp://files.example.com/x.bin", "ftp://files.example.com/x.bin", "files.example.com"),
        ("ftp://example.com:21/", "ftp://example.com/", "example.com"),
        ("http://1.2.3.4/x", "http://1.2.3.4/x", "1.2.3.4"),
        ("http://1.2.3.4:8080/x", "http://1.2.3.4:8080/x", "1.2.3.4"),
        ("http://[2001:DB8::1]:8080/", "http://[2001:db8::1]:8080/", "2001:db8::1"),
        ("http://[2001:db8:0:0:0:0:0:1]/", "http://[2001:db8::1]/", "2001:db8::1"),
        ("http://user:pass@host.example.com/", "http://host.example.com/", "host.example.com"),
        ("http://paypal.com@evil.com/", "http://evil.com/", "evil.com"),
        ("http://münchen.de/ä", "http://xn--mnchen-3ya.de/ä", "xn--mnchen-3ya.de"),
        ("http://intranet/", "http://intranet/", "intranet"),
        ("http://example.com./", "http://example.com/", "example.com"),
        ("http://evil.com\\@good.com/", "http://evil.com\\@good.com/", "evil.com"),
        ("https://en.wikipedia.org/wiki/A_(b)", "https://en.wikipedia.org/wiki/A_(b)", None),
        ("(https://evil.com/a).", "https://evil.com/a", "evil.com"),
    ],
)
def test_url_normalisation(raw: str, value: str, host: str | None) -> None:
    """URLs get a lower-case scheme and host, no default port, '/' for an empty path."""
    indicator = parse_indicator(raw)
    assert (indicator.type, indicator.value) == (T.URL, value)
    if host is not None:
        assert indicator.host == host


def test_url_indicator_fields() -> None:
    """A URL names its host and, when the host is a domain, its registrable domain."""
    named = parse_indicator("https://Login.Evil.co.uk/x")
    assert (named.host, named.registrable_domain) == ("login.evil.co.uk", "evil.co.uk")
    numeric = parse_indicator("http://[::ffff:10.0.0.1]/")
    assert numeric.registrable_domain is None
    assert numeric.host == "::ffff:a00:1"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("2001:db8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:DB8::ABCD", "2001:db8::abcd"),
        ("::1", "::1"),
        ("fe80::", "fe80::"),
        ("fe80::1%eth0", "fe80::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("64:ff9b::808:808", "64:ff9b::808:808"),
    ],
)
def test_ipv6_forms(raw: str, value: str) -> None:
    """IPv6 addresses in compressed, full, upper-case and bracketed forms are normalised."""
    indicator = parse_indicator(raw)
    assert (indicator.type, indicator.value) == (T.IPV6, value)


@pytest.mark.parametrize(
    "raw",
    [
        "::ffff:8.8.8.8",
        "::ffff:808:808",
        "::FFFF:8.8.8.8",
        "0:0:0:0:0:ffff:0808:0808",
        "[::ffff:8.8.8.8]",
        "[::ffff:808:808]:53",
    ],
)
def test_ipv4_mapped_ipv6_is_the_ipv4_address(raw: str) -> None:
    """An IPv4-mapped IPv6 address, given alone or found in text, is its IPv4 address."""
    # Vendors index the IPv4 form; NAT64 (64:ff9b::/96) is a real IPv6 destination and stays one.
    assert parse_indicator(raw) == Indicator(type=T.IPV4, value="8.8.8.8")
    assert found(f"resolver {raw} and 8.8.8.8 again") == [("ipv4", "8.8.8.8")]


def test_ipv4_mapped_private_address_is_scoped_as_ipv4() -> None:
    """A mapped private address becomes the private IPv4 address, kept in the building."""
    indicator = parse_indicator("::ffff:10.0.0.1")
    assert indicator == Indicator(type=T.IPV4, value="10.0.0.1")
    assert non_public_reason(indicator) == "private address (RFC 1918)"


def test_ipv4_with_port_keeps_the_address() -> None:
    """host:port given on its own is the host; the port is dropped."""
    assert parse_indicator("1.2.3.4:8080").value == "1.2.3.4"
    assert parse_indicator("evil.com:443").value == "evil.com"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("999.1.1.1", "not a valid IPv4 address"),
        ("1.2.3.256", "not a valid IPv4 address"),
        ("01.2.3.4", "not a valid IPv4 address"),
        ("1.2.3", "not an IPv4 address"),
        ("2001:db8::1::2", "not a valid IPv6 address"),
        ("10.0.0.0/33", "invalid CIDR prefix"),
        ("invoice.pdf", "looks like a file name"),
        ("setup.exe", "looks like a file name"),
        ("readme.txt", "looks like a file name"),
        ("evil.notatld", "unknown top-level domain (.notatld)"),
        ("co.uk", "public suffix"),
        ("xn--a.com", "punycode"),
        ("a" * 64 + ".com", "not a valid host name"),
        ("-evil.com", "not a valid host name"),
        ("ab" * 25, "hex string of unexpected length (50); not a hash"),
        ("a" * 128, "SHA-512"),
        ("12345", "plain number"),
        ("CVE-2021-1", "malformed CVE"),
        ("AS99999999999", "not a recognised indicator"),
        ("AS9999999999", "out of range"),
        ("hello", "not a recognised indicator"),
        ("evil.com/path", "without a scheme"),
        ("ldap://evil.com/", "unsupported URL scheme (ldap)"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://evil.com:99999/", "invalid port"),
        ("http://evil.com:http/", "invalid port"),
        ("http://2001:db8::1/", "must be in brackets"),
        ("http://[2001:db8::zz]/", "not a valid IPv6"),
        ("http://999.1.1.1/", "not a valid IPv4 address in the URL host"),
        ("http://2130706433/", "numeric URL host"),
        ("http://evil.notatld/", "unknown top-level domain"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/" + "a" * 2100, "longer than 2,048"),
        ("a." * 130 + "com", "longer than 253"),
        ("x" * 5000, "too long"),
        ("bob@invoice.pdf", "email address with a bad domain"),
        ("b..ob@evil.com", "not a valid email"),
        ("a\u0000b.com", "control characters"),
    ],
)
def test_invalid_values_are_rejected_with_a_reason(raw: str, reason: str) -> None:
    """Unusable values raise InvalidIndicator carrying a short human reason."""
    with pytest.raises(InvalidIndicator) as caught:
        parse_indicator(raw)
    assert reason in caught.value.reason
    assert caught.value.value == raw


@pytest.mark.parametrize("name", ["setup.zip", "clip.mov", "install.sh", "tool.py", "README.md"])
def test_file_extensions_that_are_tlds(name: str) -> None:
    """In free text a real-TLD file extension is a file name; given alone it is a domain."""
    assert rejected(f"see {name} now") == {name: "looks like a file name, not a domain"}
    assert parse_indicator(name).type is T.DOMAIN


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3 and 10.0.19041.1 and v2.0",
        "at 12:30:45 on 2024-01-02, MAC 00:1a:2b:3c:4d:5e",
        "e.g. this, i.e. that; os.path.join(a, b) and self.my_var.name",
        "std::vector and Foo::Bar and :: alone",
        "deadbeef 1234567890 0xdeadbeefdeadbeefdeadbeefdeadbeef",
        "a 30-digit number 123456789012345678901234567890",
        "plain prose with no indicators at all.",
    ],
)
def test_prose_and_version_numbers_produce_nothing(text: str) -> None:
    """Version numbers, times, code and plain words are neither found nor reported as rejects."""
    extraction = extract(text)
    assert extraction.indicators == []
    assert extraction.rejected == []


def test_random_bytes_yield_at_most_a_handful_of_indicators() -> None:
    """A megabyte of random bytes, decoded with replacement, is noise: five indicators at most."""
    noise = random.Random(0).randbytes(1_000_000).decode("utf-8", errors="replace")
    assert len(extract(noise).indicators) <= 5


@pytest.mark.parametrize(
    "text",
    [
        "::b c:: a::b dead::beef a::/3 ::/0",
        "AS1 as7 AS02 ASN5",
        "\ufffds.gy\ufffd \x076.cl\x07 \ufffdxb.ls# \ufffdxn--yqa.gr\ufffd",
    ],
    ids=["ipv6", "asn", "short-domains"],
)
def test_short_forms_in_free_text_are_not_indicators(text: str) -> None:
    """Two-group IPv6, one-digit ASNs and short names glued to noise are skipped, not rejected."""
    extraction = extract(text)
    assert extraction.indicators == []
    assert extraction.rejected == []


@pytest.mark.parametrize("raw", ["::b", "c::", "fe80::1", "AS1", "s.gy", "t.co"])
def test_short_forms_given_alone_are_still_indicators(raw: str) -> None:
    """The free-text bar does not apply to a value given on purpose."""
    parse_indicator(raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("via t.co/abc, fb.me and x[.]com", ["t.co", "fb.me", "x.com"]),
        ("\u201ct.co\u201d (x.com) host=fb.me; 6.cl!", ["t.co", "x.com", "fb.me", "6.cl"]),
        ("\ufffdx[.]co\ufffd", ["x.co"]),
        ("2001:db8::1 ::ffff:1.2.3.4 2a0b:f4c2::/32", ["2001:db8::1", "1.2.3.4", "2a0b:f4c2::/32"]),
        ("AS13335 and AS10", ["AS13335", "AS10"]),
    ],
    ids=["prose", "punctuation", "defanged", "ipv6", "asn"],
)
def test_short_forms_with_context_are_found(text: str, expected: list[str]) -> None:
    """Short names set apart by spaces or punctuation, or defanged, and full forms are found."""
    assert [value for _, value in found(text)] == expected


def test_extract_reports_genuine_attempts_as_rejected() -> None:
    """Bad IPs, file names, odd-length hex and defanged unknown TLDs are rejected with reasons."""
    hex50 = "ab12" * 12 + "cd"
    text = f"C2 999.1.1.1 dropped invoice.pdf hash {hex50} and evil[.]notatld but not notatld.x"
    assert rejected(text) == {
        "999.1.1.1": "not a valid IPv4 address",
        "invoice.pdf": "looks like a file name, not a domain",
        hex50: "hex string of unexpected length (50); not a hash",
        "evil.notatld": "unknown top-level domain (.notatld)",
    }


def test_extract_dedupes_in_order_of_first_appearance() -> None:
    """Repeats (in any spelling) are reported once, at their first position."""
    text = "EVIL.com 8.8.8.8 evil[.]com. 1.1.1.1 8.8.8.8 Evil.Com invoice.pdf invoice.pdf"
    assert found(text) == [("domain", "evil.com"), ("ipv4", "8.8.8.8"), ("ipv4", "1.1.1.1")]
    assert len(extract(text).rejected) == 1


def test_email_and_url_hosts_are_not_repeated_as_domains() -> None:
    """An email's domain and a URL's host are not added as domains unless named on their own."""
    assert found("mail bob@evil.com") == [("email", "bob@evil.com")]
    assert found("get http://evil.com/x") == [("url", "http://evil.com/x")]
    html = '<a href="hxxp://evil[.]com/x">evil[.]com</a>'
    assert found(html) == [("url", "http://evil.com/x"), ("domain", "evil.com")]


def test_hex_inside_longer_words_is_not_a_hash() -> None:
    """A hex run is a hash only as a whole word, but separators such as '=' and ':' split words."""
    assert found(f"x{MD5} {MD5}_1 0x{MD5}") == []
    assert found(f"md5={MD5} sha256:{SHA256}") == [("md5", MD5), ("sha256", SHA256)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"ip":"1.2.3.4","url":"http:\\/\\/evil.com\\/a"}', ["1.2.3.4", "http://evil.com/a"]),
        ("ip,domain\n1.2.3.4,evil.com\n", ["1.2.3.4", "evil.com"]),
        (
            "[click](https://evil.com/a) and [x](http://1.2.3.4)",
            ["https://evil.com/a", "http://1.2.3.4/"],
        ),
        ("http://a.com/1,http://b.com/2", ["http://a.com/1", "http://b.com/2"]),
        ("src=10.0.0.1:443 dst=[2001:db8::1]", ["10.0.0.1", "2001:db8::1"]),
        ("${jndi:ldap://198.51.100.1:1389/a}", ["198.51.100.1"]),
        ("mailto:bob@evil.com git@github.com:org/repo.git", ["bob@evil.com", "git@github.com"]),
        ("Visit (https://evil.com/a_(b)). Then", ["https://evil.com/a_(b)"]),
        ("host evil.com:8080 path evil.com/payload.exe", ["evil.com"]),
        ("CVE-2021-44228-poc and AS15169.", ["CVE-2021-44228", "AS15169"]),
        ("net 10.0.0.0/8, 2001:db8::/32", ["10.0.0.0/8", "2001:db8::/32"]),
        ("hxxp://[2001:db8::1]:8080/x", ["http://[2001:db8::1]:8080/x"]),
    ],
)
def test_extract_from_structured_text(text: str, expected: list[str]) -> None:
    """Indicators are found in JSON, CSV, Markdown, logs and code-like text."""
    assert [value for _, value in found(text)] == expected


def test_extract_from_a_pasted_report() -> None:
    """A realistic defanged incident email yields every indicator, normalised, in order."""
    report = """\
From: SOC <soc@corp.example.com>
Subject: [TLP:AMBER] Phishing wave – IOCs

Hi all,

Users received mail from billing[@]invoices-secure[.]com pointing at
hxxps://login.micros0ft-support[.]com/owa/auth.php?user=victim (also seen on port 8443:
hxxps://login.micros0ft-support[.]com:8443/owa/). The payload "Invoice_2024.pdf.exe"
(SHA256 E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855, MD5: {MD5})
beacons to 185.220.101[.]4 and 2a0b:f4c2::12 over 443/tcp; fallback C2 is bad-domain(.)ru.
Internal hosts 10.20.30.40 and fileserver.corp.local were affected.
Exploited CVE-2023-23397; the actor's infrastructure sits in AS200593.
Rules updated to version 2.4.1. Ignore notes.txt.

Thanks,
SOC
"""
    extraction = extract(report.replace("{MD5}", MD5))
    assert found(report.replace("{MD5}", MD5)) == [
        ("email", "soc@corp.example.com"),
        ("email", "billing@invoices-secure.com"),
        ("url", "https://login.micros0ft-support.com/owa/auth.php?user=victim"),
        ("url", "https://login.micros0ft-support.com:8443/owa/"),
        ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("md5", MD5),
        ("ipv4", "185.220.101.4"),
        ("ipv6", "2a0b:f4c2::12"),
        ("domain", "bad-domain.ru"),
        ("ipv4", "10.20.30.40"),
        ("domain", "fileserver.corp.local"),
        ("cve", "CVE-2023-23397"),
        ("asn", "AS200593"),
    ]
    assert {r.candidate for r in extraction.rejected} == {"Invoice_2024.pdf.exe", "notes.txt"}
    private = [i.value for i in extraction.indicators if non_public_reason(i)]
    assert private == ["10.20.30.40", "fileserver.corp.local"]


def test_over_long_candidates_are_rejected_not_parsed() -> None:
    """Candidates past the length caps are rejected with a reason and shown truncated."""
    text = "http://example.com/" + "a" * 3000 + " " + "b." * 200 + "com"
    reasons = sorted(r.reason for r in extract(text).rejected)
    assert reasons == ["URL longer than 2,048 characters", "domain name longer than 253 characters"]
    assert all(len(r.candidate) <= 100 for r in extract(text).rejected)


ADVERSARIAL = [
    "http://example.com/" + "a" * 30 + "!",
    "http://example.com/" + "a" * 5000 + "!",
    "http://" + "a." * 25 + "!",
    "http://example." + "a" * 40 + "!",
    "a." * 25 + "!",
    "1." * 25,
    "[.]" * 20,
    "[" * 50 + "http://" + "]" * 50,
    "http://" + "(" * 40 + ")" * 41,
    "0123456789abcdef" * 4 + "g",
    "hxxp[[[[[[[[[[[[[[[[[[[:]]]]]]]]]]]]]]]]]]]//evil.com",
    "http://[" * 1000,
    "a@" * 25 + "b.com",
    ":" * 50 + "1",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_redos_inputs_finish(text: str) -> None:
    """Inputs that hang a backtracking parser are handled (the per-test timeout is the bound)."""
    extract(text)
    extract(text * 200)
    with contextlib.suppress(InvalidIndicator):
        parse_indicator(text)


def test_old_redos_input_is_parsed() -> None:
    """The string that hung the old regex is read as a URL, trailing '!' stripped."""
    value = "http://example.com/" + "a" * 30 + "!"
    assert parse_indicator(value).value == "http://example.com/" + "a" * 30
    assert found(value) == [("url", "http://example.com/" + "a" * 30)]


# --- scope ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("10.1.2.3", "private address (RFC 1918)"),
        ("172.16.0.1", "private address (RFC 1918)"),
        ("172.31.255.255", "private address (RFC 1918)"),
        ("192.168.1.1", "private address (RFC 1918)"),
        ("127.0.0.1", "loopback address"),
        ("169.254.169.254", "link-local address"),
        ("100.64.0.1", "carrier-grade NAT (RFC 6598)"),
        ("100.127.255.254", "carrier-grade NAT (RFC 6598)"),
        ("224.0.0.251", "multicast address"),
        ("239.255.255.250", "multicast address"),
        ("240.0.0.1", "reserved address (RFC 1112)"),
        ("0.0.0.0", "unspecified address"),
        ("0.1.2.3", "'this network' range (RFC 1122)"),
        ("255.255.255.255", "broadcast address"),
        ("192.0.2.10", "documentation range (RFC 5737)"),
        ("198.51.100.10", "documentation range (RFC 5737)"),
        ("203.0.113.10", "documentation range (RFC 5737)"),
        ("198.18.0.1", "benchmarking range (RFC 2544)"),
        ("198.19.255.1", "benchmarking range (RFC 2544)"),
        ("192.0.0.8", "IETF protocol assignment (RFC 6890)"),
        ("::1", "loopback address"),
        ("::", "unspecified address"),
        ("fe80::1", "link-local address"),
        ("fc00::1", "unique local address (RFC 4193)"),
        ("fd12:3456::1", "unique local address (RFC 4193)"),
        ("ff02::1", "multicast address"),
        ("2001:db8::1", "documentation range (RFC 3849)"),
        ("2001:2::1", "benchmarking range (RFC 5180)"),
        ("fec0::1", "site-local address (deprecated, RFC 3879)"),
        ("100::1", "discard-only range (RFC 6666)"),
        ("http://[::ffff:10.0.0.1]/", "IPv4-mapped private address (RFC 1918)"),
        ("http://[::ffff:127.0.0.1]:8080/", "IPv4-mapped loopback address"),
        ("64:ff9b::c0a8:101", "NAT64 private address (RFC 1918)"),
        ("2002:c0a8:101::1", "6to4 private address (RFC 1918)"),
        ("4000::1", "reserved address (outside global unicast 2000::/3)"),
        ("10.0.0.0/8", "private address (RFC 1918)"),
        ("10.1.0.0/16", "private address (RFC 1918)"),
        ("8.0.0.0/6", "includes non-public space: private address (RFC 1918)"),
        ("0.0.0.0/0", "includes non-public space: private address (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("192.0.2.0/24", "documentation range (RFC 5737)"),
        ("fc00::/7", "unique local address (RFC 4193)"),
        ("::ffff:10.0.0.0/104", "IPv4-mapped private address (RFC 1918)"),
        ("c000::/2", "includes non-public space: unique local address (RFC 4193)"),
    ],
)
def test_non_public_addresses(raw: str, reason: str) -> None:
    """Every special-purpose address range has its own short reason."""
    assert non_public_reason(parse_indicator(raw)) == reason


@pytest.mark.parametrize(
    "raw",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "8.8.8.0/24",
        "2a00:1450::/32",
        "evil.com",
        "evil.local.com",
        "http://8.8.8.8/x",
        "https://evil.com/",
        "bob@evil.com",
        MD5,
        "CVE-2021-44228",
        "AS15169",
    ],
)
def test_public_indicators_have_no_reason(raw: str) -> None:
    """Globally routable addresses, public names, hashes and ids may be looked up."""
    assert non_public_reason(parse_indicator(raw)) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("printer.local", "internal domain (.local)"),
        ("db.internal", "internal domain (.internal)"),
        ("nas.lan", "internal domain (.lan)"),
        ("router.home.arpa", "internal domain (.home.arpa)"),
        ("FILESERVER.CORP.LOCAL.", "internal domain (.local)"),
        ("http://wiki.internal/page", "internal domain (.internal)"),
        ("admin@nas.lan", "internal domain (.lan)"),
        ("http://intranet/", "single-label host name"),
        ("http://localhost:8080/", "loopback host name (RFC 6761)"),
        ("http://10.0.0.1/admin", "private address (RFC 1918)"),
        ("http://[fd00::1]/", "unique local address (RFC 4193)"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address"),
        ("web.test", "reserved name (RFC 6761)"),
        ("srv.corp", "non-public top-level domain (.corp)"),
    ],
)
def test_internal_names(raw: str, reason: str) -> None:
    """Internal suffixes, single-label hosts and private URL hosts are kept in the building."""
    assert non_public_reason(parse_indicator(raw)) == reason


def test_custom_internal_domains() -> None:
    """Callers can name their own internal suffixes, with or without the leading dot."""
    indicator = parse_indicator("vpn.corp.example.com")
    assert non_public_reason(indicator) is None
    assert non_public_reason(indicator, [".corp.example.com"]) == (
        "internal domain (.corp.example.com)"
    )
    assert non_public_reason(indicator, ["example.com"]) == "internal domain (.example.com)"
    assert non_public_reason(parse_indicator("x.mycorp.com"), [".corp.com"]) is None


def test_hand_built_indicators_are_scoped_safely() -> None:
    """Indicators built elsewhere (a URL without host, a malformed IP) still get a safe answer."""
    url = Indicator(type=T.URL, value="http://10.0.0.1/x")
    assert non_public_reason(url) == "private address (RFC 1918)"
    assert non_public_reason(Indicator(type=T.IPV4, value="not-an-ip")) == "malformed address"
    mapped = Indicator(type=T.IPV6, value="::ffff:a00:1")
    assert non_public_reason(mapped) == "IPv4-mapped private address (RFC 1918)"
    assert non_public_reason(Indicator(type=T.ASN, value="AS64512")) == (
        "private-use AS number (RFC 6996)"
    )


def test_a_lone_symbol_is_not_called_empty() -> None:
    """A value that is only a symbol says it had nothing left once symbols went, not that it
    was empty; a blank value is still "empty input"."""
    from threatintel.errors import InvalidIndicator
    from threatintel.indicators import parse_indicator

    with pytest.raises(InvalidIndicator, match="nothing left once symbols are removed"):
        parse_indicator("☃")
    with pytest.raises(InvalidIndicator, match="empty input"):
        parse_indicator("   ")
