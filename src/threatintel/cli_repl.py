"""`threatintel interactive`: a prompt for threat hunting with one engine for the whole session.

    threatintel> 8.8.8.8 hxxp://evil[.]com/x            the table, as `analyze` prints it
    threatintel> <paste a whole report>                  every indicator in it
    threatintel> providers virustotal,otx                ask only these from now on
    threatintel> json                                    the last result as JSON
    threatintel> extract <text>                          the indicators, without asking anyone

One ``Engine`` is opened at the start and closed at the end, so the cache, the quota budget,
the breakers and the HTTP connections carry over from one question to the next. Built on the
standard library (``input`` with ``readline`` for line editing and history): the session needs
no completion menus or syntax colouring that would justify prompt_toolkit as a dependency.

A multi-line paste is one question: on a terminal, the lines that arrive together (already
waiting when the first is read) are taken as one text; terminals with bracketed paste hand
them over as one line with newlines. History lives in ``<user state dir>/history`` (0600), and a
line holding a configured API key is never written to it (nor kept in the session's history).
"""

from __future__ import annotations

import os
import select
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Protocol, TextIO

import typer

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console

    from threatintel._keyguard import KeyGuard
    from threatintel.engine import Engine
    from threatintel.models import Analysis
    from threatintel.settings import Settings

PROMPT: Final = "threatintel> "
HISTORY_FILENAME: Final = "history"
#: Lines kept in the history file; older ones are dropped when a session starts.
HISTORY_LINES: Final = 1_000
COMMANDS: Final = ("help", "providers", "json", "extract", "quit", "exit")

HELP: Final = """\
Paste indicators or whole text (an email, a log, a report): every
indicator in it is looked up and shown as a table. Defanged is fine.

  providers              show which sources are asked
  providers otx,ipinfo   ask only these from now on (all: every one)
  json                   the last result as JSON
  extract TEXT           the indicators in TEXT, without asking anyone
  help                   this text
  quit, exit, Ctrl-D     leave

One engine serves the whole session: answers are cached, and quotas are
shared with every other threatintel run. Ctrl-C stops the current
lookup, not the session."""


def register(app: typer.Typer) -> None:
    """Add the `interactive` command to ``app``."""
    app.command("interactive")(interactive)


def history_path() -> Path:
    """``~/.local/state/threatintel/history`` on Linux ($XDG_STATE_HOME honoured)."""
    import platformdirs

    return Path(platformdirs.user_state_dir("threatintel", appauthor=False)) / HISTORY_FILENAME


def holds_key(guard: KeyGuard, line: str) -> bool:
    """Whether ``line`` holds a configured API key, or a piece of one."""
    return guard.scrub(line) != line or any(guard.match(word) for word in line.split())


def split_chunk(chunk: str) -> list[tuple[str, str]]:
    """The chunk as (command, argument) steps; text between commands is one ("", text) step.

    A line is a command when its first word is one of COMMANDS (lower case, as typed).
    """
    steps: list[tuple[str, str]] = []
    text: list[str] = []
    for line in chunk.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word in COMMANDS:
            if text:
                steps.append(("", "\n".join(text)))
                text = []
            steps.append((word, rest.strip()))
        elif line.strip():
            text.append(line)
    if text:
        steps.append(("", "\n".join(text)))
    return steps


class Session:
    """The REPL's state: one open engine, the provider selection and the last analysis."""

    def __init__(
        self,
        engine: Engine,
        runner: asyncio.Runner,
        console: Console,
        *,
        guard: KeyGuard,
    ) -> None:
        self.engine = engine
        self.runner = runner  # the session's event loop, kept between questions
        self.console = console
        self.guard = guard
        self.providers: list[str] | None = None
        self.last: Analysis | None = None

    def handle(self, chunk: str) -> bool:
        """Act on one chunk of input; False once the user asked to leave."""
        for command, argument in split_chunk(chunk):
            if command in ("quit", "exit"):
                return False
            try:
                self._step(command, argument)
            except KeyboardInterrupt:
                self.console.print("interrupted")
        return True

    def _step(self, command: str, argument: str) -> None:
        from rich.markup import escape

        from threatintel._visible import visible
        from threatintel.errors import RequestError

        try:
            if command == "help":
                self.console.print(escape(HELP))
            elif command == "providers":
                self._providers(argument)
            elif command == "json":
                self._json()
            elif command == "extract":
                self._extract(argument)
            else:
                self._analyse(argument)
        except RequestError as exc:
            self.console.print(f"[red]error:[/] {escape(visible(str(exc)))}")

    def _providers(self, argument: str) -> None:
        names = [n.strip() for n in argument.split(",") if n.strip()]
        if names == ["all"]:  # "providers all"
            self.providers = None
        elif names:
            self.providers = self.engine.select(names)  # UnknownProvider for a bad name
        chosen = self.engine.select(self.providers)
        self.console.print("asking: " + ", ".join(chosen))

    def _json(self) -> None:
        from threatintel.reports.jsondoc import render_json

        if self.last is None:
            self.console.print("nothing yet: paste an indicator first")
            return
        # Plain write: JSON is data, rich must not restyle or wrap it.
        self.console.file.write(render_json(self.last))

    def _extract(self, text: str) -> None:
        from rich.markup import escape

        from threatintel.indicators import extract
        from threatintel.reports.text import skipped_line

        extraction = self.guard.screen_extraction(extract(text))
        for indicator in extraction.indicators:
            self.console.print(escape(f"{indicator.type.value}\t{indicator.value}"))
        for item in extraction.rejected:
            self.console.print(escape(skipped_line(item)))
        if not extraction.indicators:
            self.console.print("no indicators found")

    def _analyse(self, text: str) -> None:
        from rich.markup import escape

        from threatintel.errors import NoIndicators
        from threatintel.reports.text import analysis_table, skipped_line, summary_line

        lines = text.splitlines()
        if len(lines) == 1:  # one value, defanged or a line holding several
            work = self.engine.analyze(lines, providers=self.providers)
        else:
            work = self.engine.analyze_text(text, providers=self.providers)
        try:
            analysis = self.runner.run(work)
        except NoIndicators as exc:
            for item in exc.rejected:
                self.console.print(escape(skipped_line(item)), soft_wrap=False)
            self.console.print("no indicators found (type help for what works)")
            return
        for item in analysis.rejected:
            self.console.print(escape(skipped_line(item)), soft_wrap=False)
        self.last = analysis
        width = self.console.width
        self.console.print(analysis_table(analysis, width=width))
        self.console.print(escape(summary_line(analysis)))


