"""The top-level API is small, sorted and stable."""

from __future__ import annotations

import threatintel

EXPECTED = {
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
}


def test_all_is_sorted_and_pinned() -> None:
    """__all__ lists exactly the fundamentals, sorted, and each name exists."""
    assert threatintel.__all__ == sorted(threatintel.__all__)
    assert set(threatintel.__all__) == EXPECTED
    for name in threatintel.__all__:
        assert hasattr(threatintel, name), name


def test_engine_knows_nothing_of_the_doors() -> None:
    """engine.py imports no CLI, MCP or HTTP-server module (dependencies point one way)."""
    import ast
    import inspect

    import threatintel.engine

    tree = ast.parse(inspect.getsource(threatintel.engine))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    banned_roots = {"typer", "rich", "fastmcp", "mcp", "starlette", "uvicorn", "click"}
    assert not roots & banned_roots, roots & banned_roots
    assert not {n for n in imported if n.startswith(("threatintel.cli", "threatintel.http"))}
