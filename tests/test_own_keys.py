"""Our own API keys are never indicators: not extracted, not sent, not reported.

A 64-hex VirusTotal key in an analysed log looks exactly like a SHA-256. The checks run against
the simulator's request log (paths, queries, indicators and the other vendors' headers) and
every report format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import sim_env
from threatintel._keyguard import KEY_REASON
from threatintel._redaction import fingerprint
from threatintel.cli import app
from threatintel.engine import Engine
from threatintel.errors import InvalidIndicator
from threatintel.indicators import parse_indicator
from threatintel.models import Analysis
from threatintel.reports import render
from threatintel.simulator import SimulatorServer

runner = CliRunner()

VT_KEY = hashlib.sha256(b"our virustotal key").hexdigest()
#: AbuseIPDB keys are 80 hex characters: a 64-hex run of one would give most of it away.
ABUSE_KEY = hashlib.sha256(b"abuse").hexdigest() + hashlib.sha256(b"ipdb").hexdigest()[:16]
LABEL = f"[VIRUSTOTAL_API_KEY {fingerprint(VT_KEY)}]"
LOG = f"""\
2026-03-02 10:00:01 GET https://www.virustotal.com/api/v3/files/{VT_KEY}?apikey={VT_KEY}
2026-03-02 10:00:02 x-apikey: {VT_KEY.upper()}
2026-03-02 10:00:03 beacon to 45.142.212.61 (sha256 {hashlib.sha256(b"payload").hexdigest()})
2026-03-02 10:00:04 abuseipdb key {ABUSE_KEY}
"""


def assert_key_never_left(
    sim: SimulatorServer, analysis: Analysis, key: str, vendor: str = "virustotal"
) -> None:
    """No request carries ``key`` outside its own vendor's headers; no report holds it."""
    assert sim.log.count() > 0
    for record in sim.log.records():
        assert key not in record.path.lower() and key not in record.query.lower()
        assert key not in (record.indicator or "").lower()
        if record.vendor != vendor:
            assert key not in " ".join(record.headers.values()).lower()
    for fmt in ("json", "jsonl", "markdown", "csv", "html", "stix", "misp"):
        assert key not in render(analysis, fmt, include_private=True).lower(), fmt


@pytest.fixture
def make(make_engine: Callable[..., Engine]) -> Callable[[], Engine]:
    return lambda: make_engine(virustotal_api_key=VT_KEY, abuseipdb_api_key=ABUSE_KEY)


async def test_a_key_in_an_analysed_log_is_never_sent_or_reported(
    sim: SimulatorServer, make: Callable[[], Engine]
) -> None:
    """analyze_text drops every value holding a configured key, reports it by fingerprint among
    the rejected candidates, and still analyses the log's real indicators."""
    analysis = await make().analyze_text(LOG)
    values = {e.indicator.value for e in analysis.enrichments}
    assert "45.142.212.61" in values and hashlib.sha256(b"payload").hexdigest() in values
    assert not any(VT_KEY in v or v in ABUSE_KEY for v in values)
    hidden = [r for r in analysis.rejected if r.reason == KEY_REASON]
    assert LABEL in {r.candidate for r in hidden}
    assert any("?apikey=" + LABEL in r.candidate for r in hidden)
    assert any("ABUSEIPDB_API_KEY" in r.candidate for r in hidden)
    assert_key_never_left(sim, analysis, VT_KEY)
    assert_key_never_left(sim, analysis, ABUSE_KEY, "abuseipdb")


async def test_explicit_values_holding_a_key_are_rejected_and_inputs_scrubbed(
    sim: SimulatorServer, make: Callable[[], Engine]
) -> None:
    """analyze/collect reject a key given as a value and mask it in a pasted line kept as the
    input of another indicator."""
    analysis = await make().analyze([VT_KEY, f"8.8.8.8 {VT_KEY}"])
    (enrichment,) = analysis.enrichments
    assert enrichment.indicator.value == "8.8.8.8"
    assert enrichment.inputs == [f"8.8.8.8 {LABEL}"]
    assert [(r.candidate, r.reason) for r in analysis.rejected] == [(LABEL, KEY_REASON)]
    assert_key_never_left(sim, analysis, VT_KEY)


