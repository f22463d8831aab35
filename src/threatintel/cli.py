"""The `threatintel` command: a thin Typer adapter around the engine.

Exit codes: 0 done, 1 the output could not be delivered (the reader of a pipe went away, as in
`| head -1`, quietly; a write failing midway) or an unexpected failure, 2 bad invocation or no
usable input (empty input, an output path or REPORTS_DIR that cannot be written), 3 bad
configuration (an invalid variable, an unreadable ./.env or --env-file, a plain http:// endpoint
off loopback), 130 interrupted. Every failure is one line on stderr (a closed pipe none), never
a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

try:  # Typer ≥ 0.20 vendors Click; its usage errors are raised from there.
    from typer._click import exceptions as click_exceptions
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older Typer on real Click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]
    from click import get_current_context  # type: ignore[no-redef]

from threatintel._process import prepare as prepare_process
from threatintel._version import __version__
from threatintel._visible import visible
from threatintel.cli_options import (
    Command,
    FormatOption,
    IncludePrivateOption,
    OutputFormat,
    OutputOption,
    ProvidersOption,
    SaveOption,
    WideOption,
)
from threatintel.cli_support import (
    TextInput,
    check_output,
    check_reports_dir,
    config_lines,
    endpoints_note,
    escape,
    lazy_console,
    quota_json,
    read_input,
    stdin_unless_terminal,
)
from threatintel.errors import ConfigError, RequestError, ThreatIntelError
from threatintel.logs import configure as configure_logs
from threatintel.logs import configured as logs_configured

# The engine, settings, providers, reports, attribution, the key guard, asyncio, pydantic and
# rich are imported in the commands that use them, not here: `threatintel version` and `--help`
# must not pay for them (issue 9, start-up; tests/test_lazy_imports.py checks it).
if TYPE_CHECKING:
    from rich.console import Console

    from threatintel.engine import ProviderQuota
    from threatintel.settings import Settings

app = typer.Typer(
    name="threatintel",
    help="Find indicators of compromise and enrich them from VirusTotal, OTX, AbuseIPDB "
    "and IPinfo, with an explainable verdict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help wraps long text at any width instead of cutting it off with "…" in
    # narrow panels, and shows flags without a "<bool>" value placeholder.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
#: The width of piped or captured output when COLUMNS does not say: read later in a file, a
#: pager or a log, so rows stay whole.
PIPED_WIDTH = 160


def stdout_console(width: int | None = None) -> Console:
    """stdout as it is now: ``width``, else a terminal's width, else COLUMNS, else PIPED_WIDTH."""
    from rich.console import Console  # lazily: see the imports at the top

    console = Console(highlight=False, soft_wrap=False, width=width)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        console = Console(highlight=False, soft_wrap=False, width=width or PIPED_WIDTH)
    return console


def stderr_console() -> Console:
    """stderr; soft_wrap: an error stays on one line however narrow the terminal, for humans
    and for logs."""
    from rich.console import Console  # lazily: see the imports at the top

    return Console(stderr=True, highlight=False, soft_wrap=True)


# Made on first use, when rich is imported: version and --help print nothing through them.
out = lazy_console(stdout_console)
err = lazy_console(stderr_console)

EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 3, 130
MAX_INPUT_BYTES = 64 * 1024 * 1024


class ExtractFormat(StrEnum):
    text = "text"
    json = "json"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    # Messages quote rejected input and upstream text: shown (``_visible``), never obeyed.
    err.print(f"[red]error:[/] {escape(visible(message))}")
    raise typer.Exit(code)


@contextmanager
def errors_as_exit_codes() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except RequestError as exc:
        fail(str(exc), EXIT_USAGE)
    except ThreatIntelError as exc:
        fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def env_file_option() -> Path | None:
    """The global --env-file of the command being run, if one was given."""
    context = get_current_context(silent=True)
    chosen = (context.find_root().obj or {}).get("env_file") if context is not None else None
    return Path(chosen) if chosen is not None else None


def load_settings(*, announce: bool = True, **overrides: Any) -> Settings:
    """The settings, with the global --env-file; each endpoint that is not the vendor's is
    announced on stderr (``announce=False`` for the demo, which says it uses its simulator)."""
    from threatintel.settings import Settings  # lazily: see the imports at the top

    try:
        settings = Settings.load(env_file=env_file_option(), **overrides)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    if logs_configured():  # by _main: LOG_LEVEL / LOG_FORMAT may come from .env too
        configure_logs(settings, server=False)
    if announce and (line := endpoints_note(settings.custom_endpoints())):
        err.print(escape(line), soft_wrap=False)  # wrapped to the terminal, like "skipped"
    return settings


