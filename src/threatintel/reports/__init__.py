"""Reports: one renderer per format, each taking the result model only.

    text = render(analysis, "markdown")
    path = save(analysis, "html", Path("./reports"))     # collision-free name, never overwrites
    text = render(analysis, "stix", include_private=True)  # non-public indicators shared too
    text = render(analysis, "table", width=80)           # laid out for an 80-column terminal

| format   | for                                   | module      |
|----------|---------------------------------------|-------------|
| table    | terminals                             | text.py     |
| json     | SIEMs, scripts (docs/schema/)         | jsondoc.py  |
| jsonl    | one enrichment per line               | jsondoc.py  |
| markdown | tickets                               | markdown.py |
| csv      | spreadsheets                          | tabular.py  |
| html     | briefings; one offline file           | html.py     |
| stix     | STIX 2.1 bundles for sharing          | stix.py     |
| misp     | MISP event JSON                       | misp.py     |

Options reach only the renderers that take them (``ReportFormat.options``), so an adapter (CLI,
MCP, HTTP) can pass the same keywords for every format:

- ``include_private``, ``internal_domains`` (html, stix, misp: the formats meant for sharing):
  non-public indicators are left out unless ``include_private`` is true, and the report says how
  many (see ``audience.py``).
- ``width``, ``wide`` (table): the layout width, and every source in its own column.

Human-facing formats (table, markdown, csv, html) defang URLs and domains inside upstream text
and show its control, bidi and zero-width characters as escapes (``threatintel._visible``);
json, jsonl, stix and misp keep every value exact.
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from threatintel._files import make_private_dirs, write_private_new
from threatintel._visible import json_escape_hidden
from threatintel.indicators import DEFAULT_INTERNAL_DOMAINS
from threatintel.models import Analysis

#: The keywords of the formats meant to leave the organisation.
SHARING_OPTIONS = frozenset({"include_private", "internal_domains"})
TABLE_OPTIONS = frozenset({"width", "wide"})


@dataclass(frozen=True, slots=True)
class ReportFormat:
    """A format's name, file extension, media type, where its renderer lives and its keywords."""

    name: str
    extension: str
    media_type: str
    module: str
    function: str
    options: frozenset[str] = frozenset()
    #: A JSON document: hidden characters are written as JSON escapes (same values).
    is_json: bool = False

    def renderer(self) -> Callable[..., str]:
        # Imported on first use: stix2 and jinja2 take a noticeable share of a short CLI run,
        # and most runs print a table.
        module = importlib.import_module(f"threatintel.reports.{self.module}")
        renderer: Callable[..., str] = getattr(module, self.function)
        return renderer


FORMATS: dict[str, ReportFormat] = {
    f.name: f
    for f in (
        ReportFormat("table", "txt", "text/plain", "text", "render_table", TABLE_OPTIONS),
        ReportFormat("json", "json", "application/json", "jsondoc", "render_json", is_json=True),
        ReportFormat(
            "jsonl", "jsonl", "application/x-ndjson", "jsondoc", "render_jsonl", is_json=True
        ),
        ReportFormat("markdown", "md", "text/markdown", "markdown", "render_markdown"),
        ReportFormat("csv", "csv", "text/csv", "tabular", "render_csv"),
        ReportFormat("html", "html", "text/html", "html", "render_html", SHARING_OPTIONS),
        ReportFormat(
            "stix",
            "stix.json",
            "application/stix+json",
            "stix",
            "render_stix",
            SHARING_OPTIONS,
            is_json=True,
        ),
        ReportFormat(
            "misp",
            "misp.json",
            "application/json",
            "misp",
            "render_misp",
            SHARING_OPTIONS,
            is_json=True,
        ),
    )
}


def render(
    analysis: Analysis,
    fmt: str,
    *,
    include_private: bool = False,
    internal_domains: Sequence[str] = DEFAULT_INTERNAL_DOMAINS,
    width: int | None = None,
    wide: bool = False,
) -> str:
    """The report as text; ValueError for an unknown format.

    Each format gets only the keywords it takes; ``width=None`` keeps the table's file width.
    """
    try:
        report_format = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}") from None
    given: dict[str, Any] = {
        "include_private": include_private,
        "internal_domains": tuple(internal_domains),
        "wide": wide,
    }
    if width is not None:
        given["width"] = width
    options = {k: v for k, v in given.items() if k in report_format.options}
    text = report_format.renderer()(analysis, **options)
    return json_escape_hidden(text) if report_format.is_json else text


def report_name(fmt: str, when: datetime | None = None) -> str:
    """threatintel-20261126T210358.506379Z-3f9a1c.html: sortable, and unique per call."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S.%fZ")
    return f"threatintel-{stamp}-{secrets.token_hex(3)}.{FORMATS[fmt].extension}"


def save(analysis: Analysis, fmt: str, directory: Path, **options: Any) -> Path:
    """Write the report under ``directory`` with a fresh name; never overwrites a file.

    ``options`` are render()'s keywords.
    """
    text = render(analysis, fmt, **options)
    # A report names the indicators of an incident, like the cache: the owner's alone.
    make_private_dirs(directory)
    while True:
        path = directory / report_name(fmt)
        try:
            write_private_new(path, text)
        except FileExistsError:
            continue
        return path


__all__ = ["FORMATS", "ReportFormat", "render", "report_name", "save"]
