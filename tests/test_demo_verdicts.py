"""The demo's sample reads sensibly: the verdicts an analyst sees first in `threatintel demo`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from threatintel.cli import app

GITHUB = "https://github.com/microsoft/vscode/releases"
PHISHING = "https://secure-docs-share.net/d/7f3a9c?file=invoice.pdf&dl=1"
RESOLVERS = ("8.8.8.8", "8.8.4.4", "1.1.1.1", "9.9.9.9", "2606:4700:4700::1111")


@pytest.fixture(scope="module")
def labels() -> dict[str, str]:
    result = CliRunner().invoke(app, ["demo", "--format", "json"])
    assert result.exit_code == 0, result.output
    enrichments: list[dict[str, Any]] = json.loads(result.stdout)["enrichments"]
    return {e["indicator"]["value"]: e["verdict"]["label"] for e in enrichments}


def test_the_code_hosting_link_is_not_malicious(labels: dict[str, str]) -> None:
    """The github.com release page in the sample report is not called malicious (nor suspicious)."""
    assert labels[GITHUB] in ("harmless", "unknown")


def test_the_phishing_link_is_not_harmless(labels: dict[str, str]) -> None:
    """The phishing link of the sample report is flagged, never harmless."""
    assert labels[PHISHING] in ("malicious", "suspicious")


def test_public_resolvers_in_the_sample_are_not_flagged(labels: dict[str, str]) -> None:
    """The resolvers pasted with the capture come out harmless or unknown."""
    assert {ip: labels[ip] for ip in RESOLVERS if labels[ip] in ("malicious", "suspicious")} == {}