async def test_enrich_refuses_an_indicator_holding_a_key(make: Callable[[], Engine]) -> None:
    """enrich() of a parsed key is an InvalidIndicator naming the fingerprint, not the key."""
    with pytest.raises(InvalidIndicator) as caught:
        await make().enrich(parse_indicator(VT_KEY))
    assert VT_KEY not in str(caught.value) and fingerprint(VT_KEY) in str(caught.value)


async def test_short_values_inside_a_key_are_not_mistaken_for_it(
    make: Callable[[], Engine],
) -> None:
    """A value shorter than a key's fragment threshold that happens to sit inside it is kept."""
    piece = VT_KEY[:8]
    analysis = await make().analyze([f"{piece}.com"])
    assert [e.indicator.value for e in analysis.enrichments] == [f"{piece}.com"]


def test_cli_never_shows_a_key_found_in_a_file(sim: SimulatorServer, tmp_path: Path) -> None:
    """`threatintel analyze -f log` skips the key with its fingerprint on stderr; neither the
    table nor the saved JSON report holds it, and no request carries it."""
    log = tmp_path / "access.log"
    log.write_text(LOG)
    env = sim_env(sim, VIRUSTOTAL_API_KEY=VT_KEY, REPORTS_DIR=str(tmp_path / "reports"))
    result = runner.invoke(app, ["analyze", "-f", str(log), "--save"], env=env)
    assert result.exit_code == 0, result.output
    assert f"skipped {LABEL}: {KEY_REASON}" in result.stderr
    assert VT_KEY not in result.output.lower()
    (saved,) = (tmp_path / "reports").iterdir()
    assert VT_KEY not in saved.read_text().lower()
    for record in sim.log.records():
        assert VT_KEY not in f"{record.path} {record.query} {record.indicator}".lower()


def pieces(key: str) -> list[str]:
    """Every 16-character piece of ``key``, lower-cased."""
    return [key[i : i + 16] for i in range(len(key) - 15)]


async def test_no_piece_of_a_key_survives_a_cut_for_display(
    sim: SimulatorServer, make: Callable[[], Engine]
) -> None:
    """Inputs kept to 200 characters and rejected candidates cut to 100 never end in the first
    part of a key: the key is masked before the cut, or the candidate is hidden whole."""
    pasted = "8.8.8.8 " + "x" * 170 + " " + VT_KEY  # the cut at 200 leaves 21 of its 64
    by_value = await make().analyze([pasted])
    (enrichment,) = by_value.enrichments
    # A 124-hex run is rejected and echoed cut to 100 characters: 60 "a" and 37 of the key.
    in_text = await make().analyze_text(f"blob {'a' * 60}{VT_KEY} 1.1.1.1")
    shown = [*enrichment.inputs, *(r.candidate for r in in_text.rejected)]
    assert any(r.reason == KEY_REASON for r in in_text.rejected)
    for text in shown:
        assert not any(piece in text.lower() for piece in pieces(VT_KEY)), text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_extract_never_prints_a_configured_key(tmp_path: Path, fmt: str) -> None:
    """`threatintel extract` drops a configured key like analyze does: the fingerprint on
    stderr, never the key on stdout, while the log's real indicators are still printed."""
    log = tmp_path / "access.log"
    log.write_text(LOG)
    result = runner.invoke(
        app, ["extract", str(log), "--format", fmt], env={"VIRUSTOTAL_API_KEY": VT_KEY}
    )
    assert result.exit_code == 0, result.output
    assert VT_KEY not in result.output.lower()
    assert LABEL in result.output and KEY_REASON in result.output
    assert "45.142.212.61" in result.stdout
