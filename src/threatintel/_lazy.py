"""PEP 562 lazy exports for the package ``__init__`` files (issue 9, start-up).

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {"RateLimiter": "limiter", ...})

A package's public names stay importable from the package (``from threatintel.quota import
RateLimiter``), but each submodule loads on the first use of one of its names, not when the
package (or any of its submodules: Python runs the package's ``__init__`` first) is imported.
Python offers the hook (``module.__getattr__``) but no ready-made table for it; the stdlib's
own lazy loader (``importlib.util.LazyLoader``) defers whole modules, not names. Leaf module:
imports nothing of the project (tests/test_lazy_imports.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``where`` is loaded from the
    submodule of ``package`` it maps to, then kept in ``namespace`` so later look-ups skip the
    hook."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
