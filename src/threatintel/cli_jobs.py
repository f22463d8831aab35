"""`threatintel batch` and `threatintel jobs`: resumable batch jobs from the command line.

    threatintel batch iocs.txt --format jsonl -o out.jsonl     # prints "job <ID>" first
    threatintel batch --resume <ID> --format jsonl -o out.jsonl
    threatintel jobs                                           # id, input, state, counts
    threatintel jobs show <ID> --format html -o report.html

Thin on purpose: the job store, the runner, gap filling and the report assembly live in
``threatintel.jobs``; this module parses options, wires the display and maps errors. Registered
from cli.py by ``register(app)``; heavy modules load inside the commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer

from threatintel._visible import visible
from threatintel.cli import (
    EXIT_INTERRUPTED,
    err,
    errors_as_exit_codes,
    fail,
    load_settings,
    stdout_console,
)
from threatintel.cli_options import (
    Command,
    IncludePrivateOption,
    OutputFormat,
    OutputOption,
    ProvidersOption,
    WideOption,
)
from threatintel.cli_support import escape

if TYPE_CHECKING:
    from threatintel.engine import Engine
    from threatintel.jobs import Job, JobStore
    from threatintel.jobs.runner import JobRunner
    from threatintel.models import Analysis, Enrichment
    from threatintel.progress import BatchProgress
    from threatintel.settings import Settings

T = TypeVar("T")

BatchFormatOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format",
        metavar="FORMAT",
        help="jsonl (the default: each enrichment written as it completes; at the end with "
        "REDIS_URL) or any report "
        "format, assembled from the job's stored results at the end. A resumed job keeps the "
        "format and --output it was started with unless given again.",
        show_default=False,
    ),
]


def resume_hint(job_id: str) -> str:
    return f"threatintel batch --resume {job_id}"


def open_store(settings: Settings) -> JobStore:
    """The job store beside the cache: Redis when REDIS_URL is set, else the SQLite file."""
    from threatintel.jobs import job_store_for

    return job_store_for(settings)


def job_report(settings: Settings, job_id: str) -> Analysis:
    """The job's stored results as one Analysis, ready for any report format."""
    from threatintel.jobs.runner import job_analysis

    async def assemble() -> Analysis:
        store = open_store(settings)
        try:
            return await job_analysis(store, job_id)
        finally:
            await store.aclose()

    return _run(assemble())


class JsonlOutput:
    """JSON Lines appended as results are stored; (re)started from the store's rows, so a
    resumed job's file holds every indicator exactly once whatever the last run left in it."""

    def __init__(self, output: Path | None) -> None:
        self.path = None if output is None or str(output) == "-" else output
        self.handle: TextIO | None = None

    async def start(self, bodies: AsyncIterator[str]) -> None:
        if self.path is None:
            self.handle = sys.stdout
            async for body in bodies:
                self.handle.write(body + "\n")
            self.handle.flush()
            return
        # Written aside then moved over the old file: a kill meanwhile leaves the old one whole.
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            async for body in bodies:
                handle.write(body + "\n")
        os.replace(aside, self.path)
        self.handle = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def write(self, enrichment: Enrichment) -> None:
        if self.handle is not None:
            # One write per line, flushed: a kill leaves at most a cut last line, which the
            # next start rewrites from the store.
            self.handle.write(enrichment.model_dump_json() + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None and self.handle is not sys.stdout:
            self.handle.close()


def _lines(source: str) -> Iterator[str]:
    """The input's lines, read as they are needed (never the whole file at once)."""
    if source == "-":
        yield from sys.stdin
        return
    with open(source, encoding="utf-8", errors="replace", newline=None) as handle:
        yield from handle


def _check_input(source: str) -> str:
    """The input's description for the job (an absolute path, or "stdin"); one line if unusable."""
    if source == "-":
        return "stdin"
    path = Path(source)
    from threatintel.cli_support import BLOCK, input_problem, nul_note

    try:
        with path.open("rb") as handle:
            head = handle.read(BLOCK)
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror or 'I/O error'}")
    problem = input_problem(source, head)
    if problem:
        fail(problem)
    note = nul_note(source, head)
    if note:
        err.print(escape(note))
    return str(path.resolve())


