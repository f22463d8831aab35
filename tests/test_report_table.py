"""The terminal table: laid out for 80 and 120 columns, failures with their reason, --wide."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from support import sim_env
from threatintel.cli import app
from threatintel.models import (
    AbuseReport,
    Analysis,
    Detections,
    Enrichment,
    Geo,
    Indicator,
    IndicatorType,
    Rejected,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)
from threatintel.reports.text import render_table, short_reason, sources_line
from threatintel.simulator import SimulatorServer

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PROVIDERS = ["virustotal", "otx", "abuseipdb", "ipinfo"]
LONG_URL = "https://login-microsoft-verify.com/owa/auth/logon.aspx?client=outlook&ref=finance"
LONG_REASON = (
    "4/93 VirusTotal engines flag it malicious (Chong Lua Dao, ESET, Juniper Networks, +3 more) "
    "(+2 suspicious) — below the 5 needed for strong evidence"
)
#: Ten mixed indicators: public and private IPs, IPv6, domains (one internal), URLs, hashes, and
#: 103.75.190.11, for which the simulator's scenario makes OTX fail with a 503.
TEN = [
    "45.142.212.61",
    "10.0.0.5",
    "2606:4700:4700::1111",
    "update.cdn-update-check.net",
    "fileserver.corp.local",
    LONG_URL,
    "http://cdn-update-check.net/payload/stage2.bin",
    "fedca098d7cce57d9b8f2fdfdd107e5a08e99c50ba7d4e931cb0c17c4aadbd6e",
    "8a89e1c96867a475f6306aa971c2cce5",
    "103.75.190.11",
]

runner = CliRunner()


def _ok(source: str, **facts: Any) -> SourceResult:
    return SourceResult(source=source, status=SourceStatus.OK, fetched_at=T0, **facts)


def _enrichment(
    kind: IndicatorType, value: str, label: VerdictLabel, reason: str, *sources: SourceResult
) -> Enrichment:
    return Enrichment(
        indicator=Indicator(type=kind, value=value),
        sources={s.source: s for s in sources},
        verdict=Verdict(label=label, score=75, confidence=100, reasons=[reason, "second reason"]),
    )


def sample() -> Analysis:
    """A long URL, an IP every source answered for, and one each source failed on differently."""
    return Analysis(
        providers=PROVIDERS,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
        enrichments=[
            _enrichment(
                IndicatorType.URL,
                LONG_URL,
                VerdictLabel.MALICIOUS,
                LONG_REASON,
                _ok("virustotal", detections=Detections(malicious=11, total=80)),
                _ok("otx", pulse_count=6),
                SourceResult(source="abuseipdb", status=SourceStatus.NOT_APPLICABLE),
            ),
            _enrichment(
                IndicatorType.IPV4,
                "193.42.33.14",
                VerdictLabel.MALICIOUS,
                LONG_REASON,
                _ok("virustotal", detections=Detections(malicious=4, total=93)),
                _ok("otx", pulse_count=1),
                _ok("abuseipdb", abuse=AbuseReport(confidence=31)),
                _ok("ipinfo", geo=Geo(country="US", asn=14061)),
            ),
            _enrichment(
                IndicatorType.IPV4,
                "103.75.190.11",
                VerdictLabel.UNKNOWN,
                "no source could answer",
                SourceResult(
                    source="virustotal",
                    status=SourceStatus.CIRCUIT_OPEN,
                    message="virustotal: circuit open after repeated failures; retrying in 30s",
                ),
                SourceResult(
                    source="otx",
                    status=SourceStatus.ERROR,
                    message="AlienVault OTX answered HTTP 503",
                ),
                SourceResult(
                    source="abuseipdb",
                    status=SourceStatus.QUOTA_EXHAUSTED,
                    message="abuseipdb day quota exhausted on its key; resets at …",
                    reset_at=datetime(2026, 12, 2, 0, 0, tzinfo=UTC),
                ),
                SourceResult(
                    source="ipinfo",
                    status=SourceStatus.TIMEOUT,
                    message="IPinfo did not answer in time",
                ),
            ),
        ],
    )


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_table_fits_the_width_it_is_laid_out_for(width: int) -> None:
    """No line of the table is wider than the width asked for, long URLs and reasons included."""
    text = render_table(sample(), width=width)
    assert widest(text) <= width
    assert "193.42.33.14" in text and "103.75.190.11" in text


def test_narrow_table_puts_reason_and_sources_under_the_indicator() -> None:
    """At 80 columns a row is the indicator line, then its top reason and sources indented."""
    lines = render_table(sample(), width=80).splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("193.42.33.14"))
    assert "malicious" in lines[row] and lines[row].split()[-2:] == ["75", "100"]
    detail = " ".join(line.strip() for line in lines[row + 1 : row + 6])
    assert lines[row + 1].startswith("  4/93 VirusTotal engines flag it malicious")
    assert "VT 4/93 · OTX 1 pulse · AbuseIPDB 31%" in detail
    # Sources break between sources, never inside one ("IPinfo US" / "AS14061").
    assert any(line.strip() == "IPinfo US AS14061" for line in lines[row + 1 : row + 7])
    # The table no longer has a column per source: that is what --wide is for.
    assert not any(line.split()[:1] == ["indicator"] and "ipinfo" in line for line in lines)


def test_every_failed_source_says_why() -> None:
    """error, timeout, quota and circuit_open cells carry the source's short reason."""
    text = " ".join(render_table(sample(), width=120).split())
    assert "VT circuit open: after repeated failures; retrying in 30s" in text
    assert "OTX error: answered HTTP 503" in text
    assert "AbuseIPDB quota: resets 2026-12-02 00:00 UTC" in text
    assert "IPinfo timeout: did not answer in time" in text


