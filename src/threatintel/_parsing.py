"""Classify one candidate as an indicator: the rules behind ``parse_indicator`` and the text
scanner of ``indicators.extract`` (names, addresses, URLs, trimming). Pure parsing: no I/O.

The public face is ``threatintel.indicators``, which re-exports what callers use; the free-text
rules and the linear-time guarantee are described there.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import idna
from publicsuffixlist import PublicSuffixList

from threatintel._defang import clean_pasted, refang
from threatintel._special import (
    SPECIAL_TLDS,
)
from threatintel._visible import percent_encode_hidden
from threatintel.errors import InvalidIndicator
from threatintel.models import Indicator, IndicatorType

DEFAULT_INTERNAL_DOMAINS: tuple[str, ...] = (".local", ".internal", ".lan", ".home.arpa")

MAX_URL_LENGTH = 2048
MAX_DOMAIN_LENGTH = 253
_SHOWN = 100  # a rejected candidate is echoed back at most this long

_T = IndicatorType
_HASHES = {32: _T.MD5, 40: _T.SHA1, 64: _T.SHA256}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ftps": 990}

# --- names ---------------------------------------------------------------------------------


@functools.cache
def _psl() -> PublicSuffixList:
    # The package ships its own copy of the list: nothing is downloaded here.
    return PublicSuffixList(accept_unknown=False)


@functools.cache
def _icann_psl() -> PublicSuffixList:
    return PublicSuffixList(accept_unknown=False, only_icann=True)


_FILE_EXTENSION_LIST = (
    "exe dll sys scr bat cmd ps1 psm1 vbs vbe js jse wsf wsh hta msi msp lnk cpl ocx jar apk ipa "
    "dmg pkg iso img vhd vhdx bin elf so dylib ko doc docx docm xls xlsx xlsm xlsb ppt pptx pptm "
    "rtf pdf odt ods odp one txt csv tsv log json xml yaml yml toml ini cfg conf md rst html htm "
    "xhtml mht php asp aspx jsp cgi css png jpg jpeg gif bmp svg ico tif tiff webp mp3 mp4 wav "
    "avi mkv mov wmv flv zip rar 7z gz tgz bz2 xz tar cab zst py pyc sh bash c h cpp cs go rs "
    "java class rb lua eml msg pst ost vcf ics tmp bak dat db sqlite sql dmp pcap pcapng evtx "
    "lock gpg pem key crt cer der pfx p12 ova vmdk deb rpm ts tsx jsx kt swift"
)
_FILE_EXTENSIONS = frozenset(_FILE_EXTENSION_LIST.split())
_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}")
_FILE_NAME = "looks like a file name, not a domain"

_Host = tuple[str, str | None]  # normalised host name, registrable domain


def _known_tld(tld: str) -> bool:
    return tld in SPECIAL_TLDS or _psl().is_public(tld)


def _host_name(raw: str, mode: _Mode, *, in_url: bool = False) -> _Host | str | None:
    """Normalise a host name (lower case, IDNA, no trailing dot) and check its suffix."""
    host = raw.lower().rstrip(".")
    tld = host.rpartition(".")[2]
    if not host:
        return mode.soft("empty host name")
    if tld in _FILE_EXTENSIONS and not mode.explicit:
        # .zip, .mov, .py ... are real TLDs, but in prose "setup.zip" is nearly always a file.
        return _FILE_NAME
    loud = mode.explicit or _known_tld(tld)
    if len(host) > MAX_DOMAIN_LENGTH:
        return "domain name longer than 253 characters" if loud else None
    if "_" in host and not mode.explicit:
        return None  # identifiers in pasted code, not host names
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return "not a valid internationalised domain name (IDNA)" if loud else None
        tld = host.rpartition(".")[2]
    labels = host.split(".")
    if len(labels) == 1 and not in_url:
        return mode.soft("a single word, not a domain name")
    if tld.isdigit():
        return mode.soft("ends in a number, so not a domain name (a version number?)")
    for label in labels:
        if not _LABEL_RE.fullmatch(label) or label[0] == "-" or label[-1] == "-":
            return "not a valid host name" if loud else None
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError, ValueError):
                return "invalid punycode label in domain name" if loud else None
    if len(host) > MAX_DOMAIN_LENGTH:
        return "domain name longer than 253 characters"
    if len(labels) == 1:
        return host, None  # a single-label URL host such as http://intranet/
    if _psl().publicsuffix(host) is None:
        if tld in SPECIAL_TLDS:
            return host, None
        if tld in _FILE_EXTENSIONS:
            return _FILE_NAME
        return mode.hinted(f"unknown top-level domain (.{tld})")
    registrable = _psl().privatesuffix(host) or _icann_psl().privatesuffix(host)
    if registrable is None:
        return mode.soft("a public suffix, not a domain name")
    return host, registrable


def registrable_domain(host: str) -> str | None:
    """The registrable part of a host name per the public suffix list, or None."""
    named = _host_name(host.strip(), _EXPLICIT)
    return named[1] if isinstance(named, tuple) else None


# --- classification ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mode:
    """How a candidate was met, which decides whether a failure is worth reporting."""

    explicit: bool  # given on purpose (parse_indicator, a URL): every failure has a reason
    defanged: bool = False  # free text that someone defanged: they meant it as an indicator

    def soft(self, reason: str) -> str | None:
        return reason if self.explicit else None

    def hinted(self, reason: str) -> str | None:
        return reason if self.explicit or self.defanged else None


_EXPLICIT = _Mode(explicit=True)
_TEXT = _Mode(explicit=False)
_DEFANGED_TEXT = _Mode(explicit=False, defanged=True)

# Free text is held to a higher bar than a value given on purpose: in binary noise, logs and code,
# "c::1", "AS2" and "f.su" turn up by chance, so short forms need more evidence there.
_TEXT_V6_MIN_GROUPS = 3  # "2001:db8::1"; fewer only with an embedded IPv4 ("::ffff:1.2.3.4")
_TEXT_V6_NET_MIN_GROUPS = 2  # "2001:db8::/32": the prefix length is structure of its own
_TEXT_ASN_MIN_DIGITS = 2  # AS1..AS9 exist, but in text "AS2" is far more often something else
_TEXT_SHORT_LABEL = 3  # a registrable label shorter than this ("t.co", "fb.me") needs context

# A result is an Indicator, a reason to report, or None for "not an indicator attempt".
_Result = Indicator | str | None

_HEX_RE = re.compile(r"[0-9a-f]+")
_V6_RE = re.compile(r"[0-9a-fA-F:.]+")
_V6_CIDR_RE = re.compile(r"[0-9a-fA-F:./]+")
_CVE_RE = re.compile(r"cve-([0-9]{4})-([0-9]{4,7})")
_ASN_RE = re.compile(r"asn?([0-9]{1,10})")
_LOCAL_RE = re.compile(r"[A-Za-z0-9._%+-]{1,64}")
_AUTHORITY_END = re.compile(r"[/?#\\]")


def _classify(s: str, mode: _Mode) -> _Result:
    """Classify one refanged, trimmed candidate without whitespace."""
    if "://" in s:
        return _url(s, mode)
    if "@" in s:
        return _email(s, mode)
    if ":" in s:
        return _colon(s, mode)
    if "/" in s:
        return _slash(s, mode)
    if "." in s:
        if _dotted_numbers(s):
            return _ipv4(s, mode)
        named = _host_name(s, mode)
        if isinstance(named, tuple):
            return Indicator(type=_T.DOMAIN, value=named[0], registrable_domain=named[1])
        return named
    return _word(s, mode)


def _dotted_numbers(s: str) -> bool:
    return "." in s and s.isascii() and s.replace(".", "").isdigit()


def _ipv4(s: str, mode: _Mode) -> _Result:
    parts = s.split(".")
    if len(parts) != 4 or not all(0 < len(p) <= 3 for p in parts):
        return mode.soft("dotted numbers, but not an IPv4 address (a version number?)")
    try:
        return Indicator(type=_T.IPV4, value=str(IPv4Address(s)))
    except ValueError:
        return "not a valid IPv4 address"


def _ipv6(s: str) -> IPv6Address | None:
    try:
        # A zone id (fe80::1%eth0) names an interface on the host that wrote it: drop it.
        return IPv6Address(s.partition("%")[0])
    except ValueError:
        return None


def _address6(ip: IPv6Address) -> Indicator:
    # Vendors index an IPv4-mapped address (::ffff:8.8.8.8) under its IPv4 form only.
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return Indicator(type=_T.IPV4, value=str(mapped))
    return Indicator(type=_T.IPV6, value=str(ip))


def _v6_in_text(addr: str, network: bool) -> bool:
    """Whether an IPv6 spelling has enough structure to be taken from free text."""
    if "." in addr:
        return True  # an embedded dotted IPv4 is structure noise rarely has
    core = addr.partition("%")[0]
    groups = [group for group in core.split(":") if group]
    if len(groups) >= (_TEXT_V6_NET_MIN_GROUPS if network else _TEXT_V6_MIN_GROUPS):
        return True
    if core == "::1":
        return True  # the loopback address, written on purpose wherever it appears
    # fe80::1, fd00::1, ff02::1, 2001::1, fe80::/10: a full first group that is not a word.
    # Code and hex dumps give "a::b", "c::" and "dead::beef", which this shape leaves out.
    first = groups[0] if groups and core.startswith(groups[0] + "::") else ""
    if len(first) != 4 or first.isalpha():
        return False
    return len(groups) == (1 if network else 2)


def _colon(s: str, mode: _Mode) -> _Result:
    addr, slash, prefix = s.partition("/")
    if _V6_RE.fullmatch(addr.partition("%")[0]) and addr.count(":") >= 2:
        ip = _ipv6(addr)
        if ip is None:
            return mode.soft("not a valid IPv6 address")
        if not mode.explicit and not _v6_in_text(addr, bool(slash)):
            return None  # "::b", "c::", "a::b": too little to tell from noise or code
        if not slash:
            return _address6(ip)
        return _cidr(ip, prefix, 128, mode)
    host, _, port = s.rpartition(":")
    if host and not slash and port.isascii() and port.isdigit() and len(port) <= 5:
        if int(port) > 65535:
            return "invalid port"
        if host[0] == "[" and host[-1] == "]" and (ip := _ipv6(host[1:-1])) is not None:
            return _address6(ip)
        found = _classify(host, mode) if ":" not in host else None
        if not isinstance(found, Indicator) or found.type in (_T.IPV4, _T.DOMAIN):
            return found
    return mode.soft("not a recognised indicator")


def _cidr(ip: IPv4Address | IPv6Address, prefix: str, bits: int, mode: _Mode) -> _Result:
    if not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 3 and int(prefix) <= bits):
        return f"invalid CIDR prefix length (/{prefix[:5]})"
    # Host bits are dropped (10.0.0.5/8 → 10.0.0.0/8): the indicator is the network.
    network = ipaddress.ip_network(f"{ip}/{int(prefix)}", strict=False)
    return Indicator(type=_T.CIDR, value=str(network))


def _slash(s: str, mode: _Mode) -> _Result:
    addr, _, prefix = s.partition("/")
    if _dotted_numbers(addr) and prefix and "/" not in prefix:
        found = _ipv4(addr, mode)
        if not isinstance(found, Indicator):
            return found
        return _cidr(IPv4Address(found.value), prefix, 32, mode)
    if mode.explicit and isinstance(_classify(addr, mode), Indicator):
        return "a path without a scheme: add http:// for a URL, or give just the host"
    return mode.soft("not a recognised indicator")


def _word(s: str, mode: _Mode) -> _Result:
    low = s.lower()
    if not low.isascii():
        return mode.soft("not a recognised indicator")
    if _HEX_RE.fullmatch(low):
        n = len(low)
        if low.isdigit() and not (mode.explicit and n in _HASHES):
            # Decimal numbers are hex too; in prose a 32-digit number is not an MD5.
            return mode.soft("a plain number; write an autonomous system as AS15169")
        if n in _HASHES:
            return Indicator(type=_HASHES[n], value=low)
        if n == 128:
            return "hex string of length 128 (SHA-512?); only MD5, SHA-1 and SHA-256 are used"
        if mode.explicit or (24 <= n < 128 and not low.isalpha()):
            return f"hex string of unexpected length ({n}); not a hash"
        return None
    if low.startswith("cve-"):
        m = _CVE_RE.match(low)
        # In prose a CVE id may run into a suffix (CVE-2021-44228-poc); given alone it may not.
        if m and (m.end() == len(low) or (not mode.explicit and not low[m.end()].isalnum())):
            return Indicator(type=_T.CVE, value=f"CVE-{m[1]}-{m[2]}")
        return "malformed CVE identifier (expected CVE-YYYY-NNNN)"
    m = _ASN_RE.fullmatch(low)
    if m:
        if not mode.explicit and (len(m[1]) < _TEXT_ASN_MIN_DIGITS or m[1][0] == "0"):
            return None  # nobody writes AS02 for AS2: leading zeros are noise, not a spelling
        number = int(m[1])
        if number > 0xFFFFFFFF:
            return "AS number out of range"
        return Indicator(type=_T.ASN, value=f"AS{number}")
    return mode.soft("not a recognised indicator")


def _email(s: str, mode: _Mode) -> _Result:
    local, _, domain = s.rpartition("@")
    if (
        not _LOCAL_RE.fullmatch(local)
        or local[0] == "."
        or local[-1] == "."
        or ".." in local
        or "." not in domain
    ):
        return mode.soft("not a valid email address")
    named = _host_name(domain, mode)
    if isinstance(named, tuple):
        # Local parts are case-sensitive on paper but not in practice; one spelling dedupes.
        return Indicator(type=_T.EMAIL, value=f"{local.lower()}@{named[0]}")
    return None if named is None else f"email address with a bad domain: {named}"


def _url(s: str, mode: _Mode) -> _Result:
    scheme, _, rest = s.partition("://")
    scheme = scheme.lower()
    # A doubled scheme ("http://http://evil.com", "hxxp://[http://...") is one URL, not a host
    # named "http": keep the last scheme.
    start = 0
    while (sep := rest.find("://", start, start + 8)) != -1 and rest[start:sep].lower() in (
        _DEFAULT_PORTS
    ):
        scheme, start = rest[start:sep].lower(), sep + 3
    rest = rest[start:]
    if scheme not in _DEFAULT_PORTS:
        return mode.soft(f"unsupported URL scheme ({scheme[:12]}); use http, https or ftp")
    if len(s) > MAX_URL_LENGTH:
        return "URL longer than 2,048 characters"
    stop = _AUTHORITY_END.search(rest)
    cut = stop.start() if stop else len(rest)
    # A backslash ends the authority as it does in browsers, so http://evil.com\@good.com is
    # evil.com. Credentials are dropped: they are secrets we must not forward or log, and the
    # host after the last "@" is the one a browser connects to.
    hostport, tail = rest[:cut].rpartition("@")[2], rest[cut:]
    registrable: str | None = None
    if hostport.startswith("["):
        inner, bracket, port = hostport[1:].partition("]")
        ip6 = _ipv6(inner) if bracket else None
        if ip6 is None or (port and port[0] != ":"):
            return "not a valid IPv6 address in the URL host"
        host, shown, port = str(ip6), f"[{ip6}]", port[1:]
    else:
        name, _, port = hostport.partition(":")
        if not name:
            return "URL has no host"
        if ":" in port:
            return "an IPv6 URL host must be in brackets"
        if name.isascii() and name.isdigit():
            return "numeric URL host (an obfuscated IPv4 address?)"
        if _dotted_numbers(name):
            found = _ipv4(name, _EXPLICIT)
            if not isinstance(found, Indicator):
                return f"{found} in the URL host"
            host = found.value
        else:
            if name.lower() in _DEFAULT_PORTS:
                return "URL host is a scheme name (a doubled or broken scheme?)"
            named = _host_name(name, _EXPLICIT, in_url=True)
            if not isinstance(named, tuple):
                return named or "not a valid host name"
            host, registrable = named
        shown = host
    if port:
        if not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
            return "invalid port in URL"
        port = "" if int(port) == _DEFAULT_PORTS[scheme] else f":{int(port)}"
    if not tail or tail[0] in "?#":
        tail = "/" + tail
    # Free text keeps control characters inside a run, and a path holding ESC c or backspaces
    # would clear the terminal or overwrite the host it shows: kept only percent-encoded, as
    # RFC 3986 wants them anyway (a request sends the same bytes).
    tail = percent_encode_hidden(tail)
    value = f"{scheme}://{shown}{port}{tail}"
    trimmed = _trim_end(value)
    if trimmed != value:
        # Dropping the userinfo can unbalance brackets; trim again so the value is a fixed point.
        return _url(trimmed, mode)
    return Indicator(type=_T.URL, value=value, host=host, registrable_domain=registrable)


# --- trimming ------------------------------------------------------------------------------

_TRAILING = ".,;:!?'\"*"  # "*" too: Markdown bold (**http://evil.com/x**) ends a URL
_OPENER = {")": "(", "]": "[", "}": "{", ">": "<"}


def _trim_end(s: str) -> str:
    """Drop trailing punctuation and closing brackets that were never opened, in one pass."""
    if not s or (s[-1] not in _TRAILING and s[-1] not in _OPENER):
        return s
    excess = {c: s.count(c) - s.count(o) for c, o in _OPENER.items()}
    end = len(s)
    while end:
        ch = s[end - 1]
        if ch == ":" and end >= 2 and s[end - 2] == ":":
            break  # an IPv6 address may end in "::"
        if ch in _TRAILING:
            end -= 1
        elif excess.get(ch, 0) > 0:
            excess[ch] -= 1
            end -= 1
        else:
            break
    return s[:end]


def _trim_given(s: str) -> str:
    s = s.strip().lstrip("'\"<({")
    if s.startswith("[") and "]:" not in s:
        s = s[1:]  # "[2001:db8::1]:443" keeps its bracket, "[evil.com]" loses it
    if s[:7].lower() == "mailto:":
        s = s[7:]
    s = _trim_end(s).strip()
    return s if "://" in s else s.rstrip("/")  # "evil.com/" is the host, not a path


# --- public entry points -------------------------------------------------------------------


def parse_indicator(raw: str) -> Indicator:
    """Classify and normalise one value given on purpose; raise InvalidIndicator if we can't."""
    text = clean_pasted(raw).strip()
    if not text:
        # "☃" or "•" alone is not empty input: what pasting cleans away was all there was.
        reason = "empty input" if not raw.strip() else "nothing left once symbols are removed"
        raise InvalidIndicator(raw, reason)
    if len(text) > 2 * MAX_URL_LENGTH:
        raise InvalidIndicator(raw, "too long to be an indicator")
    text = _trim_given(refang(text))
    if not text:
        raise InvalidIndicator(raw, "nothing left after removing punctuation")
    # Every whitespace character but " " is unprintable: one pass in C, not one call per char.
    if not text.isprintable() or " " in text:
        raise InvalidIndicator(raw, "contains whitespace or control characters")
    found = _classify(text, _EXPLICIT)
    if isinstance(found, Indicator):
        return found
    raise InvalidIndicator(raw, found or "not a recognised indicator")
