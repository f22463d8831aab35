"""Markdown, JSON (against its committed schema), JSON Lines and CSV reports, and saving them."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import jsonschema
import pytest
from markdown_it import MarkdownIt

from support import sim_env
from threatintel.engine import Engine
from threatintel.models import SCHEMA_VERSION, Analysis, Enrichment, Rejected
from threatintel.reports import FORMATS, render, report_name, save
from threatintel.reports.jsondoc import json_schema
from threatintel.reports.tabular import safe_cell
from threatintel.simulator import SimulatorServer, demo_sample

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "schema"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
async def demo_analysis(engine: Engine) -> Analysis:
    """The demo sample analysed against the simulator: every verdict, hostile pulse names."""
    return await engine.analyze_text(demo_sample())


def with_hostile_cells(analysis: Analysis) -> Analysis:
    """A copy whose first indicator carries formula-like and hostile upstream text."""
    first = analysis.enrichments[0]
    verdict = first.verdict.model_copy(
        update={"reasons": ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", HOSTILE]}
    )
    changed = first.model_copy(update={"verdict": verdict})
    return analysis.model_copy(update={"enrichments": [changed, *analysis.enrichments[1:]]})


def test_committed_schema_matches_the_models() -> None:
    """docs/schema holds exactly the schema the models produce (run scripts/write_schema.py)."""
    committed = json.loads((SCHEMA_FILE / f"analysis-{SCHEMA_VERSION}.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema()))


async def test_json_output_validates_against_the_schema(demo_analysis: Analysis) -> None:
    """--format json validates against the committed JSON Schema, with UTC 'Z' timestamps."""
    schema = json.loads((SCHEMA_FILE / f"analysis-{SCHEMA_VERSION}.schema.json").read_text())
    document = json.loads(render(demo_analysis, "json"))
    jsonschema.Draft202012Validator(schema).validate(document)
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["finished_at"].endswith("Z")
    fetched = [s["fetched_at"] for e in document["enrichments"] for s in e["sources"].values()]
    assert fetched and all(t.endswith("Z") for t in fetched)


async def test_jsonl_lines_validate_as_enrichments(demo_analysis: Analysis) -> None:
    """Each JSON Lines record is one Enrichment per the schema's $defs."""
    schema = json.loads((SCHEMA_FILE / f"analysis-{SCHEMA_VERSION}.schema.json").read_text())
    enrichment_schema = {"$ref": "#/$defs/Enrichment", "$defs": schema["$defs"]}
    lines = render(demo_analysis, "jsonl").splitlines()
    assert len(lines) == len(demo_analysis.enrichments)
    for line in lines:
        jsonschema.Draft202012Validator(enrichment_schema).validate(json.loads(line))
        Enrichment.model_validate_json(line)


async def test_csv_round_trips_with_formulas_neutralised(demo_analysis: Analysis) -> None:
    """CSV parses back with Python's csv module, one row per indicator, formulas escaped."""
    analysis = with_hostile_cells(demo_analysis)
    rows = list(csv.DictReader(io.StringIO(render(analysis, "csv"))))
    assert len(rows) == len(analysis.enrichments)
    assert [r["indicator"] for r in rows] == [e.indicator.value for e in analysis.enrichments]
    reasons = rows[0]["reasons"].split(" | ")
    assert reasons[0].startswith("'=HYPERLINK")
    assert reasons[1] == "+cmd|' /C calc'!A0"  # inside the cell, only the first char matters
    assert rows[0]["reasons"].startswith("'")
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=x", "' =x"),
        (" -1", "' -1"),
        ("\r=x", "\\r=x"),
        ("a\x1b[2Jb\nc", "a\\x1b[2Jb c"),
        ("1.2.3.4", "1.2.3.4"),
        ("", ""),
    ],
)
def test_safe_cell(value: str, expected: str) -> None:
    """Cells a spreadsheet reads as a formula are prefixed; hidden characters show as escapes."""
    assert safe_cell(value) == expected


async def test_markdown_summarises_defangs_and_escapes(demo_analysis: Analysis) -> None:
    """Markdown has verdict counts, defanged indicators, no raw HTML, bidi or live formatting."""
    hostile = with_hostile_cells(demo_analysis)
    first = hostile.enrichments[0]
    reasons = [*first.verdict.reasons, "\\*emph\\* ~~struck~~ pulse \u202e27\u200b\x07"]
    verdict = first.verdict.model_copy(update={"reasons": reasons})
    rejected = [*hostile.rejected, Rejected(candidate="`a``b<i>&amp;", reason="not one")]
    hostile = hostile.model_copy(
        update={
            "enrichments": [
                first.model_copy(update={"verdict": verdict}),
                *hostile.enrichments[1:],
            ],
            "rejected": rejected,
        }
    )
    text = render(hostile, "markdown")
    assert "| malicious |" in text and "| **total** |" in text
    assert "hxxp" in text and "\\[.\\]" in text  # [.] escaped for Markdown
    assert HOSTILE not in text and "&lt;script&gt;" in text
    assert "## Attribution" in text
    malicious = next(e for e in demo_analysis.enrichments if e.verdict.label.value == "malicious")
    assert f"### {malicious.indicator.value}\n" not in text  # shown defanged, never live
    # Backslash and tilde are escaped; controls, bidi and zero-width marks show as escapes.
    assert "\\\\\\*emph\\\\\\* \\~\\~struck\\~\\~ pulse \\\\u202e27\\\\u200b\\\\x07" in text
    assert not set("\u202e\u200b\x07") & set(text)
    # The skipped candidate is a code span fenced past its longest backtick run, padded so its
    # leading backtick does not join the fence; nothing inside is escaped.
    assert "- ``` `a``b<i>&amp; ```: not one" in text
    # And a CommonMark renderer (with GFM strikethrough) agrees: no emphasis, strike or markup.
    html = MarkdownIt("commonmark").enable(["strikethrough", "table"]).render(text)
    assert "<em>" not in html and "<s>" not in html and "<script" not in html
    assert "\\*emph\\* ~~struck~~ pulse \\u202e27\\u200b\\x07" in html
    assert "<code>`a``b&lt;i&gt;&amp;amp;</code>" in html


