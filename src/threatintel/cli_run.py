"""Running the engine for a command and showing its answer: the progress bar, quota-wait
lines, circuit notes, and the report printed, written to --output or saved under REPORTS_DIR.

analyze, demo, batch, interactive and cache warm all run through ``run_engine``. Nothing heavy
is imported at module level (the engine, rich, the renderers load in the functions): cli.py
imports this module only when a command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from threatintel._process import settle as settle_process
from threatintel._visible import visible
from threatintel.cli import EXIT_FAILURE, err, fail, stdout_console
from threatintel.cli_options import FILE_FORMATS, OutputFormat
from threatintel.cli_support import TextInput, escape, quota_wait_line

if TYPE_CHECKING:
    from rich.progress import Progress

    from threatintel.engine import Engine, ResultHook
    from threatintel.intake import Intake
    from threatintel.models import Analysis, Enrichment
    from threatintel.quota import QuotaWait
    from threatintel.settings import Settings

_T = TypeVar("_T")


def _progress(intake: Intake) -> tuple[Progress | None, Callable[[Enrichment], None] | None]:
    """A bar counting enrichments against the indicators found so far: the input is read as
    the lookups go, so the total grows until the reading ends (parsing it first to count
    would read it twice)."""
    if not err.is_terminal:
        return None, None
    from rich.progress import (  # lazily: see the module docstring
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
        # Known up front only without text: a handful spares the import of aiohttp (SMALL_RUN).
        indicators=len(values) if text is None else None,
    )


def run_stream(
    settings: Settings,
    text: TextInput,
    providers: list[str] | None,
    each: ResultHook,
) -> int:
    """Every enrichment of ``text`` to ``each`` as it completes, none kept (memory stays flat
    however big the input); the number of indicators. NoIndicators, from the engine's
    stream, when the text holds none."""

    async def consume(engine: Engine, intake: Intake, hook: ResultHook | None) -> int:
        count = 0
        async for enrichment in engine.stream(text=text, providers=providers, intake=intake):
            each(enrichment)
            if hook is not None:
                hook(enrichment)
            count += 1
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
    indicators: int | None = None,
) -> _T:
    """``work`` on an engine of its own, with a progress bar when ``many`` (one indicator given
    alone needs none), quota waits on stderr, and a note on any circuit left open.
    ``indicators``: how many the run looks up, when known before it starts (the HTTP client
    is chosen by it: ``wiring.build_client``)."""
    import asyncio  # lazily: see the module docstring

    from threatintel.engine import Engine
    from threatintel.resilience import BreakerState
    from threatintel.wiring import build_client

    notice = QuotaWaitNotice()

    async def run() -> _T:
        client = build_client(settings, trust_env=trust_env, indicators=indicators)
        async with (
            client,
            Engine(
                settings, client=client, include_raw=include_raw, on_quota_wait=notice
            ) as engine,
        ):
            settle_process()  # start-up is over: see _process
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
