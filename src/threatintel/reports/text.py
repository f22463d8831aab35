"""Plain-text renderers: the terminal table, JSON and JSON Lines.

The table renderer also has a rich form (``analysis_table``) for terminals; every renderer
returns plain text so it can be written to a file. Upstream text (pulse names, tags, reasons
quoting adversary names) is attacker-influenced: the table escapes rich markup so it shows as
text, never as styling. JSON follows the versioned schema in docs/schema/.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from threatintel.models import SCHEMA_VERSION, Analysis, Enrichment, SourceStatus, VerdictLabel

VERDICT_STYLES: dict[VerdictLabel, str] = {
    VerdictLabel.MALICIOUS: "bold red",
    VerdictLabel.SUSPICIOUS: "yellow",
    VerdictLabel.HARMLESS: "green",
    VerdictLabel.UNKNOWN: "dim",
}
_STATUS_MARKS: dict[SourceStatus, str] = {
    SourceStatus.OK: "ok",
    SourceStatus.NOT_FOUND: "none",
    SourceStatus.NOT_APPLICABLE: "-",
    SourceStatus.NOT_QUERIED_PRIVATE: "private",
    SourceStatus.NOT_CONFIGURED: "no key",
    SourceStatus.QUOTA_EXHAUSTED: "quota",
    SourceStatus.RATE_LIMITED: "429",
    SourceStatus.AUTH_FAILED: "auth",
    SourceStatus.TIMEOUT: "timeout",
    SourceStatus.ERROR: "error",
    SourceStatus.CIRCUIT_OPEN: "open",
}
_FAILED_STYLE = "red"


def render_json(analysis: Analysis) -> str:
    return analysis.model_dump_json(indent=2, exclude_none=False) + "\n"


def render_jsonl(analysis: Analysis) -> str:
    """One enrichment per line (for SIEM pipelines and `jq -c`)."""
    return "".join(e.model_dump_json() + "\n" for e in analysis.enrichments)


def _source_cell(enrichment: Enrichment, name: str) -> str:
    result = enrichment.sources.get(name)
    if result is None:
        return ""
    mark = _STATUS_MARKS[result.status]
    if result.status is SourceStatus.OK:
        if result.detections is not None:
            mark = f"{result.detections.malicious}/{result.detections.total}"
        elif result.pulse_count is not None:
            mark = f"{result.pulse_count} pulse" + ("" if result.pulse_count == 1 else "s")
        elif result.abuse is not None:
            mark = f"{result.abuse.confidence}%"
        elif result.geo is not None and (result.geo.country or result.geo.asn):
            mark = " ".join(
                p
                for p in (result.geo.country, f"AS{result.geo.asn}" if result.geo.asn else "")
                if p
            )
    if result.status.failed:
        return f"[{_FAILED_STYLE}]{escape(mark)}[/]"
    return escape(mark)


def analysis_table(analysis: Analysis, *, title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False, expand=False, title_justify="left")
    table.add_column("indicator", overflow="fold", max_width=48)
    table.add_column("type")
    table.add_column("verdict")
    table.add_column("score", justify="right")
    table.add_column("conf.", justify="right")
    for name in analysis.providers:
        table.add_column(name, justify="center")
    table.add_column("why", overflow="fold", max_width=60)
    for enrichment in analysis.enrichments:
        verdict = enrichment.verdict
        style = VERDICT_STYLES[verdict.label]
        table.add_row(
            escape(enrichment.indicator.value),
            enrichment.indicator.type.value,
            f"[{style}]{verdict.label.value}[/]",
            str(verdict.score),
            str(verdict.confidence),
            *(_source_cell(enrichment, name) for name in analysis.providers),
            escape(verdict.reasons[0]) if verdict.reasons else "",
        )
    return table


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``plural(1, "indicator")`` is "1 indicator", ``plural(2, "indicator")`` "2 indicators"."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def summary_line(analysis: Analysis) -> str:
    counts = {label: 0 for label in VerdictLabel}
    for enrichment in analysis.enrichments:
        counts[enrichment.verdict.label] += 1
    parts = [f"{n} {label.value}" for label, n in counts.items() if n]
    text = plural(len(analysis.enrichments), "indicator") + ": " + (", ".join(parts) or "none")
    answers = [r for e in analysis.enrichments for r in e.sources.values() if r.status.answered]
    cached = sum(r.cached for r in answers)
    if cached:
        text += f"; {cached}/{len(answers)} answers from cache"
    if analysis.rejected:
        text += f"; {plural(len(analysis.rejected), 'candidate')} skipped"
    return text + f" ({analysis.duration:.1f}s)"


def render_table(analysis: Analysis) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, color_system=None, force_terminal=False)
    console.print(analysis_table(analysis))
    console.print(summary_line(analysis))
    for item in analysis.rejected:
        console.print(f"skipped {escape(item.candidate)!s}: {escape(item.reason)}")
    return buffer.getvalue()


SCHEMA_ID = "https://threatintel.invalid/schema/analysis-{version}.json"


def json_schema() -> dict[str, object]:
    """The JSON Schema of `--format json` (docs/schema/analysis-<version>.schema.json).

    JSON Lines output holds one `Enrichment` per line: `$defs/Enrichment` in the same file.
    """
    schema: dict[str, object] = Analysis.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID.format(version=SCHEMA_VERSION)
    schema["title"] = f"threatintel analysis, schema version {SCHEMA_VERSION}"
    return schema
