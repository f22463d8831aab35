"""Our own API keys are never indicators.

A 64-hex VirusTotal or OTX key pasted into a log looks exactly like a SHA-256: without this
guard it would be extracted, sent to the other sources and written into the report. The engine
passes what it parsed through a KeyGuard before any lookup:

    guard = KeyGuard(settings)
    found, rejected = guard.screen(found, rejected)   # drops key look-alikes, scrubs the rest

A dropped value is reported among the rejected candidates as "matches a configured API key",
named by its variable and fingerprint, never by its value.
"""

from __future__ import annotations

import re

from threatintel._redaction import fingerprint
from threatintel.models import Extraction, Indicator, Rejected
from threatintel.settings import Settings

KEY_REASON = "matches a configured API key"
#: A value this long that is part of a key is a piece of the key (a 64-hex run of an 80-hex
#: AbuseIPDB key): sending it would give most of the key away. Shorter values (a 3-letter domain
#: label, say) can sit inside a key by chance.
MIN_FRAGMENT = 16


class KeyGuard:
    """Finds configured API keys in parsed values and masks them in any text."""

    __slots__ = ("_anchors", "_labels", "_longest", "_pattern")

    def __init__(self, settings: Settings) -> None:
        self._labels: dict[str, str] = {}
        for name in type(settings).model_fields:
            if name.endswith("_api_key"):
                for key in getattr(settings, name):
                    secret = key.get_secret_value()
                    self._labels[secret.casefold()] = f"[{name.upper()} {fingerprint(secret)}]"
        # The servers' own bearer token is as secret as the vendors' keys.
        token = getattr(settings, "threatintel_api_token", None)
        if token is not None and token.get_secret_value():
            secret = token.get_secret_value()
            self._labels[secret.casefold()] = f"[THREATINTEL_API_TOKEN {fingerprint(secret)}]"
        # Longest first, so a key that contains another is masked whole.
        alternatives = sorted(self._labels, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)
            if alternatives
            else None
        )
        # A value holding a key, or a piece of one at either end, holds its first or last
        # MIN_FRAGMENT characters: one search rules most values out before the finer checks.
        ends = {part for key in self._labels for part in (key[:MIN_FRAGMENT], key[-MIN_FRAGMENT:])}
        self._anchors = re.compile("|".join(map(re.escape, sorted(ends))) or "(?!)")
        self._longest = max(map(len, self._labels), default=0)

    def match(self, value: str) -> str | None:
        """The label of the key ``value`` contains or is a piece of, else None.

        A piece counts when ``value`` lies inside a key, or starts with a key's end or ends with
        a key's start (a candidate cut short for display, "…?apikey=28d4665..."), at least
        MIN_FRAGMENT characters long either way.
        """
        folded = value.casefold().removesuffix("...")
        if MIN_FRAGMENT <= len(folded) <= self._longest:
            for key, label in self._labels.items():
                if folded in key:
                    return label
        if not self._anchors.search(folded):
            return None
        for key, label in self._labels.items():
            if key in folded:
                return label
            if _ends_with_start_of(folded, key) or _ends_with_start_of(folded[::-1], key[::-1]):
                return label
        return None

    def scrub(self, text: str) -> str:
        """``text`` with every configured key replaced by its label."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._labels[m.group(0).casefold()], text)

    def screen(
        self, found: dict[Indicator, list[str]], rejected: list[Rejected]
    ) -> tuple[dict[Indicator, list[str]], list[Rejected]]:
        """Drop every indicator that holds a key; mask keys in inputs and rejected candidates."""
        if self._pattern is None:
            return found, rejected
        kept: dict[Indicator, list[str]] = {}
        dropped: list[Rejected] = []
        for indicator, inputs in found.items():
            hidden = self.hidden(indicator.value)
            if hidden is not None:
                dropped.append(hidden)
            else:
                kept[indicator] = [self.scrub(raw) for raw in inputs]
        for item in rejected:
            hidden = self.hidden(item.candidate)
            dropped.append(item if hidden is None else hidden)
        return kept, dropped

    def screen_extraction(self, extraction: Extraction) -> Extraction:
        """What ``extract()`` found, less every indicator that holds a key (now rejected)."""
        found, rejected = self.screen(
            {i: [] for i in extraction.indicators}, list(extraction.rejected)
        )
        return Extraction(indicators=list(found), rejected=rejected)

    def hidden(self, value: str) -> Rejected | None:
        """A Rejected naming the key ``value`` holds (by label, never by value), else None."""
        label = self.match(value)
        if label is None:
            return None
        scrubbed = self.scrub(value)
        # A piece of a key is not scrubbed by scrub(): show the label alone.
        return Rejected(candidate=scrubbed if scrubbed != value else label, reason=KEY_REASON)


def _ends_with_start_of(text: str, key: str) -> bool:
    """Whether ``text`` ends with the first MIN_FRAGMENT or more characters of ``key``."""
    if len(key) < MIN_FRAGMENT:
        return False
    tail = text[-len(key) :]
    # Only where the key's first characters occur can a piece of it start: str.find, not a
    # loop over every length, keeps this cheap on large inputs.
    start = tail.find(key[:MIN_FRAGMENT])
    while start != -1:
        if key.startswith(tail[start:]):
            return True
        start = tail.find(key[:MIN_FRAGMENT], start + 1)
    return False