@app.command(cls=Command)
def analyze(
    values: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="INDICATOR", help="Indicators (defanged is fine): IP, domain, URL, hash."
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file", "-f", metavar="FILE", help="Read free text from FILE ('-' for stdin)."
        ),
    ] = None,
    fmt: FormatOption = OutputFormat.table,
    output: OutputOption = None,
    save_report: SaveOption = False,
    providers: ProvidersOption = None,
    wide: WideOption = False,
    include_private: IncludePrivateOption = False,
    raw: Annotated[bool, typer.Option("--raw", help="Include vendors' raw bodies (JSON).")] = False,
    wait_for_quota: Annotated[
        bool,
        typer.Option(
            "--wait-for-quota",
            help="When a daily/monthly quota is spent, wait for its reset instead of "
            "reporting quota_exhausted (also QUOTA_WAIT_FOR_RESET=true).",
        ),
    ] = False,
    deadline: Annotated[
        float | None,
        typer.Option(
            "--deadline",
            metavar="SECONDS",
            min=0,
            help="Answer within SECONDS: sources still waiting for quota or upstream then "
            "show as pending (ask again later; answers that arrived are cached).",
        ),
    ] = None,
) -> None:
    """Analyse indicators from arguments, a file or stdin.

    Give indicators as arguments, free text with --file FILE, or stdin with --file -.
    """
    from threatintel.cli_run import run_analysis, saves_report, show  # lazily: see the top

    values = list(values or [])
    if values == ["-"] and file is None:
        values, file = [], "-"
    if not values and file is None:
        fail("give indicators as arguments, or --file FILE, or --file - for stdin")
    # Unknown names are the engine's to refuse (UnknownProvider, exit 2), as for every door.
    selected = [p.strip() for item in providers or [] for p in item.split(",") if p.strip()]
    with errors_as_exit_codes():
        # Both before any lookup: a run must not spend quota on a report it cannot deliver.
        # The file's first block is checked now; the rest is read as the lookups go.
        text = TextInput.open(file) if file is not None else None
        check_output(output)
    settings = load_settings(**({"quota_wait_for_reset": True} if wait_for_quota else {}))
    with errors_as_exit_codes():
        if saves_report(fmt, output, save_report):
            check_reports_dir(settings.reports_dir)
        analysis = run_analysis(
            settings, values, text, selected or None, include_raw=raw, deadline=deadline
        )
    show(
        analysis,
        fmt,
        output,
        settings=settings,
        save_report=save_report,
        wide=wide,
        include_private=include_private,
    )


@app.command("extract", cls=Command)
def extract_command(
    source: Annotated[
        str | None,
        typer.Argument(metavar="FILE", help="A file of free text; '-' or none: stdin."),
    ] = None,
    fmt: Annotated[
        ExtractFormat, typer.Option("--format", metavar="text|json", help="Output format.")
    ] = ExtractFormat.text,
) -> None:
    """Print the indicators found in free text.

    Each one refanged and normalised; skipped candidates are listed on stderr with the reason.
    """
    # Our own API keys are never indicators, here as in analyze (a 64-hex key is a "SHA-256").
    from threatintel._keyguard import KeyGuard  # lazily: see the imports at the top
    from threatintel.indicators import extract
    from threatintel.reports.text import skipped_line

    guard = KeyGuard(load_settings(announce=False))
    with errors_as_exit_codes():
        text = read_input(stdin_unless_terminal(source, "threatintel extract"))
        extraction = guard.screen_extraction(extract(text))
    if not extraction.indicators:
        for item in extraction.rejected:
            err.print(skipped_line(item))
        fail("no indicators found in the input")
    if fmt is ExtractFormat.json:
        sys.stdout.write(extraction.model_dump_json(indent=2) + "\n")
        return
    for indicator in extraction.indicators:
        sys.stdout.write(f"{indicator.type.value}\t{indicator.value}\n")
    for item in extraction.rejected:
        err.print(skipped_line(item))


