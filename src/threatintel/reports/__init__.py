"""Reports: one renderer per format, each taking the result model only.

    text = render(analysis, "markdown")
    path = save(analysis, "html", Path("./reports"))     # collision-free name, never overwrites

| format   | for                                   | module      |
|----------|---------------------------------------|-------------|
| table    | terminals                             | text.py     |
| json     | SIEMs, scripts (docs/schema/)         | text.py     |
| jsonl    | one enrichment per line               | text.py     |
| markdown | tickets                               | markdown.py |
| csv      | spreadsheets                          | tabular.py  |
| html     | briefings; one offline file           | html.py     |
| stix     | STIX 2.1 bundles for sharing          | stix.py     |
| misp     | MISP event JSON                       | misp.py     |
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from threatintel.models import Analysis


@dataclass(frozen=True, slots=True)
class ReportFormat:
    """A format's name, file extension, media type and where its renderer lives."""

    name: str
    extension: str
    media_type: str
    module: str
    function: str

    def renderer(self) -> Callable[[Analysis], str]:
        # Imported on first use: stix2 and jinja2 take a noticeable share of a short CLI run,
        # and most runs print a table.
        module = importlib.import_module(f"threatintel.reports.{self.module}")
        renderer: Callable[[Analysis], str] = getattr(module, self.function)
        return renderer


FORMATS: dict[str, ReportFormat] = {
    f.name: f
    for f in (
        ReportFormat("table", "txt", "text/plain", "text", "render_table"),
        ReportFormat("json", "json", "application/json", "text", "render_json"),
        ReportFormat("jsonl", "jsonl", "application/x-ndjson", "text", "render_jsonl"),
        ReportFormat("markdown", "md", "text/markdown", "markdown", "render_markdown"),
        ReportFormat("csv", "csv", "text/csv", "tabular", "render_csv"),
        ReportFormat("html", "html", "text/html", "html", "render_html"),
        ReportFormat("stix", "stix.json", "application/stix+json", "stix", "render_stix"),
        ReportFormat("misp", "misp.json", "application/json", "misp", "render_misp"),
    )
}


def render(analysis: Analysis, fmt: str) -> str:
    """The report as text; ValueError for an unknown format."""
    try:
        report_format = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}") from None
    return report_format.renderer()(analysis)


def report_name(fmt: str, when: datetime | None = None) -> str:
    """threatintel-20261126T210358.506379Z-3f9a1c.html: sortable, and unique per call."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S.%fZ")
    return f"threatintel-{stamp}-{secrets.token_hex(3)}.{FORMATS[fmt].extension}"


def save(analysis: Analysis, fmt: str, directory: Path) -> Path:
    """Write the report under ``directory`` with a fresh name; never overwrites a file."""
    text = render(analysis, fmt)
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        path = directory / report_name(fmt)
        try:
            # "x": exclusive creation, so two concurrent calls can never share a file.
            with path.open("x", encoding="utf-8", newline="") as handle:
                handle.write(text)
        except FileExistsError:
            continue
        return path


__all__ = ["FORMATS", "ReportFormat", "render", "report_name", "save"]
