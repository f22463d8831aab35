"""Upstream values made typed and bounded, for the providers' parse functions: timestamps,
integers, AS numbers, country codes, short strings, and lists capped at MAX_LIST with what was
dropped counted (``Kept``). Upstream bodies are attacker-influenced: everything here is linear
in its input and returns None (or an empty list) for anything unexpected.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MAX_ASN",
    "MAX_LIST",
    "Kept",
    "as_asn",
    "as_country",
    "as_int",
    "as_str",
    "from_iso",
    "from_unix",
    "str_list",
]

#: How many entries of one list a result keeps (engines, families, pulses' tags...). The
#: rest is counted in ``SourceResult.truncated``: a hostile answer with 40,000 entries must
#: neither slow every later step nor fill the report.
MAX_LIST = 50


def from_unix(value: Any) -> datetime | None:
    """VirusTotal's integer Unix seconds → aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def from_iso(value: Any) -> datetime | None:
    """ISO-8601 → aware UTC datetime; OTX's naive strings are UTC (contracts §2.5.8)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


MAX_ASN = 2**32 - 1


def as_asn(value: Any) -> int | None:
    """An AS number (an int, or ASCII digits with or without "AS") in 0..2³²-1, else None."""
    if isinstance(value, str):
        digits = value[2:] if value[:2].upper() == "AS" else value
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 10 else None
    number = as_int(value)
    return number if number is not None and 0 <= number <= MAX_ASN else None


def as_country(value: Any) -> str | None:
    """An ISO 3166-1 alpha-2 code ("US"), else None: nothing else is shown as a country."""
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


def as_str(value: Any, *, limit: int = 200) -> str | None:
    """A short, single-line string from an upstream value (attacker-influenced text)."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Kept:
    """The lists one parse keeps, each capped at MAX_LIST, with what was dropped counted.

    Deduplication is by set, so a hostile list of 40,000 entries costs linear time::

        kept = Kept()
        engines = kept.unique("flagged_by", names)      # at most MAX_LIST, first seen first
        result = provider.result(..., truncated=kept.dropped)
    """

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}

    def unique(
        self, field: str, values: Iterable[str | None], *, limit: int = MAX_LIST
    ) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        extra = 0
        for value in values:
            if not value or value in seen:
                continue
            seen.add(value)
            if len(out) < limit:
                out.append(value)
            else:
                extra += 1
        if extra:
            self.dropped[field] = self.dropped.get(field, 0) + extra
        return out

    def strings(self, field: str, values: Any, *, limit: int = MAX_LIST) -> list[str]:
        """Unique short strings from an upstream list; anything not a string is skipped."""
        if not isinstance(values, list):
            return []
        return self.unique(field, (as_str(value) for value in values), limit=limit)


def str_list(values: Any, *, limit: int = MAX_LIST) -> list[str]:
    """Unique short strings from a list, in order; anything that is not a string is skipped."""
    return Kept().strings("", values, limit=limit)