def _masked(value: Any) -> Any:
    from pydantic import SecretStr  # lazily: see the imports at the top

    from threatintel._redaction import fingerprint

    if isinstance(value, SecretStr):
        return fingerprint(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


@app.command()
def config(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the effective settings (keys as fingerprints).

    API keys appear only as fingerprints, REDIS_URL without its password.
    """
    from threatintel._redaction import redact_url  # lazily: see the imports at the top

    settings = load_settings()
    shown = {name.upper(): _masked(getattr(settings, name)) for name in type(settings).model_fields}
    shown["SCORING"] = settings.scoring.model_dump()
    if settings.redis_url is not None:
        # The host is useful to see; the password is not (a short hash could be guessed).
        shown["REDIS_URL"] = redact_url(settings.redis_url.get_secret_value())
    if as_json:
        sys.stdout.write(json.dumps(shown, indent=2, default=str) + "\n")
        return
    for line in config_lines(shown):
        out.print(escape(visible(line)))  # values may come from a hostile .env


def _count(number: int) -> str:
    """A quota count in at most 5 characters (15500, 300k, 9M): paid keys' limits are long;
    quota --json has them exactly."""
    if number < 100_000:
        return str(number)
    if number < 1_000_000:
        return f"{number // 1000}k"
    return f"{number // 1_000_000}M"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command()
def quota(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the quota left per provider and key.

    Keys appear as fingerprints; a circuit column appears when this process's breaker for a
    provider is not closed.
    """
    import asyncio  # lazily: see the imports at the top

    from threatintel.engine import Engine
    from threatintel.reports.text import terminal_table
    from threatintel.resilience import BreakerState

    settings = load_settings()

    async def read() -> list[ProviderQuota]:
        async with Engine(settings) as engine:
            return await engine.quota(learn=True)

    with errors_as_exit_codes():
        report = asyncio.run(read())
    if as_json:
        data = quota_json(report)
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    title = "quota (shared by every threatintel process using this cache/Redis)"
    if any(q.degraded for q in report):
        title = "quota (shared store UNREACHABLE: these are this machine's local numbers)"
    rows: list[list[str]] = []
    for q in report:
        if not q.configured:
            rows.append([q.provider, "not configured", *[""] * 6, q.breaker.value, ""])
            continue
        for k in q.keys:
            note = f"blocked until {_when(k.blocked_until)}" if k.blocked_until else ""
            for w in k.windows:
                counts = [_count(w.used), _count(w.limit), _count(w.remaining)]
                # Month-day and minute: a reset is at most a month away, and 80 columns must
                # hold where the limit came from too (quota --json has the full time).
                resets = "-" if w.reset_at is None else _when(w.reset_at)[5:16]
                row = [q.provider, k.key, w.window, *counts, w.source, resets]
                rows.append([*row, q.breaker.value, note])
    # Laid out like the analysis table, to fit 80 columns: a fresh process's breaker is always
    # closed and most keys carry no note, so those columns appear only when they say something.
    # "limit from": configured (a variable the user set), learned (the vendor said), default.
    columns = [
        "provider",
        "key",
        "window",
        "used",
        "limit",
        "left",
        "from",
        "resets UTC",
        "circuit",
        "note",
    ]
    shown = [
        i
        for i, name in enumerate(columns)
        if name not in ("circuit", "note")
        or any(row[i] not in ("", BreakerState.CLOSED.value) for row in rows)
    ]
    table = terminal_table(title)
    for i in shown:
        numeric = columns[i] in ("used", "limit", "left")
        table.add_column(columns[i], justify="right" if numeric else "left", no_wrap=i < 8)
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    stdout_console().print(table)
    if 8 in shown:
        err.print("circuit: this process's breaker (each keeps its own; budgets are shared)")


@app.command()
def version() -> None:
    """Print the version."""
    sys.stdout.write(f"threatintel {__version__}\n")


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"threatintel {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    context: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Read settings from this file instead of ./.env (which may not set endpoints, "
            "scope, stores or scoring); the environment still wins.",
        ),
    ] = None,
) -> None:
    """The options every command shares."""
    context.obj = {"env_file": env_file}


# Newer commands live in modules of their own, each adding itself here (issue 9); the
# simulator's first, where its commands were listed when they lived in this module.
from threatintel import (  # noqa: E402 - they use the helpers above
    cli_cache,
    cli_jobs,
    cli_repl,
    cli_server,
    cli_setup,
    cli_sim,
)

for _module in (cli_sim, cli_cache, cli_jobs, cli_repl, cli_setup, cli_server):
    _module.register(app)


def main() -> None:
    """Console entry point: usage errors become one line and exit code 2."""
    # httpx's command-line client left unimported, full collections rarer: this process's
    # settings only, never a program's that imports threatintel (issue 9; see _process).
    prepare_process()
    try:
        try:
            _main()
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
    except BrokenPipeError:
        # The reader went away (`threatintel extract big.txt | head -1`): stop quietly with
        # 1, as Python's docs advise (Note on SIGPIPE) and as Click does when a command's own
        # write hits it. stdout now points at /dev/null so the interpreter's final flush has
        # nothing to complain about.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILURE)


def _main() -> None:
    # Lines on stderr, at WARNING unless LOG_LEVEL is set; load_settings() looks again once
    # .env and the user's config file are read.
    configure_logs(None, server=False)
    try:
        code = app(standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        sys.stdout.write(exc.ctx.get_help() + "\n" if exc.ctx is not None else "")
        sys.exit(EXIT_USAGE)
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "threatintel"
        message = f"{exc.format_message()} (see '{command} --help')"
        err.print(f"[red]error:[/] {escape(visible(message))}")
        sys.exit(EXIT_USAGE)
    except click_exceptions.ClickException as exc:
        err.print(f"[red]error:[/] {escape(visible(exc.format_message()))}")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: still one line, and the type to report it by
        err.print(f"[red]error:[/] unexpected {type(exc).__name__}; please report it")
        logging.getLogger("threatintel").debug("unexpected error", exc_info=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)
