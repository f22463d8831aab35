"""threatintel: find indicators, ask four threat-intel sources, merge an explainable verdict.

import threatintel
analysis = threatintel.analyze(["hxxp://evil[.]com/x", "8.8.8.8"])     # scripts

async with threatintel.Engine.from_settings() as engine:             # async code
    analysis = await engine.analyze(["8.8.8.8"])
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from threatintel._version import __version__
from threatintel.engine import Engine
from threatintel.errors import (
    ConfigError,
    InvalidIndicator,
    NoIndicators,
    ProviderError,
    RequestError,
    ThreatIntelError,
)
from threatintel.indicators import extract, parse_indicator, refang
from threatintel.models import (
    Analysis,
    Enrichment,
    Indicator,
    IndicatorType,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)
from threatintel.settings import Settings


def analyze(
    values: Iterable[str],
    *,
    providers: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> Analysis:
    """Synchronous one-shot analysis for scripts (runs its own event loop)."""

    async def run() -> Analysis:
        async with Engine.from_settings(settings) as engine:
            return await engine.analyze(values, providers=providers)

    return asyncio.run(run())


__all__ = [
    "Analysis",
    "ConfigError",
    "Engine",
    "Enrichment",
    "Indicator",
    "IndicatorType",
    "InvalidIndicator",
    "NoIndicators",
    "ProviderError",
    "RequestError",
    "Settings",
    "SourceResult",
    "SourceStatus",
    "ThreatIntelError",
    "Verdict",
    "VerdictLabel",
    "__version__",
    "analyze",
    "extract",
    "parse_indicator",
    "refang",
]
