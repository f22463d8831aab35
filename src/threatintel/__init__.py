"""threatintel: find indicators, ask four threat-intel sources, merge an explainable verdict.

import threatintel
analysis = threatintel.analyze(["hxxp://evil[.]com/x", "8.8.8.8"])     # scripts

async with threatintel.Engine.from_settings() as engine:             # async code
    analysis = await engine.analyze(["8.8.8.8"])
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from threatintel._version import __version__

if TYPE_CHECKING:
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

#: Where each public name lives. Loaded on first use (PEP 562), not at `import threatintel`:
#: every submodule import runs this file first, and eager imports here made `threatintel
#: version` and `--help` load the engine, httpx and the pydantic models (issue 9, start-up).
_LAZY = {
    "Engine": "threatintel.engine",
    **dict.fromkeys(
        [
            "ConfigError",
            "InvalidIndicator",
            "NoIndicators",
            "ProviderError",
            "RequestError",
            "ThreatIntelError",
        ],
        "threatintel.errors",
    ),
    **dict.fromkeys(["extract", "parse_indicator", "refang"], "threatintel.indicators"),
    **dict.fromkeys(
        [
            "Analysis",
            "Enrichment",
            "Indicator",
            "IndicatorType",
            "SourceResult",
            "SourceStatus",
            "Verdict",
            "VerdictLabel",
        ],
        "threatintel.models",
    ),
    "Settings": "threatintel.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'threatintel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def analyze(
    values: Iterable[str],
    *,
    providers: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> Analysis:
    """Synchronous one-shot analysis for scripts (runs its own event loop)."""
    import asyncio  # here, not at import: see _LAZY

    from threatintel.engine import Engine

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
