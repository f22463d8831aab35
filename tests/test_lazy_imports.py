"""Start-up stays light: `threatintel version`, `--version` and `--help` load neither the engine
nor the report renderers, the simulator or Redis (issue 9). Behaviour, not timing: each run is a
real process whose loaded modules are listed when it exits; bench/bench_startup.py has the times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Runs the CLI's entry point with the given arguments, then writes sys.modules to argv[1].
PROBE = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["threatintel", *sys.argv[2:]]
from threatintel.cli import main
main()
"""

#: Modules that only some commands need: none of them may load to print a version or help.
HEAVY = (
    "threatintel.engine",
    "threatintel.settings",
    "threatintel.reports",
    "threatintel.attribution",
    "threatintel.simulator",
    "stix2",
    "jinja2",
    "redis",
    "starlette",
    "uvicorn",
)


def loaded_by(tmp_path: Path, *args: str, stdin: str = "") -> set[str]:
    """The modules loaded by one `threatintel ARGS` process, run in an empty directory."""
    listing = tmp_path / "modules.json"
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(listing), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(listing.read_text()))


@pytest.mark.parametrize("args", [["version"], ["--version"], ["--help"], ["-h"]])
def test_version_and_help_load_no_heavy_module(tmp_path: Path, args: list[str]) -> None:
    """Printing the version or the help loads no engine, settings, renderer, simulator or Redis."""
    loaded = loaded_by(tmp_path, *args)
    assert "threatintel.cli" in loaded  # the probe did run the CLI
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_a_command_loads_what_it_uses(tmp_path: Path) -> None:
    """`extract` loads the settings and parser it needs, but no engine, simulator or Redis."""
    loaded = loaded_by(tmp_path, "extract", "-", stdin="seen 8.8.8.8 today\n")
    assert {"threatintel.settings", "threatintel.indicators"} <= loaded
    rest = set(HEAVY) - {"threatintel.settings", "threatintel.reports", "threatintel.attribution"}
    assert loaded.isdisjoint(rest), sorted(loaded & rest)


def test_public_names_still_resolve_from_the_package() -> None:
    """`import threatintel` stays light, yet every public name resolves on first use."""
    probe = (
        "import json, sys, threatintel; before = 'threatintel.engine' in sys.modules; "
        "names = [n for n in threatintel.__all__ if getattr(threatintel, n, None) is None]; "
        "print(json.dumps([before, names, threatintel.Engine.__module__]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [False, [], "threatintel.engine"]
