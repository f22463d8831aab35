"""Special-purpose addresses and names, and why each must stay private.

The tables follow the IANA special-purpose address registries and the special-use domain names
registry (RFC 6761 and friends). Order matters: the first range that holds an address names it.
indicators.non_public_reason() is the public face of this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

# Special-use and de-facto internal names are not in the public suffix list but are real names on
# real networks; the parser accepts them as domains so that they are caught here, not dropped.
_RFC6761 = "reserved name (RFC 6761)"
SPECIAL_TLDS = {
    "localhost": "loopback host name (RFC 6761)",
    "test": _RFC6761,
    "example": _RFC6761,
    "invalid": _RFC6761,
    "local": "multicast DNS name (.local, RFC 6762)",
    "internal": "private-use domain (.internal)",
    **{t: f"non-public top-level domain (.{t})" for t in ("lan", "corp", "home", "intranet")},
    "localdomain": "non-public top-level domain (.localdomain)",
}

_PRIVATE = "private address (RFC 1918)"
_DOC4 = "documentation range (RFC 5737)"
_V4_RANGES = [
    (IPv4Network(net), reason)
    for net, reason in [
        ("10.0.0.0/8", _PRIVATE),
        ("172.16.0.0/12", _PRIVATE),
        ("192.168.0.0/16", _PRIVATE),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback address"),
        ("169.254.0.0/16", "link-local address"),
        ("192.0.2.0/24", _DOC4),
        ("198.51.100.0/24", _DOC4),
        ("203.0.113.0/24", _DOC4),
        ("198.18.0.0/15", "benchmarking range (RFC 2544)"),
        ("192.0.0.0/24", "IETF protocol assignment (RFC 6890)"),
        ("0.0.0.0/8", "'this network' range (RFC 1122)"),
        ("224.0.0.0/4", "multicast address"),
        ("255.255.255.255/32", "broadcast address"),
        ("240.0.0.0/4", "reserved address (RFC 1112)"),
    ]
]
_V6_RANGES = [
    (IPv6Network(net), reason)
    for net, reason in [
        ("::1/128", "loopback address"),
        ("fc00::/7", "unique local address (RFC 4193)"),
        ("fe80::/10", "link-local address"),
        ("fec0::/10", "site-local address (deprecated, RFC 3879)"),
        ("ff00::/8", "multicast address"),
        ("2001:db8::/32", "documentation range (RFC 3849)"),
        ("3fff::/20", "documentation range (RFC 9637)"),
        ("2001:2::/48", "benchmarking range (RFC 5180)"),
        ("2001::/23", "IETF protocol assignment (RFC 2928)"),
        ("64:ff9b:1::/48", "local-use NAT64 prefix (RFC 8215)"),
        ("100::/64", "discard-only range (RFC 6666)"),
    ]
]
# The same tables as (first address, netmask, reason) integers, for address_reason: an address
# is tested against every range, and two integer operations cost a tenth of ``ip in net``.
_MASKS = {
    version: [(int(net.network_address), int(net.netmask), reason) for net, reason in ranges]
    for version, ranges in ((4, _V4_RANGES), (6, _V6_RANGES))
}
# IPv6 prefixes that carry an IPv4 address: (prefix, how to name it, bits below the IPv4 part).
_V6_EMBEDDING = [
    (IPv6Network("::ffff:0:0/96"), "IPv4-mapped", 0),
    (IPv6Network("64:ff9b::/96"), "NAT64", 0),
    (IPv6Network("2002::/16"), "6to4", 80),
]
_GLOBAL_UNICAST = IPv6Network("2000::/3")


def host_reason(host: str, internal_domains: Sequence[str]) -> str | None:
    """Why a host name is internal: a listed suffix, a single label, a special-use name."""
    name = host.lower().rstrip(".")
    for suffix in internal_domains:
        bare = suffix.lower().strip(".")
        if bare and (name == bare or name.endswith("." + bare)):
            return f"internal domain (.{bare})"
    if "." not in name:
        return SPECIAL_TLDS["localhost"] if name == "localhost" else "single-label host name"
    if name.endswith(".home.arpa"):
        return "home network name (.home.arpa, RFC 8375)"
    return SPECIAL_TLDS.get(name.rpartition(".")[2])


def _embedded_v4(ip: IPv6Address | IPv6Network) -> tuple[str, IPv4Network] | None:
    """The IPv4 space inside a mapped, NAT64 or 6to4 address or network, with its label."""
    net = IPv6Network(ip) if isinstance(ip, IPv6Address) else ip
    for outer, label, shift in _V6_EMBEDDING:
        if net.subnet_of(outer):
            base = (int(net.network_address) >> shift) & 0xFFFFFFFF
            bits = min(32, max(0, net.prefixlen - (96 - shift)))
            return label, IPv4Network((base, bits), strict=False)
    return None


def address_reason(ip: IPv4Address | IPv6Address) -> str | None:
    """The special-purpose range an address falls in, looking through IPv4 embedded in IPv6."""
    if isinstance(ip, IPv6Address) and (inner := _embedded_v4(ip)) is not None:
        reason = address_reason(inner[1].network_address)
        return f"{inner[0]} {reason}" if reason else None
    if ip.is_unspecified:
        return "unspecified address"
    number = int(ip)
    for first, mask, reason in _MASKS[ip.version]:
        if number & mask == first:
            return reason
    if isinstance(ip, IPv6Address) and ip not in _GLOBAL_UNICAST:
        return "reserved address (outside global unicast 2000::/3)"
    if not ip.is_global:
        return "not globally routable (special-purpose range)"
    return None


def network_reason(net: IPv4Network | IPv6Network) -> str | None:
    """The special-purpose range a network lies in, or the first one it overlaps."""
    if isinstance(net, IPv6Network) and (inner := _embedded_v4(net)) is not None:
        reason = network_reason(inner[1])
        return f"{inner[0]} {reason}" if reason else None
    if net.num_addresses == 1:
        return address_reason(net.network_address)
    ranges: Sequence[tuple[IPv4Network | IPv6Network, str]] = (
        _V4_RANGES if net.version == 4 else _V6_RANGES
    )
    for candidate, reason in ranges:
        if net.network_address in candidate and net.broadcast_address in candidate:
            return reason
    for candidate, reason in ranges:
        # Two prefixes overlap exactly when one holds the other's first address.
        if net.network_address in candidate or candidate.network_address in net:
            return f"includes non-public space: {reason}"
    if isinstance(net, IPv6Network) and not net.subnet_of(_GLOBAL_UNICAST):
        return "includes reserved space outside global unicast 2000::/3"
    return None


def asn_reason(number: int) -> str | None:
    """Private-use, documentation and reserved AS numbers (RFC 6996, RFC 5398, RFC 7300)."""
    if 64512 <= number <= 65534 or 4200000000 <= number <= 4294967294:
        return "private-use AS number (RFC 6996)"
    if 64496 <= number <= 64511 or 65536 <= number <= 65551:
        return "documentation AS number (RFC 5398)"
    if number in (0, 23456, 65535, 4294967295) or 65552 <= number <= 131071:
        return "reserved AS number"
    return None
