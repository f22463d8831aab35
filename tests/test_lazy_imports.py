"""Start-up stays light: `threatintel version`, `--version` and `--help` load neither the engine
nor the models, httpx, asyncio, rich, the report renderers, the simulator or Redis, and one
`analyze` loads only what it uses (issue 9). Behaviour, not timing: each run is a real process
whose loaded modules are listed when it exits; bench/bench_startup.py has the times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support import sim_env
from threatintel.simulator import SimulatorServer

#: Runs the CLI's entry point with the given arguments, then writes the loaded modules to argv[1]
#: (not the None entries, which mark a module as one that cannot be imported).
PROBE = """
import atexit, json, sys
out = sys.argv[1]
def dump():
    loaded = sorted(name for name, module in sys.modules.items() if module is not None)
    open(out, "w").write(json.dumps(loaded))
atexit.register(dump)
sys.argv = ["threatintel", *sys.argv[2:]]
from threatintel.cli import main
main()
"""

#: Libraries that only reports, Redis or the simulator use: no lookup or start-up loads them.
LIBRARIES_OF_OTHER_COMMANDS = ("stix2", "jinja2", "redis", "starlette", "uvicorn")
#: Modules that only some commands need: none of them may load to print a version or help.
HEAVY = (
    "threatintel.engine",
    "threatintel.settings",
    "threatintel.models",
    "threatintel.providers",
    "threatintel.quota.limiter",
    "threatintel.quota.sqlite",
    "threatintel.reports",
    "threatintel.attribution",
    "threatintel.simulator",
    "httpx",
    "asyncio",
    "rich",
    *LIBRARIES_OF_OTHER_COMMANDS,
)
#: Loaded by Typer itself, not by us, when it reads the value of an option that is not a flag:
#: the root's --env-file, for every subcommand (Typer builds a pydantic TypeAdapter for it even
#: when the option is absent). --help and --version exit before that.
TYPER_OWN = ("pydantic",)


def loaded_by(
    tmp_path: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> set[str]:
    """The modules loaded by one `threatintel ARGS` process, run in an empty directory."""
    listing = tmp_path / "modules.json"
    if env is not None:  # on top of ours, without a REDIS_URL that would add the Redis client
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | env
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(listing), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(listing.read_text()))


def python_json(code: str, *args: str) -> Any:
    """What ``python -c CODE ARGS`` prints as JSON, run in a fresh process."""
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


#: Appended to a probe: prints the modules it loaded.
PRINT_LOADED = "; print(json.dumps(sorted(m for m, v in sys.modules.items() if v)))"


def top_level(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (modules or packages) are among ``loaded`` or have a submodule there."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in loaded))


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["-h"]])
def test_version_and_help_load_no_heavy_module(tmp_path: Path, args: list[str]) -> None:
    """--version and the help load no engine, models, providers, httpx, rich, renderer or Redis."""
    loaded = loaded_by(tmp_path, *args)
    assert "threatintel.cli" in loaded  # the probe did run the CLI
    assert top_level(loaded, (*HEAVY, *TYPER_OWN)) == []


@pytest.mark.parametrize("args", [["version"], ["analyze", "--help"]])
def test_subcommand_loads_only_what_typer_itself_needs(tmp_path: Path, args: list[str]) -> None:
    """`threatintel version` and a command's help load nothing heavy; pydantic only via Typer."""
    loaded = loaded_by(tmp_path, *args)
    assert "threatintel.cli" in loaded
    assert top_level(loaded, HEAVY) == []
    assert "typer._adapters" in loaded or "pydantic" not in loaded  # if pydantic, then by Typer


def test_one_lookup_loads_only_its_renderer(tmp_path: Path, sim: SimulatorServer) -> None:
    """One `analyze --format json` loads the engine and the JSON renderer, and no other
    renderer, nor httpx's command-line client, aiohttp, stix2, jinja2, the simulator or a
    Redis client."""
    env = sim_env(sim, CACHE_BACKEND="memory", HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path))
    loaded = loaded_by(tmp_path, "analyze", "45.20.1.9", "--format", "json", env=env)
    assert {"threatintel.engine", "threatintel.reports.jsondoc", "httpx"} <= loaded
    unused = (
        "threatintel.reports.text",  # the table, and rich's layout with it
        "threatintel.reports.audience",
        "threatintel.reports.html",
        "threatintel.reports.markdown",
        "threatintel.reports.misp",
        "threatintel.reports.stix",
        "threatintel.reports.tabular",
        "threatintel.simulator",
        "threatintel.quota.redis",
        "httpx._main",  # httpx's own command-line client, with click and pygments
        "click",
        "pygments",
        "aiohttp",  # a handful of lookups goes through httpx's own transport (SMALL_RUN)
        *LIBRARIES_OF_OTHER_COMMANDS,
    )
    assert top_level(loaded, unused) == []