def test_short_reason_drops_the_source_name_and_is_cut() -> None:
    """The sources line names the source once; a long message is cut with an ellipsis."""
    result = SourceResult(
        source="otx", status=SourceStatus.ERROR, message="AlienVault OTX answered HTTP 503"
    )
    assert short_reason(result) == "answered HTTP 503"
    long = result.model_copy(update={"message": "OTX: " + "x" * 200})
    assert len(short_reason(long)) == 48 and short_reason(long).endswith("…")


def test_sources_line_skips_sources_that_do_not_apply() -> None:
    """Sources that do not look up this type are left out of the line, not shown as '-'."""
    analysis = sample()
    assert sources_line(analysis, analysis.enrichments[0]).plain == "VT 11/80 · OTX 6 pulses"


def test_wide_table_has_a_column_per_source_and_every_reason() -> None:
    """--wide: one column per source and all reasons, laid out at least 160 columns wide."""
    text = render_table(sample(), width=80, wide=True)
    header = next(line for line in text.splitlines() if line.startswith("indicator"))
    assert header.split() == [
        "indicator",
        "type",
        "verdict",
        "score",
        "conf",
        "VT",
        "OTX",
        "AbuseIPDB",
        "IPinfo",
        "why",
    ]
    assert "- second reason" in text
    assert 80 < widest(text) <= 160


# --- through the CLI ------------------------------------------------------------------------


def run_cli(sim: SimulatorServer, columns: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process against the simulator, its output piped, COLUMNS set."""
    return run_process(columns, *args, env=sim_env(sim))


def run_process(
    columns: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m threatintel ARGS` with no real keys or base URLs, COLUMNS set, no colour."""
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "threatintel", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=base | (env or {}) | {"COLUMNS": str(columns), "NO_COLOR": "1"},
    )


@pytest.mark.parametrize("columns", [80, 120])
def test_cli_table_fits_the_terminal(sim: SimulatorServer, columns: int) -> None:
    """Ten mixed indicators, one with a failing source: no line of stdout or stderr is wider
    than COLUMNS, and the failure shows its reason."""
    result = run_cli(sim, columns, "analyze", *TEN)
    assert result.returncode == 0, result.stderr
    for stream in (result.stdout, result.stderr):
        too_wide = [line for line in stream.splitlines() if len(line) > columns]
        assert not too_wide, "\n".join(too_wide)
    shown = " ".join(result.stdout.split())
    assert re.search(r"OTX error: answered HTTP 5\d\d", shown)  # the scenario's fault is a 5xx
    assert all(value[:12] in result.stdout for value in TEN)
    assert "10 indicators:" in result.stdout


def test_demo_fits_80_columns() -> None:
    """`COLUMNS=80 threatintel demo`, piped: the banner, table and notes fit 80 columns."""
    result = run_process(80, "demo")
    assert result.returncode == 0, result.stderr
    assert "SIMULATOR" in result.stderr and "indicator / why" in result.stdout
    lines = (result.stdout + result.stderr).splitlines()
    assert not [line for line in lines if len(line) > 80]


def test_piped_table_without_columns_stays_wide(sim: SimulatorServer) -> None:
    """Captured output with COLUMNS unset is laid out wide (a file or a pager reads it later)."""
    env: dict[str, str | None] = {**sim_env(sim), "COLUMNS": None}
    result = runner.invoke(app, ["analyze", "45.142.212.61"], env=env)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["indicator", "type", "verdict", "score", "conf", "sources", "why"]


def test_cli_wide_flag(sim: SimulatorServer) -> None:
    """--wide prints a column per source even when COLUMNS is 80."""
    result = runner.invoke(
        app, ["analyze", "45.142.212.61", "--wide"], env=sim_env(sim, COLUMNS="80")
    )
    assert result.exit_code == 0, result.output
    assert "AbuseIPDB" in result.stdout.splitlines()[0]


def test_control_sequences_in_upstream_text_never_reach_the_terminal() -> None:
    """An ESC sequence or bidi override in a reason, a source message or a skipped candidate is
    blanked, so it cannot recolour, retitle or reorder the terminal."""
    analysis = sample()
    first = analysis.enrichments[2]
    hostile = "pulse \x1b]0;owned\x07\x1b[2J \u202e27"
    verdict = first.verdict.model_copy(update={"reasons": [hostile]})
    otx = first.sources["otx"].model_copy(update={"message": "OTX " + hostile})
    changed = first.model_copy(
        update={"verdict": verdict, "sources": {**first.sources, "otx": otx}}
    )
    analysis = analysis.model_copy(
        update={
            "enrichments": [changed],
            "rejected": [Rejected(candidate="x\x1b[31m.evil", reason="odd")],
        }
    )
    for width, wide in ((80, False), (120, False), (160, False), (80, True)):
        text = render_table(analysis, width=width, wide=wide)
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
        assert "pulse" in text and "owned" in text


def test_a_row_with_nothing_to_explain_is_one_line() -> None:
    """An indicator with no reason and no source that applies takes one line, not a blank one."""
    bare = Enrichment(
        indicator=Indicator(type=IndicatorType.CVE, value="CVE-2021-44228"),
        sources={"otx": SourceResult(source="otx", status=SourceStatus.NOT_APPLICABLE)},
        verdict=Verdict(label=VerdictLabel.UNKNOWN, score=0, confidence=0),
    )
    text = render_table(Analysis(providers=PROVIDERS, enrichments=[bare]), width=80)
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("CVE-2021-44228"))
    assert lines[row + 1].startswith("1 indicator")