def batch(
    file: Annotated[
        str | None,
        typer.Argument(metavar="FILE|-", help="A text file of indicators, or '-' for stdin."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", metavar="ID", help="Continue job ID where it stopped (and fill its gaps)."
        ),
    ] = None,
    fmt: BatchFormatOption = None,
    output: OutputOption = None,
    providers: ProvidersOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    wide: WideOption = False,
    include_private: IncludePrivateOption = False,
) -> None:
    """Analyse a large file as a resumable job.

    Prints the job's id first and checkpoints every BATCH_SIZE indicators; `--resume ID` goes
    on after Ctrl-C, a crash or kill -9 without asking again what was answered, and fills in
    the sources a spent quota left out.
    """
    from threatintel.cli_support import check_output

    if file is None and resume is None:
        fail("give a FILE (or '-' for stdin), or --resume ID")
    settings = load_settings()
    with errors_as_exit_codes():
        if resume is not None:
            fmt, output = _submitted_with(settings, resume, fmt, output)
        check_output(output)
    fmt = fmt or OutputFormat.jsonl
    description = _check_input(file) if file is not None else None
    names = [n for value in providers or [] for n in value.split(",") if n.strip()]
    state: dict[str, str] = {}
    with errors_as_exit_codes():
        try:
            job = _run(
                _batch(settings, state, file, description, resume, fmt, output, names, quiet)
            )
        except KeyboardInterrupt:
            if "id" not in state:
                raise
            # One line: the job is kept (cancelled, resumable) and how to go on with it.
            job_id = state["id"]
            err.print(f"interrupted; job {job_id} kept, resume it with: {resume_hint(job_id)}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if fmt is not OutputFormat.jsonl:
        from threatintel.cli_run import show  # lazily: it imports cli.py, which imports us

        analysis = job_report(settings, job.id)
        show(analysis, fmt, output, settings=settings, wide=wide, include_private=include_private)
    elif output is not None and str(output) != "-":
        err.print(f"wrote {escape(visible(output))}")


def _submitted_with(
    settings: Settings, job_id: str, fmt: OutputFormat | None, output: Path | None
) -> tuple[OutputFormat | None, Path | None]:
    """The format and output path job ``job_id`` was submitted with, where not given again;
    a new format does not inherit the old one's output path (it would overwrite it).
    UnknownJob if there is no such job."""

    async def read() -> Job:
        store = open_store(settings)
        try:
            return await store.get(job_id)
        finally:
            await store.aclose()

    options = _run(read()).options
    stored = OutputFormat(options["format"]) if "format" in options else None
    if output is None and "output" in options and fmt in (None, stored):
        output = Path(options["output"])
    return fmt or stored, output


def _options(fmt: OutputFormat, output: Path | None) -> dict[str, str]:
    """What a resume reuses: the format, and the output path (absolute: a resume may run
    from another directory)."""
    options = {"format": fmt.value}
    if output is not None:
        options["output"] = "-" if str(output) == "-" else str(output.absolute())
    return options


async def _batch(
    settings: Settings,
    state: dict[str, str],
    file: str | None,
    description: str | None,
    resume: str | None,
    fmt: OutputFormat,
    output: Path | None,
    names: list[str],
    quiet: bool,
) -> Job:
    from threatintel.cli_run import QuotaWaitNotice
    from threatintel.engine import Engine
    from threatintel.errors import NoIndicators
    from threatintel.jobs.queue import queue_url
    from threatintel.jobs.runner import JobRunner

    store = open_store(settings)
    notice = QuotaWaitNotice()
    try:
        async with Engine(settings, on_quota_wait=notice) as engine:
            from threatintel._process import settle

            settle()  # start-up is over: see _process
            if settings.job_retention:
                await store.cleanup(now=engine.clock.time(), retention=settings.job_retention)
            runner = JobRunner(engine, store)
            if resume is None:
                job = await runner.create(
                    description or "stdin", providers=names, options=_options(fmt, output)
                )
            else:
                job = await store.get(resume)
            state["id"] = job.id
            err.print(f"job {job.id}")
            lines = _resume_lines(job, file)
            if resume is not None and job.gaps:
                err.print(f"asking again the sources that missed {job.gaps} lookups")
                job = await runner.fill_gaps(job.id)
            writer = JsonlOutput(output) if fmt is OutputFormat.jsonl else None
            queued = queue_url(settings, store) is not None
            if writer is not None and not queued:
                await writer.start(store.results(job.id))
            try:
                with _display(engine, job, quiet) as progress:
                    notice.progress = progress.bar if progress is not None else None
                    if queued:
                        job = await _through_queue(settings, engine, store, job, lines, progress)
                        if writer is not None:  # the rows of every worker, in input order
                            await writer.start(store.results(job.id))
                    else:
                        _wire(runner, writer, progress)
                        job = await runner.process(job.id, lines, takeover=resume is not None)
            except NoIndicators:  # the runner decides it; a new job of nothing is not kept
                if resume is None:
                    await store.delete(job.id)
                raise
            finally:
                if writer is not None:
                    writer.close()
            await _report(store, job)
            return job
    finally:
        await store.aclose()


async def _through_queue(
    settings: Settings,
    engine: Engine,
    store: JobStore,
    job: Job,
    lines: Iterator[str] | None,
    progress: BatchProgress | None,
) -> Job:
    """Read the input into the shared store, queue the chunks not done, and follow the job
    until it ends. Unless EMBEDDED_WORKER is false, this process runs chunks of its own job
    (only its own: it takes them off the queue one at a time, never another job's) beside
    any workers. Stopped (Ctrl-C), the job is cancelled for every worker and stays resumable.
    """
    import asyncio

    from threatintel.jobs import JobState
    from threatintel.jobs.queue import ChunkRunner
    from threatintel.jobs.runner import JobRunner
    from threatintel.service import EMBEDDED_CONCURRENCY, Service

    # Not a queue worker: that would run anyone's chunks on this analyst's keys.
    quiet = settings.model_copy(update={"embedded_worker": False})
    async with Service(quiet, engine=engine, store=store) as service:
        assert service.queue is not None
        queue = service.queue
        if lines is not None:
            job = await JobRunner(engine, store).ingest(job.id, lines)
        # A resumed job may have been cancelled: its chunks run again.
        await store.set_state(job.id, JobState.RUNNING, now=engine.clock.time())
        await queue.enqueue(job.id, range(job.chunks))
        helper = None
        if settings.embedded_worker:
            chunks = ChunkRunner(JobRunner(engine, store))
            slots = asyncio.Semaphore(EMBEDDED_CONCURRENCY)

            async def one(seq: int) -> None:
                async with slots:
                    if not await queue.take(job.id, seq):
                        return  # a worker has it
                    try:
                        await chunks(job.id, seq)
                    except Exception as exc:  # back on the queue, for its retries there
                        err.print(f"chunk {seq} failed here ({type(exc).__name__}); queued again")
                        await queue.enqueue(job.id, [seq])

            helper = asyncio.gather(*(one(seq) for seq in range(job.chunks)))
        else:
            err.print(f"job {job.id}: {job.chunks} chunks queued for `threatintel worker`s")
        try:
            return await service.wait(
                job.id, on_progress=progress.follow if progress is not None else None
            )
        except BaseException:
            await asyncio.shield(service.cancel(job.id))
            raise
        finally:
            if helper is not None:
                helper.cancel()
                await asyncio.gather(helper, return_exceptions=True)


def _resume_lines(job: Job, file: str | None) -> Iterator[str] | None:
    """The input to read into the job: all of it when new, the rest of it when resumed."""
    if job.sealed:
        return None
    if file is not None:
        return _lines(file)
    if job.input != "stdin" and Path(job.input).is_file():
        return _lines(job.input)
    if job.lines_read:
        err.print(
            f"note: the rest of {escape(visible(job.input))} cannot be read again;"
            f" the job goes on with its first {job.lines_read} lines"
        )
    return iter(())


def _display(engine: Engine, job: Job, quiet: bool) -> AbstractContextManager[BatchProgress | None]:
    if quiet or not (err.is_terminal and sys.stdout.isatty()):
        return nullcontext(None)
    from threatintel.progress import BatchProgress, provider_paces

    names = engine.select(list(job.providers) or None)
    return BatchProgress(err, job, paces=provider_paces(engine, job, names))


def _wire(runner: JobRunner, writer: JsonlOutput | None, progress: BatchProgress | None) -> None:

    def stored(enrichment: Enrichment) -> None:
        if writer is not None:
            writer.write(enrichment)
        if progress is not None:
            progress.advance(enrichment)

    def ingested(keys: list[str]) -> None:
        if progress is not None:
            progress.add_input(keys)

    runner.on_result = stored
    runner.on_ingest = ingested


async def _report(store: JobStore, job: Job) -> None:
    """One line on how the job ended, and one per source that still owes answers."""
    from threatintel.jobs.runner import gap_summary

    err.print(f"job {job.id} {job.state.value}: {job.done}/{job.total} indicators")
    for gap in await gap_summary(store, job.id):
        when = f"; its quota resets {_when(gap.reset_at)}" if gap.reset_at else ""
        err.print(
            f"{gap.provider}: {gap.count} indicators still to ask{when}; then fill them with: "
            f"{resume_hint(job.id)}"
        )


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- threatintel jobs ------------------------------------------------------------------------

jobs_app = typer.Typer(
    help="List batch jobs, or show one's report.\n\n`threatintel jobs` lists id, state, "
    "done/total, verdicts, started, updated and input; `jobs show ID` renders a report; "
    "`jobs delete ID` deletes a job before JOB_RETENTION does.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@jobs_app.callback()
def jobs(ctx: typer.Context) -> None:
    """List batch jobs, newest first; finished ones are kept for JOB_RETENTION seconds."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from threatintel.progress import verdict_summary

    settings = load_settings()

    async def listing() -> list[Job]:
        store = open_store(settings)
        try:
            if settings.job_retention:
                await store.cleanup(
                    now=datetime.now(UTC).timestamp(), retention=settings.job_retention
                )
            return await store.jobs()
        finally:
            await store.aclose()

    with errors_as_exit_codes():
        found = _run(listing())
    if not found:
        err.print("no jobs")
        return
    # Laid out for 80 columns: every column keeps its width but the input's name, which is cut.
    table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, header_style="bold")
    for column in ("id", "state", "done", "verdicts", "started", "updated"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    table.add_column("input", no_wrap=True, overflow="ellipsis", ratio=1, min_width=5)
    owing = []
    for job in found:
        started = _short(job.created_at)
        updated = _short(job.updated_at)
        same_day = started[:5] == updated[:5]
        table.add_row(
            job.id,
            job.state.value,
            f"{job.done}/{job.total}",
            verdict_summary(job.verdicts),
            started,
            updated[6:] if same_day else updated,
            escape(visible(Path(job.input).name if job.input != "stdin" else "stdin")),
        )
        if job.gaps:
            owing.append(f"{job.id}: {job.gaps} lookups still to ask; {resume_hint(job.id)}")
    screen = stdout_console()
    screen.print(table)
    for line in owing:
        screen.print(escape(line))


def _short(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%m-%d %H:%M")


@jobs_app.command("show", cls=Command)
def jobs_show(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", metavar="FORMAT", help="Any report format (table by default)."),
    ] = OutputFormat.table,
    output: OutputOption = None,
    wide: WideOption = False,
    include_private: IncludePrivateOption = False,
) -> None:
    """Render a job's report from its stored results, in any format."""
    from threatintel.cli_run import show

    settings = load_settings()
    with errors_as_exit_codes():
        analysis = job_report(settings, job_id)
    show(analysis, fmt, output, settings=settings, wide=wide, include_private=include_private)


@jobs_app.command("delete", cls=Command)
def jobs_delete(job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a job and its results now (they name an incident's indicators)."""
    settings = load_settings()

    async def delete() -> None:
        store = open_store(settings)
        try:
            await store.get(job_id)  # UnknownJob: one line, exit 2
            await store.delete(job_id)
        finally:
            await store.aclose()

    with errors_as_exit_codes():
        _run(delete())
    err.print(f"deleted job {escape(visible(job_id))}")


def register(app: typer.Typer) -> None:
    """Add `batch` and `jobs` to the CLI."""
    app.command("batch", cls=Command)(batch)
    app.add_typer(jobs_app, name="jobs")


__all__ = ["JsonlOutput", "batch", "jobs_app", "register"]


def _run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, imported with the first command that needs it (start-up: --help has none)."""
    import asyncio

    return asyncio.run(main)
