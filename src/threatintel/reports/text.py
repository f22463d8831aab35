"""The terminal table (JSON and JSON Lines are in jsondoc.py).

The table is laid out for the width it is given (the terminal's, COLUMNS, or FILE_WIDTH for a
file): a few wide columns, so a row stays readable at 80 columns.

    width < 110   indicator | verdict | score | conf, the top reason and the sources line under
                  the indicator
    width ≥ 110   indicator | type | verdict | score | conf | why (top reason, sources line)
    width ≥ 150   indicator | type | verdict | score | conf | sources | why
    wide=True     indicator | type | verdict | score | conf | one column per source | every reason,
                  at least WIDE_WIDTH columns wide (for wide screens, ``less -S`` and files)

The sources line says in a few words what each source answered ("VT 9/93 · OTX 4 pulses ·
AbuseIPDB 100% · IPinfo US AS14061"); a source that failed says why ("OTX error: answered HTTP
503"). Upstream text (pulse names, tags, reasons quoting adversary names) is attacker-influenced:
URLs and domains in it are defanged (``audience.for_people``), control, bidi and zero-width
characters are shown as escapes (``_visible``: "\\x1b]0;…") and rich markup in it is escaped, so it
shows as text, never as styling, a link or a terminal command.
"""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from threatintel._visible import one_line
from threatintel._wording import plural
from threatintel.models import (
    Analysis,
    Enrichment,
    Rejected,
    SourceResult,
    SourceStatus,
    VerdictLabel,
)
from threatintel.providers import short_name
from threatintel.reports.audience import for_people

#: The width of a table written to a file (and of --wide at the least).
FILE_WIDTH = 160
WIDE_WIDTH = 160
#: Below COLUMNS_WIDTH the reason goes under the indicator; from it, the reason has a column;
#: from SOURCES_COLUMN_WIDTH the sources line has one too.
COLUMNS_WIDTH = 110
SOURCES_COLUMN_WIDTH = 150
#: A failed source's reason is cut to this many characters in the sources line.
MAX_REASON = 48

VERDICT_STYLES: dict[VerdictLabel, str] = {
    VerdictLabel.MALICIOUS: "bold red",
    VerdictLabel.SUSPICIOUS: "yellow",
    VerdictLabel.HARMLESS: "green",
    VerdictLabel.UNKNOWN: "dim",
}
_STATUS_MARKS: dict[SourceStatus, str] = {
    SourceStatus.OK: "ok",
    SourceStatus.NOT_FOUND: "not found",
    SourceStatus.NOT_APPLICABLE: "-",
    SourceStatus.NOT_QUERIED_PRIVATE: "private",
    SourceStatus.NOT_CONFIGURED: "no key",
    SourceStatus.QUOTA_EXHAUSTED: "quota",
    SourceStatus.RATE_LIMITED: "rate limited",
    SourceStatus.AUTH_FAILED: "auth failed",
    SourceStatus.TIMEOUT: "timeout",
    SourceStatus.ERROR: "error",
    SourceStatus.CIRCUIT_OPEN: "circuit open",
    SourceStatus.PENDING: "pending",
}
_FAILED_STYLE = "red"
# Layout arithmetic: verdict, score and conf columns with their gaps; the type column; the indent
# of the reason under an indicator.
_GAP = 2
_FIXED_COLUMNS = len("suspicious") + len("score") + len("conf") + 3 * _GAP
_TYPE_COLUMN = len("sha256")
_INDENT = 2
_SEPARATOR = " · "


def skipped_line(item: Rejected) -> str:
    """'skipped CANDIDATE: REASON' as rich markup, safe to print."""
    return f"skipped {escape(one_line(item.candidate))}: {escape(one_line(item.reason))}"


def short_reason(result: SourceResult) -> str:
    """A failed source's message without the source's own name, cut to MAX_REASON characters."""
    message = one_line(result.message or "")
    words = message.split(" ")
    name = result.source.casefold()
    # "AlienVault OTX answered HTTP 503", "virustotal: circuit open…": the column says who.
    for count in (2, 1):
        joined = "".join(ch for ch in " ".join(words[:count]).casefold() if ch.isalnum())
        if len(words) > count and joined.endswith(name):
            message = " ".join(words[count:])
            break
    mark = _STATUS_MARKS[result.status]
    if message.casefold().startswith(mark):  # "circuit open after…" under "circuit open"
        message = message[len(mark) :].lstrip(" :;,-")
    if result.status is SourceStatus.QUOTA_EXHAUSTED and result.reset_at is not None:
        message = f"resets {result.reset_at:%Y-%m-%d %H:%M} UTC"
    return message if len(message) <= MAX_REASON else message[: MAX_REASON - 1] + "…"


def source_fact(result: SourceResult) -> str:
    """What one source said, in a word or two: "9/93", "4 pulses", "100%", "US AS14061"."""
    mark = _STATUS_MARKS[result.status]
    if result.status is SourceStatus.OK:
        if result.detections is not None:
            return f"{result.detections.malicious}/{result.detections.total}"
        if result.pulse_count is not None:
            return plural(result.pulse_count, "pulse")
        if result.abuse is not None:
            return f"{result.abuse.confidence}%"
        if result.geo is not None and (result.geo.country or result.geo.asn):
            where = (result.geo.country, f"AS{result.geo.asn}" if result.geo.asn else "")
            return " ".join(p for p in where if p)
    if result.status.failed and result.message:
        return f"{mark}: {short_reason(result)}"
    return mark