def test_saved_reports_never_collide(tmp_path: Path) -> None:
    """Two saves in the same instant get two files; names sort by time."""
    analysis = Analysis()
    first = save(analysis, "json", tmp_path / "reports")
    second = save(analysis, "json", tmp_path / "reports")
    assert first != second and first.exists() and second.exists()
    assert first.name.startswith("threatintel-") and first.name.endswith(".json")
    assert report_name("html").endswith(".html")


def test_saved_reports_are_the_owners_alone(tmp_path: Path) -> None:
    """Saved reports name an incident's indicators: new directories 0700, files 0600, even
    under the common 022 umask."""
    previous = os.umask(0o022)
    try:
        path = save(Analysis(), "markdown", tmp_path / "team" / "reports")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (path.parent, path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_every_format_is_registered_once() -> None:
    """The CLI's --format choices and the registry agree."""
    from threatintel.cli_options import OutputFormat

    assert {f.value for f in OutputFormat} == set(FORMATS)


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json"])
def test_cli_formats_to_stdout_and_files(sim: SimulatorServer, tmp_path: Path, fmt: str) -> None:
    """--format prints to stdout, --output writes a file, --save also keeps a copy."""
    from typer.testing import CliRunner

    from threatintel.cli import app

    runner = CliRunner()
    env = sim_env(sim, REPORTS_DIR=str(tmp_path / "reports"))
    printed = runner.invoke(app, ["analyze", "45.142.212.61", "--format", fmt], env=env)
    assert printed.exit_code == 0, printed.output
    target = tmp_path / f"out.{fmt}"
    written = runner.invoke(
        app, ["analyze", "45.142.212.61", "--format", fmt, "-o", str(target), "--save"], env=env
    )
    assert written.exit_code == 0, written.output
    assert target.read_text(encoding="utf-8").strip()
    saved = list((tmp_path / "reports").iterdir())
    assert len(saved) == 1 and saved[0].suffix in {".md", ".csv", ".json"}


async def test_stix_of_a_real_batch_with_attribution_is_valid(demo_analysis: Analysis) -> None:
    """The demo batch (every type, attribution to several groups) is a valid STIX 2.1 bundle."""
    from stix2validator import ValidationOptions, validate_string

    assert demo_analysis.attribution is not None and demo_analysis.attribution.groups
    text = render(demo_analysis, "stix")
    results = validate_string(text, ValidationOptions(version="2.1"))
    errors = [str(e) for e in results.errors]
    assert results.is_valid, errors
    bundle = json.loads(text)
    types = {o["type"] for o in bundle["objects"]}
    assert {"indicator", "intrusion-set", "relationship", "identity"} <= types
    harmless = {
        e.indicator.value for e in demo_analysis.enrichments if e.verdict.label.value == "harmless"
    }
    for obj in bundle["objects"]:
        if obj["type"] == "indicator":
            assert obj["name"] not in harmless


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_save_prints_as_well_as_saving(sim: SimulatorServer, tmp_path: Path, fmt: str) -> None:
    """--save keeps a copy under REPORTS_DIR and still prints the report, in every format."""
    from typer.testing import CliRunner

    from threatintel.cli import app

    env = sim_env(sim, REPORTS_DIR=str(tmp_path / "reports"), COLUMNS="120")
    result = CliRunner().invoke(
        app, ["analyze", "45.142.212.61", "--format", fmt, "--save"], env=env
    )
    assert result.exit_code == 0, result.output
    (saved,) = (tmp_path / "reports").iterdir()
    assert saved.name.endswith("." + FORMATS[fmt].extension)
    assert "45.142.212" in result.stdout  # markdown defangs it: 45.142.212[.]61
    assert "45.142.212" in saved.read_text(encoding="utf-8")
    assert "saved" in result.stderr
    if fmt not in ("table", "html"):  # the table is laid out for the terminal, html is dated
        assert result.stdout == saved.read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt", ["html", "stix", "misp"])
def test_file_formats_without_output_are_saved_not_printed(
    sim: SimulatorServer, tmp_path: Path, fmt: str
) -> None:
    """html/stix/misp with neither --output nor --save go under REPORTS_DIR only; with -o and
    --save, both files are written and nothing is printed."""
    from typer.testing import CliRunner

    from threatintel.cli import app

    env = sim_env(sim, REPORTS_DIR=str(tmp_path / "reports"))
    runner = CliRunner()
    saved_only = runner.invoke(app, ["analyze", "45.142.212.61", "--format", fmt], env=env)
    assert saved_only.exit_code == 0, saved_only.output
    assert saved_only.stdout == "" and len(list((tmp_path / "reports").iterdir())) == 1
    target = tmp_path / "out" / f"report.{fmt}"
    both = runner.invoke(
        app, ["analyze", "45.142.212.61", "--format", fmt, "--save", "-o", str(target)], env=env
    )
    assert both.exit_code == 0, both.output
    assert both.stdout == "" and "45.142.212.61" in target.read_text(encoding="utf-8")
    assert len(list((tmp_path / "reports").iterdir())) == 2
