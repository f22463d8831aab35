"""The cache and quota packages sit below the settings: importing them loads neither the
settings nor, through them, scoring and the parser; key fingerprints and URL redaction live in
a leaf module that imports nothing of the project.

``import threatintel.quota`` runs ``threatintel/__init__.py`` first; the probe puts a bare package
object in its place, so what is then loaded is the subpackages' own import graph whatever that
file imports (tests/test_lazy_imports.py covers the package and the CLI's start-up).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from threatintel import _redaction, settings

PROBE = textwrap.dedent(
    """
    import importlib, importlib.util, json, pkgutil, sys, types

    spec = importlib.util.find_spec("threatintel")
    package = types.ModuleType("threatintel")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["threatintel"] = package
    for name in sys.argv[1:]:
        module = importlib.import_module(name)
        for sub in pkgutil.iter_modules(getattr(module, "__path__", [])):
            importlib.import_module(f"{name}.{sub.name}")
    print(json.dumps(sorted(sys.modules)))
    """
)
#: What the settings pull in: the settings themselves, the verdict model, the parser.
ABOVE = ("threatintel.settings", "threatintel.scoring", "threatintel.indicators")


def loaded_by(*modules: str) -> set[str]:
    """Every module loaded by importing ``modules`` and all their submodules, in a fresh process."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    return set(json.loads(probe.stdout))


@pytest.mark.parametrize("package", ["threatintel.quota", "threatintel.cache"])
def test_package_does_not_import_the_settings(package: str) -> None:
    """Importing every module of the quota or cache package loads no settings, scoring or parser."""
    loaded = loaded_by(package)
    assert f"{package}.base" in loaded  # the probe did import the package
    assert loaded.isdisjoint(ABOVE), sorted(loaded & set(ABOVE))


def test_redaction_is_a_leaf() -> None:
    """The fingerprint and URL-redaction module imports no other project module, nor pydantic."""
    loaded = loaded_by("threatintel._redaction")
    ours = {name for name in loaded if name.startswith("threatintel.")}
    assert ours == {"threatintel._redaction"}
    assert "pydantic" not in loaded


def test_settings_still_export_the_redaction_helpers() -> None:
    """fingerprint, redact_url and url_secrets imported from the settings are the same objects."""
    assert settings.fingerprint is _redaction.fingerprint
    assert settings.redact_url is _redaction.redact_url
    assert settings.url_secrets is _redaction.url_secrets