def _source_order(analysis: Analysis, enrichment: Enrichment) -> list[str]:
    return [
        *(n for n in analysis.providers if n in enrichment.sources),
        *(n for n in enrichment.sources if n not in analysis.providers),
    ]


def sources_line(analysis: Analysis, enrichment: Enrichment, room: int = 0) -> Text:
    """Every consulted source in a few words; failures in red with their reason.

    With ``room``, lines break between sources rather than inside one ("IPinfo US AS14061").
    """
    results = [enrichment.sources[n] for n in _source_order(analysis, enrichment)]
    shown = [r for r in results if r.status is not SourceStatus.NOT_APPLICABLE]
    statuses = {r.status for r in shown}
    if statuses == {SourceStatus.NOT_QUERIED_PRIVATE}:
        return Text()  # the reason already says "not queried: private address"
    if statuses == {SourceStatus.NOT_CONFIGURED}:
        return Text("no source configured")
    line, used = Text(), 0
    for result in shown:
        token = one_line(f"{short_name(result.source)} {source_fact(result)}")
        if used and room and used + len(_SEPARATOR) + len(token) > room:
            line.append("\n")
            used = 0
        elif used:
            line.append(_SEPARATOR)
            used += len(_SEPARATOR)
        line.append(token, style=_FAILED_STYLE if result.status.failed else "")
        used += len(token)
    return line


def _source_cell(result: SourceResult | None) -> Text:
    if result is None:
        return Text("")
    return Text(one_line(source_fact(result)), style=_FAILED_STYLE if result.status.failed else "")


def _verdict_cells(enrichment: Enrichment) -> list[RenderableType]:
    verdict = enrichment.verdict
    return [
        Text(verdict.label.value, style=VERDICT_STYLES[verdict.label]),
        str(verdict.score),
        str(verdict.confidence),
    ]


def _why(analysis: Analysis, enrichment: Enrichment, room: int | None) -> Text:
    """The top reason, then (dim, on its own line) what each source said unless room is None."""
    reasons = enrichment.verdict.reasons
    why = Text(one_line(reasons[0]) if reasons else "")
    line = Text() if room is None else sources_line(analysis, enrichment, room)
    if line:
        start = len(why) + 1 if why else 0
        if why:
            why.append("\n")
        why.append_text(line)
        why.stylize("dim", start)
    return why


def terminal_table(title: str | None = None) -> Table:
    """An empty table in the CLI's style: a rule under the header, no borders, two-space gaps."""
    return Table(
        title=escape(title) if title else None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )


def analysis_table(
    analysis: Analysis,
    *,
    title: str | None = None,
    width: int = FILE_WIDTH,
    wide: bool = False,
) -> Table:
    """The analysis as a rich Table laid out for ``width`` columns (see the module docstring).

    Print it with a console that wide (``console.print(table, width=...)`` for --wide).
    """
    analysis = for_people(analysis)
    stacked = not wide and width < COLUMNS_WIDTH
    own_sources = not wide and width >= SOURCES_COLUMN_WIDTH
    table = terminal_table(title)
    # Short columns never wrap; an indicator folds (a URL has no spaces), text wraps at words.
    # The rooms are the widths rich gives the text columns here, so sources wrap between words.
    indicator_width, sources_width = max(24, width // 4), width // 5
    if stacked:
        table.add_column("indicator / why", overflow="fold")
        room = width - _FIXED_COLUMNS - _INDENT
    else:
        table.add_column("indicator", overflow="fold", max_width=indicator_width)
        table.add_column("type", no_wrap=True)
        room = width - _FIXED_COLUMNS - indicator_width - _TYPE_COLUMN - 2 * _GAP
    table.add_column("verdict", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("conf", justify="right", no_wrap=True)
    if wide:
        for name in analysis.providers:
            table.add_column(short_name(name), overflow="fold", max_width=24)
    elif own_sources:
        table.add_column("sources", overflow="fold", max_width=sources_width)
    if not stacked:
        table.add_column("why", overflow="fold")
    for enrichment in analysis.enrichments:
        if stacked:
            # The indicator, with its reason and sources indented below it.
            value = Text(one_line(enrichment.indicator.value), style="bold")
            why = _why(analysis, enrichment, room)
            cell = Group(value, Padding(why, (0, 0, 0, _INDENT))) if why else value
            table.add_row(cell, *_verdict_cells(enrichment))
            continue
        row: list[RenderableType] = [
            Text(one_line(enrichment.indicator.value)),
            enrichment.indicator.type.value,
            *_verdict_cells(enrichment),
        ]
        if wide:
            row += [_source_cell(enrichment.sources.get(n)) for n in analysis.providers]
            row.append(Text("\n".join(f"- {one_line(r)}" for r in enrichment.verdict.reasons)))
        elif own_sources:
            row.append(sources_line(analysis, enrichment, sources_width))
            row.append(_why(analysis, enrichment, None))
        else:
            row.append(_why(analysis, enrichment, room))
        table.add_row(*row)
    return table


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


def table_width(width: int, wide: bool) -> int:
    """The width to lay the table out in: the given one, or at least WIDE_WIDTH for --wide."""
    return max(width, WIDE_WIDTH) if wide else width


def render_table(analysis: Analysis, *, width: int = FILE_WIDTH, wide: bool = False) -> str:
    """The table as plain text, laid out for ``width`` columns (at least WIDE_WIDTH if wide)."""
    width = table_width(width, wide)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(analysis_table(analysis, width=width, wide=wide))
    console.print(summary_line(analysis))
    for item in analysis.rejected:
        console.print(skipped_line(item))
    return buffer.getvalue()
