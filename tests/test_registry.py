"""Each provider owns its vendor facts: the rest of the package reads them from the registry.

Two checks that can fail: no module outside ``providers/`` (and the simulator, which fakes the
four vendors) spells out a list of vendors, and a fifth provider, defined only in this test and
registered in ``PROVIDERS``, is looked up, rate limited, scored and shown like the four, with no
other module changed. It talks to the simulator's AbuseIPDB endpoint over loopback: a real HTTP
source whose answers the toy reads its own way.
"""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from support import sim_settings
from threatintel.engine import Engine
from threatintel.findings import Finding
from threatintel.models import Indicator, IndicatorType, SourceResult, SourceStatus
from threatintel.policy import ScoringPolicy
from threatintel.providers import PROVIDERS, Call, HttpProvider, QuotaWindow
from threatintel.providers.base import Json
from threatintel.quota import DEFAULT, Window
from threatintel.reports import render
from threatintel.simulator import SimulatorServer
from threatintel.wiring import QUOTA_SETTINGS, quota_windows

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "threatintel"
#: Where vendor names may be listed: the providers themselves and the simulator of the four.
ALLOWED = ("providers", "simulator")


def _strings(node: ast.AST) -> list[str]:
    """The string constants a literal list, tuple, set or dict (its keys) is made of."""
    if isinstance(node, ast.Dict):
        items: list[ast.expr | None] = list(node.keys)
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        items = list(node.elts)
    else:
        return []
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]


def vendor_lists(path: Path, root: Path = PACKAGE) -> list[str]:
    """Every literal collection in ``path`` that names two or more registered providers."""
    names = set(PROVIDERS)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        named = {s.partition(":")[0] for s in _strings(node)} & names
        if len(named) >= 2:
            found.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}")
    return found


def test_no_module_outside_the_providers_lists_the_vendors() -> None:
    """Engine, scoring, reports, settings and the CLI hold no tuple or dict of vendor names."""
    modules = [
        path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] not in ALLOWED
    ]
    assert len(modules) > 20  # the scan did find the package
    found = [where for path in modules for where in vendor_lists(path)]
    assert found == []


def test_the_scan_sees_a_vendor_list(tmp_path: Path) -> None:
    """The scan itself flags a table keyed by vendor names (so the test above can fail)."""
    module = tmp_path / "labels.py"
    source = 'ONE = ("virustotal",)\nLABELS = {"virustotal": "VT", "ipinfo:anonymous": "IPinfo"}\n'
    module.write_text(source, encoding="utf-8")
    assert vendor_lists(module, root=tmp_path) == ["labels.py:2"]


def test_quota_settings_come_from_the_provider_classes() -> None:
    """QUOTA_SETTINGS names, per provider, exactly the settings its class declares."""
    for name, cls in PROVIDERS.items():
        declared = {w.name: w.setting.upper() for w in (*cls.anonymous_windows, *cls.windows)}
        assert QUOTA_SETTINGS[name] == declared


# --- a fifth source ---------------------------------------------------------------------------


def toy_evidence(
    indicator: Indicator, result: SourceResult, policy: ScoringPolicy, now: datetime
) -> Finding:
    """The toy's scoring: its reputation number as malice points."""
    finding = Finding(capable=True)
    score = result.reputation or 0
    finding.malice = float(score)
    finding.grade = 3 if score >= 75 else 0
    finding.add(f"Toy Intel rates it {score}/100", float(score))
    return finding


class ToyIntel(HttpProvider):
    """A fifth source: AbuseIPDB's /check answer read as a bare reputation number."""

    name: ClassVar[str] = "toyintel"
    title: ClassVar[str] = "Toy Intel"
    abbrev: ClassVar[str] = "TOY"
    supports: ClassVar[frozenset[IndicatorType]] = frozenset({IndicatorType.IPV4})
    requires_key: ClassVar[bool] = False
    windows: ClassVar[tuple[QuotaWindow, ...]] = (
        QuotaWindow(Window.per_minute, "toyintel_rate_limit", default=2),
    )
    evaluator = toy_evidence

    def request(self, indicator: Indicator, api_key: str | None) -> Call:
        return Call(
            "GET",
            "/check",
            params={"ipAddress": indicator.value},
            headers={"Key": "toy-key", "Accept": "application/json"},
        )

    def parse(self, indicator: Indicator, body: Json) -> SourceResult:
        score = body["data"]["abuseConfidenceScore"]
        return self.result(SourceStatus.OK, indicator, reputation=int(score))


@pytest.fixture
def toy(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> type[HttpProvider]:
    """ToyIntel registered as the registry documents (one dict entry), at the simulator."""
    cls: Any = type("ToyIntelHere", (ToyIntel,), {"default_base_url": sim.base_urls["abuseipdb"]})
    cls.name = ToyIntel.name
    monkeypatch.setitem(PROVIDERS, ToyIntel.name, cls)
    return cls  # type: ignore[no-any-return]


async def test_a_fifth_provider_needs_only_its_class(
    sim: SimulatorServer, toy: type[HttpProvider]
) -> None:
    """A registered fifth provider is asked over HTTP, held to its own quota window, scored by
    its own evaluator and shown under its own names: nothing else was taught about it."""
    settings = sim_settings(sim)
    assert [w.limit for w in quota_windows(settings, "toyintel", keyed=False)] == [2]
    async with Engine(settings) as engine:
        analysis = await engine.analyze(["45.142.212.61", "8.8.8.8", "1.2.3.4"])
        quota = {q.provider: q for q in await engine.quota()}
    answered = [e.sources["toyintel"] for e in analysis.enrichments]
    # Its window holds 2 a minute and the tests' limiter does not wait: the third is refused.
    assert sorted(r.status.value for r in answered) == ["ok", "ok", "rate_limited"]
    toy_calls = [r for r in sim.log.filter(vendor="abuseipdb") if r.key == "toy-key"]
    assert len(toy_calls) == 2
    scored = [e for e in analysis.enrichments if e.sources["toyintel"].status is SourceStatus.OK]
    assert all(any(r.startswith("Toy Intel rates it") for r in e.verdict.reasons) for e in scored)
    (key,) = quota["toyintel"].keys
    assert [(w.window, w.limit, w.source) for w in key.windows] == [("minute", 2, DEFAULT)]
    assert quota["toyintel"].configured
    table = render(analysis, "table")
    assert "TOY" in table
