"""The options several commands share (analyze, demo, batch, jobs show): report format,
output path, --save, --wide, --include-private, --providers; and ``Command``, the command
class of every command that takes an argument.

A module of their own, importing nothing of ours, so that a command module (cli_sim, which
bench scripts import directly) can use them without importing cli.py, whose bottom imports the
command modules back.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core


class _Argument(typer.core.TyperArgument):
    """An argument that --help names by its metavar alone."""

    def display_type_rich(self, ctx: Any) -> str | None:  # Typer's vendored click.Context
        return None if self.metavar is not None else super().display_type_rich(ctx)


class Command(typer.core.TyperCommand):
    """Typer's command, whose --help shows an argument as its metavar (``INDICATOR``, ``FILE``)
    without the Python type Typer adds after it (``INDICATOR <list[str]>``): the metavar says
    what to give, the type says nothing to a user. Use as ``@app.command(cls=Command)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            # Typer builds its own argument objects and offers no hook for their class.
            if type(param) is typer.core.TyperArgument:
                param.__class__ = _Argument


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    markdown = "markdown"
    csv = "csv"
    html = "html"
    stix = "stix"
    misp = "misp"


#: Formats meant as files: without --output they are saved under REPORTS_DIR.
FILE_FORMATS = frozenset({OutputFormat.html, OutputFormat.stix, OutputFormat.misp})


OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", metavar="PATH", help="Write to this file ('-' for stdout)."),
]
SaveOption = Annotated[
    bool,
    typer.Option(
        "--save",
        help="Also keep a copy under REPORTS_DIR with a unique name (the report is still "
        "printed, or written to --output).",
    ),
]
WideOption = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="Table: one column per source and every reason, at least 160 columns wide.",
    ),
]
IncludePrivateOption = Annotated[
    bool,
    typer.Option(
        "--include-private",
        help="html/stix/misp: keep private addresses and internal names, which these formats "
        "(made for sharing) leave out by default.",
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        metavar="FORMAT",
        help="table, json, jsonl, markdown, csv, html, stix or misp (html/stix/misp are saved "
        "under REPORTS_DIR unless --output is given).",
    ),
]


ProvidersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--providers",
        "-p",
        metavar="NAME[,NAME]",
        # Not listed here: the names live in the provider registry, and reading it would load
        # every provider (and httpx) for each --help (issue 9, start-up).
        help="Sources to ask, by name, repeated or separated by commas (an unknown name is "
        "refused with the list of names). Default: all.",
    ),
]
