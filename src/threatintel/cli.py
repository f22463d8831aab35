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
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

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
from threatintel.cli_support import (
    TextInput,
    check_output,
    check_reports_dir,
    config_lines,
    endpoints_note,
    escape,
    lazy_console,
    quota_json,
    quota_wait_line,
    read_input,
    simulator_banner,
    stdin_unless_terminal,
)
from threatintel.errors import ConfigError, RequestError, ThreatIntelError

# The engine, settings, providers, reports, attribution, the key guard, asyncio, pydantic and
# rich are imported in the commands that use them, not here: `threatintel version` and `--help`
# must not pay for them (issue 9, start-up; tests/test_lazy_imports.py checks it).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from threatintel.engine import Engine, ProviderQuota, ResultHook
    from threatintel.intake import Intake
    from threatintel.models import Analysis, Enrichment
    from threatintel.quota import QuotaWait
    from threatintel.settings import Settings

_T = TypeVar("_T")

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
    if announce and (line := endpoints_note(settings.custom_endpoints())):
        err.print(escape(line), soft_wrap=False)  # wrapped to the terminal, like "skipped"
    return settings


def _progress(intake: Intake) -> tuple[Progress | None, Callable[[Enrichment], None] | None]:
    """A bar counting enrichments against the indicators found so far: the input is read as
    the lookups go, so the total grows until the reading ends (parsing it first to count
    would read it twice)."""
    if not err.is_terminal:
        return None, None
    from rich.progress import (  # lazily: see the imports at the top
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("analysing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task("analyse", total=None)

    def advance(_: Enrichment) -> None:
        progress.update(task, advance=1, total=intake.counts.indicators)

    return progress, advance


class QuotaWaitNotice:
    """The CLI's QuotaWait subscriber: one line on stderr per wait episode.

    Printed through the progress bar's console while one is shown, so the line lands above the
    bar instead of through it.
    """

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress

    def __call__(self, event: QuotaWait) -> None:
        console = self.progress.console if self.progress is not None else err
        console.print(escape(quota_wait_line(event)))


def run_analysis(
    settings: Settings,
    values: list[str],
    text: str | TextInput | None,
    providers: list[str] | None,
    *,
    include_raw: bool = False,
    trust_env: bool = True,
    deadline: float | None = None,
) -> Analysis:
    """One engine call for the values and the text together: parsed once, deduplicated
    across both, the text read as the lookups go; ``deadline`` seconds at most."""

    async def collect(engine: Engine, intake: Intake, hook: ResultHook | None) -> Analysis:
        return await engine.analyze(
            values,
            text=text,
            providers=providers,
            on_result=hook,
            intake=intake,
            deadline=deadline,
        )

    return run_engine(
        settings,
        collect,
        many=text is not None or len(values) > 1,
        text=text,
        include_raw=include_raw,
        trust_env=trust_env,
    )


def run_stream(
    settings: Settings,
    text: TextInput,
    providers: list[str] | None,
    each: ResultHook,
) -> int:
    """Every enrichment of ``text`` to ``each`` as it completes, none kept (memory stays flat
    however big the input); the number of indicators. NoIndicators, as from analyze, when
    the text holds none."""
    from threatintel.errors import NoIndicators

    async def consume(engine: Engine, intake: Intake, hook: ResultHook | None) -> int:
        count = 0
        async for enrichment in engine.stream(text=text, providers=providers, intake=intake):
            each(enrichment)
            if hook is not None:
                hook(enrichment)
            count += 1
        if not intake.counts.indicators:
            raise NoIndicators(intake.rejected)
        return count

    return run_engine(settings, consume, many=True, text=text)


def run_engine(
    settings: Settings,
    work: Callable[[Engine, Intake, ResultHook | None], Awaitable[_T]],
    *,
    many: bool,
    text: str | TextInput | None,
    include_raw: bool = False,
    trust_env: bool = True,
) -> _T:
    """``work`` on an engine of its own, with a progress bar when ``many`` (one indicator given
    alone needs none), quota waits on stderr, and a note on any circuit left open."""
    import asyncio  # lazily: see the imports at the top

    from threatintel.engine import Engine
    from threatintel.resilience import BreakerState

    notice = QuotaWaitNotice()

    async def run() -> _T:
        async with Engine(
            settings, include_raw=include_raw, trust_env=trust_env, on_quota_wait=notice
        ) as engine:
            with engine.intake() as intake:
                progress, hook = _progress(intake) if many else (None, None)
                notice.progress = progress
                try:
                    if progress is not None:
                        progress.start()
                    result = await work(engine, intake, hook)
                finally:
                    if progress is not None:
                        progress.stop()
                    if isinstance(text, TextInput):
                        text.close()  # read to its end, or left early by an error
            for name, breaker in engine.breakers.items():
                if breaker.state is not BreakerState.CLOSED:
                    err.print(
                        f"note: {name} circuit {breaker.state.value} after repeated failures; "
                        f"calls resume in {breaker.retry_after:.0f}s"
                    )
            return result

    return asyncio.run(run())


def emit(text: str, output: Path | None) -> None:
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or 'I/O error'}", EXIT_FAILURE)
    err.print(f"wrote {escape(visible(output))}")


def saves_report(fmt: OutputFormat, output: Path | None, save_report: bool) -> bool:
    """Whether a report goes under REPORTS_DIR: --save, or a file format with no --output."""
    return save_report or (fmt in FILE_FORMATS and output is None)


def show(
    analysis: Analysis,
    fmt: OutputFormat,
    output: Path | None,
    *,
    settings: Settings,
    save_report: bool = False,
    title: str | None = None,
    wide: bool = False,
    include_private: bool = False,
) -> None:
    """Print the report (or write it to ``output``); with --save also keep a copy.

    html/stix/misp with neither --output nor --save are only saved: they are files by nature.
    """
    # Lazily (see the imports at the top); each renderer loads its own libraries (stix2, jinja2,
    # rich for the table).
    from threatintel.reports import render, save

    options: dict[str, Any] = {
        "include_private": include_private,
        "internal_domains": settings.internal_domains,
        "wide": wide,
    }
    if saves_report(fmt, output, save_report):
        try:
            path = save(analysis, fmt.value, settings.reports_dir, **options)
        except OSError as exc:
            fail(f"cannot write to {settings.reports_dir}: {exc.strerror or 'I/O error'}", 1)
        err.print(f"saved {escape(visible(path))}", soft_wrap=False)
        if not save_report and output is None:
            return
    if fmt is OutputFormat.table and output is None:
        from threatintel.reports.text import analysis_table, skipped_line, summary_line, table_width

        # Made now, not at import: COLUMNS may have been set since (CliRunner sets it per run).
        screen = stdout_console()
        if wide:  # as wide as the table needs, past the terminal's edge if need be
            screen = stdout_console(table_width(screen.width, wide))
        screen.print(analysis_table(analysis, title=title, width=screen.width, wide=wide))
        screen.print(escape(summary_line(analysis)))
        for item in analysis.rejected:
            err.print(skipped_line(item), soft_wrap=False)
        return
    emit(render(analysis, fmt.value, **options), output)


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


@app.command()
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


@app.command("extract")
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


#: The demo's simulator enforces no quotas, so neither does the demo's engine.
DEMO_LIMIT = 1_000_000


def simulator_settings(base_urls: dict[str, str], **overrides: Any) -> Settings:
    """Settings that point every provider at a simulator, with obviously fake keys.

    The cache stays in memory: a demo must not leave files in the user's directory, and a
    second run should ask the simulator again.
    """
    values: dict[str, Any] = {"cache_backend": "memory"}
    for name, url in base_urls.items():
        values[f"{name}_base_url"] = url
        values[f"{name}_api_key"] = f"simulated-{name}-key"
    from threatintel.providers import PROVIDERS  # lazily: see the imports at the top

    for cls in PROVIDERS.values():
        for window in (*cls.windows, *cls.anonymous_windows):
            values[window.setting] = DEMO_LIMIT
    return load_settings(announce=False, **(values | overrides))


@app.command()
def demo(
    fmt: FormatOption = OutputFormat.table,
    wide: WideOption = False,
    include_private: IncludePrivateOption = False,
    output: OutputOption = None,
    save_report: SaveOption = False,
) -> None:
    """Analyse a sample against the built-in simulator.

    No keys and no network: every answer comes from the simulator on 127.0.0.1.
    """
    from threatintel.simulator import SimulatorConfig, SimulatorServer, demo_sample
    from threatintel.simulator.config import DEMO_LATENCY

    with errors_as_exit_codes():
        check_output(output)
    config = SimulatorConfig.load(None)
    for name, vendor in config.vendors().items():
        # The demo shows the analysis, not quota handling: no windows, a realistic latency.
        vendor.windows = ()
        vendor.latency = DEMO_LATENCY.get(name, 0.05)
    err.print(
        "[bold]Demo:[/] every answer below comes from threatintel's built-in SIMULATOR of "
        "VirusTotal, OTX, AbuseIPDB and IPinfo on 127.0.0.1 - not from the real services.",
        soft_wrap=False,
    )
    with SimulatorServer(config) as sim, errors_as_exit_codes():
        settings = simulator_settings(sim.base_urls)
        if saves_report(fmt, output, save_report):
            check_reports_dir(settings.reports_dir)
        # The simulator is on loopback: a corporate HTTP(S)_PROXY must not capture its traffic.
        analysis = run_analysis(settings, [], demo_sample(), None, trust_env=False)
    show(
        analysis,
        fmt,
        output,
        settings=settings,
        save_report=save_report,
        title="threatintel demo (answers from the simulator)",
        wide=wide,
        include_private=include_private,
    )


@app.command()
def simulate(
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Loopback address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to listen on (0: any free port).")
    ] = 8900,
    scenario: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Scenario TOML file (truth per indicator)."),
    ] = None,
) -> None:
    """Run the simulator of the four services on loopback.

    It prints the *_BASE_URL and *_API_KEY variables to paste into a shell, then serves until
    Ctrl-C.
    """
    from threatintel.simulator import SimulatorConfig, SimulatorServer

    if not 0 <= port < 65536:
        fail(f"--port must be between 0 and 65535, not {port}")
    if scenario is not None and not scenario.is_file():
        fail(f"cannot read scenario {scenario}: no such file")
    try:
        sim_config = SimulatorConfig.load(scenario)
        server = SimulatorServer(sim_config, host=host, port=port).start()
    except (ValueError, OSError, RuntimeError) as exc:  # a bad scenario, host or busy port
        fail(f"cannot run the simulator on {host}:{port}: {exc}")
    try:
        keyed = {name: vendor.keys is not None for name, vendor in sim_config.vendors().items()}
        # Printed once it listens, so whoever reads it can use the URLs at once.
        sys.stdout.write(simulator_banner(server.url, server.base_urls, keyed))
        sys.stdout.flush()
        threading.Event().wait()  # serve until Ctrl-C
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a simulator is meant to stop: not an error
    finally:
        server.stop()


# Newer command groups live in modules of their own, each adding itself here (issue 9).
from threatintel import cli_cache, cli_jobs, cli_repl, cli_setup  # noqa: E402 - they use the helpers above

for _module in (cli_cache, cli_jobs, cli_repl, cli_setup):
    _module.register(app)


class VisibleFormatter(logging.Formatter):
    """Log lines on stderr quote store and upstream errors: their text is shown, never obeyed."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record), lines=True)


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
    handler = logging.StreamHandler()
    handler.setFormatter(VisibleFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
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
