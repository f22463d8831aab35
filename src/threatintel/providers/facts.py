"""The facts a provider class declares beside its wire contract (see ``HttpProvider``).

    windows = (QuotaWindow(Window.per_minute, "virustotal_rate_limit"),)

Kept apart from ``base`` (the HTTP seam): these are plain data the engine, the limiter and the
CLI read through the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from threatintel.quota.base import Window

#: "evidence" sources are weighed for the verdict; "context" ones (who runs the address) only
#: add benign signals.
Role = Literal["evidence", "context"]


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """One window a vendor enforces, and the setting (a Settings field) that holds its limit:
    ``QuotaWindow(Window.per_minute, "virustotal_rate_limit")``. The limit comes from that
    setting when Settings has it, else ``default`` (a provider without settings of its own)."""

    make: Callable[[int], Window]
    setting: str
    default: int = 1

    def window(self, limit: int) -> Window:
        return self.make(limit)

    @property
    def name(self) -> str:
        """The window's name ("minute", "day"...), as the limiter and the store know it."""
        return self.make(1).name


#: Vendor limits learned from the vendor itself, per window name: ``{"minute": 1000}``.
Limits = Mapping[str, int]
#: Told each time an answer states the key's limits (AbuseIPDB's X-RateLimit-Limit header).
LimitsHook = Callable[[str | None, Limits], object]