def test_more_lookups_than_a_handful_load_aiohttp(tmp_path: Path, sim: SimulatorServer) -> None:
    """`analyze` given more than SMALL_RUN indicators goes through aiohttp's pool."""
    from threatintel.wiring import SMALL_RUN

    env = sim_env(sim, CACHE_BACKEND="memory", HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path))
    values = [f"45.20.1.{n}" for n in range(1, SMALL_RUN + 2)]
    loaded = loaded_by(tmp_path, "analyze", *values, "--format", "json", env=env)
    assert "aiohttp" in loaded


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_reports_load_no_rich(fmt: str) -> None:
    """Rendering JSON or JSON Lines loads neither rich nor the table and its audience rules."""
    probe = (
        "import json, sys; from threatintel.models import Analysis; "
        "from threatintel.reports import render; text = render(Analysis(), sys.argv[1])"
    )
    loaded = set(python_json(probe + PRINT_LOADED, fmt))
    assert "threatintel.reports.jsondoc" in loaded
    unused = ("rich", "threatintel.reports.text", "threatintel.reports.audience")
    assert top_level(loaded, unused) == []


def test_errors_load_no_models() -> None:
    """Importing the exception tree loads neither the result models nor pydantic."""
    loaded = set(python_json("import json, sys, threatintel.errors" + PRINT_LOADED))
    assert top_level(loaded, ("threatintel.models", "pydantic")) == []


def test_every_provider_error_names_a_real_status() -> None:
    """Each ProviderError class reports a SourceStatus member, on the class and on an instance."""
    from threatintel import errors
    from threatintel.models import SourceStatus

    classes = [errors.ProviderError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    assert len(classes) >= 9
    for cls in classes:
        assert isinstance(cls.status, SourceStatus), cls
    assert errors.QuotaExhausted("otx", "spent").status is SourceStatus.QUOTA_EXHAUSTED
    assert errors.CircuitOpen("otx", "open").status is SourceStatus.CIRCUIT_OPEN
    assert errors.BadRequest("otx", "no").status is SourceStatus.ERROR


@pytest.mark.parametrize("package", ["threatintel.quota", "threatintel.cache"])
def test_package_loads_its_modules_on_first_use(package: str) -> None:
    """Importing a store package loads none of its backends; each public name still resolves."""
    probe = (
        "import importlib, json, sys; p = importlib.import_module(sys.argv[1]); "
        "before = sorted(m for m in sys.modules if m.startswith(sys.argv[1] + '.')); "
        "missing = [n for n in p.__all__ if getattr(p, n, None) is None]; "
        "print(json.dumps([before, missing, sorted(set(p.__all__) - set(dir(p)))]))"
    )
    before, missing, undisclosed = python_json(probe, package)
    assert before == [] and missing == [] and undisclosed == []


def test_a_command_loads_what_it_uses(tmp_path: Path) -> None:
    """`extract` loads the settings and parser it needs, but no engine, simulator or Redis."""
    loaded = loaded_by(tmp_path, "extract", "-", stdin="seen 8.8.8.8 today\n")
    assert {"threatintel.settings", "threatintel.indicators"} <= loaded
    # The settings' scoring reads the provider registry, and the providers import httpx.
    unused = (
        "threatintel.engine",
        "threatintel.simulator",
        *LIBRARIES_OF_OTHER_COMMANDS,
    )
    assert top_level(loaded, unused) == []


def test_public_names_still_resolve_from_the_package() -> None:
    """`import threatintel` stays light, yet every public name resolves on first use."""
    probe = (
        "import json, sys, threatintel; before = 'threatintel.engine' in sys.modules; "
        "names = [n for n in threatintel.__all__ if getattr(threatintel, n, None) is None]; "
        "print(json.dumps([before, names, threatintel.Engine.__module__]))"
    )
    assert python_json(probe) == [False, [], "threatintel.engine"]