class StreamInput:
    """Chunks from a stream (a pipe, a test): one line each, None at the end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def read(self) -> str | None:
        line = self.stream.readline()
        return line if line else None


class TerminalInput:
    """Chunks typed or pasted at a terminal, with line editing and a private history file."""

    def __init__(self, history: Path | None, guard: KeyGuard) -> None:
        import readline  # line editing for input(); loaded only for a terminal

        self.readline = readline
        self.history = history
        self.guard = guard
        if history is not None:
            with suppress(OSError):
                for line in _read_history(history):
                    readline.add_history(line)

    def read(self) -> str | None:
        try:
            first = input(PROMPT)
        except EOFError:
            sys.stdout.write("\n")
            return None
        lines = [first]
        # The rest of a paste is already waiting: take it with the first line.
        while _pending(sys.stdin):
            try:
                lines.append(input())
            except EOFError:
                break
        self._remember(lines)
        return "\n".join(lines)

    def _remember(self, lines: list[str]) -> None:
        readline = self.readline
        # input() put each line into the session's history (1-based, newest last): a line
        # holding a key comes out again, from the newest back so positions stay valid.
        newest = readline.get_current_history_length()
        for position in range(newest, max(0, newest - len(lines)), -1):
            if holds_key(self.guard, readline.get_history_item(position) or ""):
                readline.remove_history_item(position - 1)  # 0-based here
        kept = [line for line in lines if line.strip() and not holds_key(self.guard, line)]
        if self.history is not None and kept:
            with suppress(OSError):  # a read-only home must not end the session
                _append_history(self.history, kept)


def _pending(stream: TextIO) -> bool:
    """Whether more input is already waiting on ``stream`` (a paste's next lines)."""
    try:
        ready, _, _ = select.select([stream], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(ready)


def _read_history(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) > HISTORY_LINES:
        lines = lines[-HISTORY_LINES:]
        _write_private(path, lines, append=False)
    return lines


def _append_history(path: Path, lines: list[str]) -> None:
    _write_private(path, lines, append=True)


def _write_private(path: Path, lines: list[str], *, append: bool) -> None:
    """Write history lines to ``path``, created 0600 in 0700 directories (threatintel._files)."""
    from threatintel._files import PRIVATE_FILE_MODE, make_private_dirs

    make_private_dirs(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    with open(fd, "a" if append else "w", encoding="utf-8") as handle:
        handle.writelines(line.replace("\n", " ") + "\n" for line in lines)


class ChunkSource(Protocol):
    def read(self) -> str | None:
        """The next chunk of input (one or several lines), None at the end."""
        ...


def run_session(
    settings: Settings,
    source: ChunkSource,
    console: Console,
    *,
    trust_env: bool = True,
    greet: bool = True,
) -> None:
    """Run the loop until quit or the end of input, with one engine for the whole session."""
    import asyncio

    from threatintel._keyguard import KeyGuard
    from threatintel.cli_run import QuotaWaitNotice
    from threatintel.engine import Engine

    guard = KeyGuard(settings)
    with asyncio.Runner() as runner:
        engine = Engine(settings, trust_env=trust_env, on_quota_wait=QuotaWaitNotice())
        session = Session(engine, runner, console, guard=guard)
        if greet:
            console.print("threatintel interactive: paste indicators or text; help, quit.")
        try:
            while True:
                try:
                    chunk = source.read()
                except KeyboardInterrupt:
                    console.print("")  # Ctrl-C at the prompt: a fresh prompt
                    continue
                if chunk is None or not session.handle(chunk):
                    break
        finally:
            runner.run(engine.aclose())


def interactive(
    no_history: Annotated[
        bool, typer.Option("--no-history", help="Keep no history file for this session.")
    ] = False,
) -> None:
    """Paste indicators at a prompt, see the table.

    One engine, cache and quota budget for the whole session; history in the user's state
    directory (never lines holding a configured API key). Type help at the prompt.
    """
    from threatintel._keyguard import KeyGuard
    from threatintel.cli import errors_as_exit_codes, load_settings, stdout_console

    settings = load_settings()
    console = stdout_console()
    source: ChunkSource
    if sys.stdin is not None and sys.stdin.isatty():
        history = None if no_history else history_path()
        source = TerminalInput(history, KeyGuard(settings))
    else:
        source = StreamInput(sys.stdin)
    with errors_as_exit_codes():
        run_session(settings, source, console, greet=isinstance(source, TerminalInput))
