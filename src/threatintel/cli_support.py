"""What the CLI reads and the lines it prints, apart from the commands themselves.

Inputs and output paths are checked here (InputError: one line, exit code 2); the rest are pure
functions from events, settings and addresses to text, so they are tested without a terminal.
"""

from __future__ import annotations

import codecs
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit

from threatintel._visible import visible
from threatintel.errors import ThreatIntelError
from threatintel.quota.base import BLOCKED

if TYPE_CHECKING:
    from rich.console import Console

    from threatintel.engine import ProviderQuota
    from threatintel.quota import QuotaWait

MAX_INPUT_BYTES = 64 * 1024 * 1024
#: Input is read this much at a time; the first block is checked before any lookup.
BLOCK = 64 * 1024
#: Blocks read ahead of the engine (memory: READ_AHEAD × BLOCK).
READ_AHEAD = 4


class _LazyConsole:
    """Stands in for a rich Console and builds it on first use (see ``lazy_console``)."""

    __slots__ = ("_console", "_make")

    def __init__(self, make: Callable[[], Console]) -> None:
        self._make = make
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def _real(self) -> Console:
        if self._console is None:
            self._console = self._make()
        return self._console

    # Dunders bypass __getattr__; rich's Live (under Progress) enters its console on a real
    # terminal (not a dumb one), so the stand-in must pass the context manager through.
    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._real().__exit__(*exc_info)


def lazy_console(make: Callable[[], Console]) -> Console:
    """A module-level console (``err = lazy_console(...)``) that loads rich when it first prints.

    rich costs a noticeable share of a short run, and `threatintel version` and `--help` print
    nothing through it (issue 9, start-up; tests/test_lazy_imports.py). The console is also made
    later than at import, so it sees the terminal and COLUMNS of the run, not of the import.
    """
    return cast("Console", _LazyConsole(make))


def escape(markup: str) -> str:
    """rich's ``markup.escape``, loading rich only when something is printed through it."""
    from rich.markup import escape as rich_escape

    return rich_escape(markup)


class InputError(ThreatIntelError):
    """An input cannot be read or holds nothing, or an output path cannot be written."""


def stdin_unless_terminal(source: str | None, example: str) -> str:
    """FILE as given; left out, stdin when something is piped in. Left out on a terminal it is
    an InputError, not a silent wait for typing that a new user takes for a hang."""
    if source is not None:
        return source
    if sys.stdin is not None and sys.stdin.isatty():
        raise InputError(f"give a FILE, or pipe text in: cat iocs.txt | {example}")
    return "-"


#: Bytes found in text only by accident: the C0 controls but tab, newlines, form feed and ESC.
_CONTROL = bytes(sorted(set(range(32)) - {9, 10, 12, 13, 27})) + b"\x7f"
#: A first block with a larger share of them is binary (an executable, an archive): its junk
#: "indicators" would spend quota. A log with one stray NUL stays text.
BINARY_SHARE = 0.10


def input_problem(name: str, head: bytes) -> str | None:
    """Why an input whose first block is ``head`` is refused as not text, or None: one with
    NUL bytes and more than BINARY_SHARE of control bytes (a stray NUL is a separator).

    UTF-16 (a Windows export) is named as such, with the way to convert it: its every other
    byte is a NUL, so it would otherwise read as binary.
    """
    if 0 not in head:  # control bytes without a NUL: hostile text, shown escaped, not binary
        return None
    odd = len(head) - len(head.translate(None, _CONTROL))
    if odd <= len(head) * BINARY_SHARE:
        return None
    shown = visible(name)
    nuls = sorted((head[::2].count(0), head[1::2].count(0)))
    # UTF-16 of mostly ASCII: NULs on one side of each pair only (a binary has them on both).
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (nuls[1] > len(head) / 5 and nuls[0] <= 1):
        return f"{shown} looks like UTF-16 text: convert it first (iconv -f UTF-16 -t UTF-8)"
    return f"{shown} looks like a binary file, not text; extract its strings first"


def nul_note(name: str, head: bytes) -> str | None:
    """The one line saying that stray NUL bytes of a text input are read as separators."""
    count = head.count(0)
    if not count:
        return None
    what = "a NUL byte" if count == 1 else f"{count} NUL bytes"
    return f"note: {visible(name)} holds {what} near its start; read as separators"


def read_input(source: str) -> str:
    """Read a file, or stdin for '-'; refuse binary floods and empty inputs (InputError)."""
    text = TextInput.open(source)
    try:
        data = text.first + text.handle.read(MAX_INPUT_BYTES + 1 - len(text.first))
    except OSError as exc:
        raise InputError(f"cannot read {text.name}: {exc.strerror or 'I/O error'}") from None
    finally:
        text.close()
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(
            f"{text.name} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB; split it"
        )
    # A stray NUL is a separator, as the intake reads it (else it would end up inside a URL).
    return data.decode("utf-8", errors="replace").replace("\0", " ")


class TextInput:
    """A file, or stdin for '-', read as text a block at a time.

        text = TextInput.open(path)   # InputError now: missing, a directory, binary, empty
        await engine.analyze(values, text=text)   # the rest is read as the engine asks

    The first block is read and checked at once, so a bad input is refused before any lookup
    spends quota. The rest is read by a daemon thread a few blocks ahead (a slow pipe or a
    terminal does not stall the lookups, and Ctrl-C does not wait for stdin).
    """

    def __init__(self, handle: BinaryIO, name: str, first: bytes, *, owned: bool) -> None:
        self.handle = handle
        self.name = name
        self.first = first
        self._owned = owned

    @classmethod
    def open(cls, source: str) -> TextInput:
        if source == "-":
            if sys.stdin is None:  # started with stdin closed (`<&-`)
                raise InputError("cannot read stdin: it is closed")
            handle: BinaryIO = sys.stdin.buffer
            name, owned = "stdin", False
        else:
            path = Path(source)
            if path.is_dir():
                raise InputError(f"cannot read {source}: it is a directory")
            # Opened as it is, not only if it is a regular file: /dev/stdin and the pipes of a
            # shell's <(command) are valid inputs too.
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                raise InputError(f"cannot read {source}: no such file") from None
            except OSError as exc:
                raise InputError(f"cannot read {source}: {exc.strerror or 'I/O error'}") from None
            name, owned = source, True
        text = cls(handle, name, b"", owned=owned)
        try:
            text.first = handle.read(BLOCK)
        except OSError as exc:
            text.close()
            raise InputError(f"cannot read {name}: {exc.strerror or 'I/O error'}") from None
        problem = text._problem()
        if problem:
            text.close()
            raise InputError(problem)
        return text

    def _problem(self) -> str | None:
        problem = input_problem(self.name, self.first)
        if problem:
            return problem
        note = nul_note(self.name, self.first)
        if note:
            sys.stderr.write(note + "\n")
        if len(self.first) < BLOCK and not self.first.decode("utf-8", "replace").strip():
            return f"{self.name} is empty" if not self.first else f"{self.name} holds only blanks"
        return None

    def close(self) -> None:
        if self._owned:
            self.handle.close()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[str]:
        import asyncio  # here: `version` and `--help` import this module too (issue 9, start-up)

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        loop = asyncio.get_running_loop()
        blocks: asyncio.Queue[bytes | OSError] = asyncio.Queue()
        room = threading.Semaphore(READ_AHEAD)

        def pump() -> None:
            try:
                while True:
                    room.acquire()
                    try:
                        block: bytes | OSError = self.handle.read(BLOCK)
                    except (OSError, ValueError) as exc:  # ValueError: closed under us
                        block = exc if isinstance(exc, OSError) else b""
                    loop.call_soon_threadsafe(blocks.put_nowait, block)
                    if not isinstance(block, bytes) or not block:
                        return
            except RuntimeError:  # the loop closed: nobody reads any more
                return

        try:
            yield decoder.decode(self.first)
            if len(self.first) == BLOCK:
                threading.Thread(target=pump, name="threatintel-input", daemon=True).start()
                while True:
                    block = await blocks.get()
                    room.release()
                    if isinstance(block, OSError):
                        reason = block.strerror or "I/O error"
                        raise InputError(f"cannot read {self.name}: {reason}")
                    if not block:
                        break
                    yield decoder.decode(block)
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        finally:
            self.close()


def check_output(output: Path | None) -> None:
    """Refuse an --output path that cannot be written before any lookup spends quota."""
    if output is None or str(output) == "-":
        return
    if output.is_dir():
        raise InputError(f"cannot write {output}: it is a directory")
    reason = _unwritable(output)
    if reason:
        raise InputError(f"cannot write {output}: {reason}")


def check_reports_dir(directory: Path) -> None:
    """Refuse a REPORTS_DIR that cannot take a report (--save, html/stix/misp) before any lookup
    spends quota: found only after the lookups, the failure lost the report."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"cannot save under REPORTS_DIR={directory}: it is not a directory")
    try:
        # Created now rather than probed: the report would create it anyway.
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason: str | None = exc.strerror or "I/O error"
    else:
        reason = _unwritable(directory / ".threatintel-write-probe")
    if reason:
        raise InputError(f"cannot save under REPORTS_DIR={directory}: {reason}")


def _unwritable(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (its missing folders created), or None."""
    # The folders that do not exist yet are created when the report is written.
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        if path.exists():
            with path.open("ab"):  # opening to append changes nothing
                pass
        elif existing == path.parent:
            # Only creating the file says for sure (root passes permission checks, yet /proc
            # and read-only mounts refuse); the probe is removed again.
            with path.open("xb"):
                pass
            path.unlink()
        elif not os.access(existing, os.W_OK):
            raise PermissionError(13, os.strerror(13))
    except OSError as exc:
        return exc.strerror or "I/O error"
    return None


_WINDOW_UNITS = {"minute": "min", "hour": "hour", "day": "day", "month": "month"}


def duration(seconds: float) -> str:
    """A wait as a person reads it: 52s, 4m 10s, 3h 05m."""
    whole = max(1, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def quota_wait_line(event: QuotaWait) -> str:
    """The one line printed when a lookup starts waiting noticeably for quota."""
    waiting = f"{event.provider}: waiting {duration(event.seconds)}"
    if event.window == BLOCKED or event.limit is None:
        return f"{waiting}: it refused {event.key_fingerprint} with 429 (too many requests)"
    per = _WINDOW_UNITS.get(event.window, event.window)
    what = (
        "for a rate-limit slot"
        if event.window in ("minute", "hour")
        else (f"for its {event.window} quota to reset")
    )
    if event.setting_name is None:
        return f"{waiting} {what} (limit {event.limit}/{per})"
    return (
        f"{waiting} {what} ({event.setting_name}={event.limit}/{per}; set it higher for a paid key)"
    )


#: What an unset optional setting means, for `threatintel config`.
_UNSET = {
    "REDIS_URL": "(not set: cache and quotas stay on this machine)",
    "MAX_QUOTA_WAIT": "(not set: as long as the minute/hour windows need)",
}
#: Per-provider settings that are unset by default (<NAME>_CACHE_TTL): named by suffix, so a
#: fifth provider's read the same without a list of vendors here.
_UNSET_SUFFIXES = {"_CACHE_TTL": "(not set: CACHE_TTL applies)"}


def config_value(name: str, value: Any) -> str:
    """A setting as the README writes it: true/false, 10 not 10.0, lists comma-separated."""
    if value is None or value == [] or value == ():
        suffix = next((s for s in _UNSET_SUFFIXES if name.endswith(s)), None)
        return _UNSET.get(name) or _UNSET_SUFFIXES.get(suffix or "", "(not set)")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(config_value(name, v) for v in value)
    if isinstance(value, Path) and not value.is_absolute() and value.parts[:1] != ("..",):
        return f"./{value}"
    return str(value)


def config_lines(shown: Mapping[str, Any]) -> list[str]:
    """One ``NAME = value`` line per setting; SCORING as one line per SCORING__FIELD."""
    lines = []
    for name, value in shown.items():
        if isinstance(value, dict):
            lines += [f"{name}__{k.upper()} = {config_value(k, v)}" for k, v in value.items()]
        else:
            lines.append(f"{name} = {config_value(name, value)}")
    return lines


def iso_utc(epoch: float | None) -> str | None:
    """An instant as the JSON reports write it (Pydantic's ISO 8601 with ``Z``), or None."""
    if not epoch:
        return None
    from pydantic import TypeAdapter  # here: `version` and `--help` import this module too

    value: str = TypeAdapter(datetime).dump_python(datetime.fromtimestamp(epoch, UTC), mode="json")
    return value


def simulator_banner(url: str, base_urls: Mapping[str, str], keyed: Mapping[str, bool]) -> str:
    """What `threatintel simulate` prints: where it listens and the variables to paste.

    ``keyed`` says per vendor whether the scenario accepts only its own keys (else any
    non-empty key works, and the banner suggests ``sim``).
    """
    lines = [
        "threatintel simulator: fake VirusTotal, OTX, AbuseIPDB and IPinfo",
        f"on {url}. Its answers are made up. Ctrl-C stops it.",
        "To point threatintel at it, paste:",
        "",
        *(f"export {name.upper()}_BASE_URL={base}" for name, base in base_urls.items()),
    ]
    open_vendors = [name for name in base_urls if not keyed.get(name)]
    if open_vendors:
        # One line per key: one for all four is wider than an 80-column terminal.
        lines.append("# any non-empty key is accepted:")
        lines += [f"export {name.upper()}_API_KEY=sim" for name in open_vendors]
    lines += [
        f"# {name.upper()}_API_KEY: this scenario accepts only the keys it lists"
        for name in base_urls
        if keyed.get(name)
    ]
    return "\n".join(lines) + "\n\n"


def quota_json(report: list[ProviderQuota]) -> list[dict[str, Any]]:
    """`threatintel quota --json`: times as the JSON reports write them."""
    return [
        {
            "provider": q.provider,
            "configured": q.configured,
            "circuit": q.breaker.value,
            "shared_store_reachable": not q.degraded,
            "keys": [
                {
                    "key": k.key,
                    "blocked_until": iso_utc(k.blocked_until),
                    "windows": [
                        {
                            "window": w.window,
                            "limit": w.limit,
                            "used": w.used,
                            "remaining": w.remaining,
                            "resets_at": iso_utc(w.reset_at),
                            "limit_from": w.source,
                        }
                        for w in k.windows
                    ],
                }
                for k in q.keys
            ],
        }
        for q in report
    ]


def endpoints_note(endpoints: dict[str, str]) -> str:
    """One line naming the *_BASE_URL variables that point away from the vendors, grouped by
    where they point, or "" when none does: a run must not talk to another host unnoticed."""
    by_origin: dict[str, list[str]] = {}
    for name, url in endpoints.items():
        parts = urlsplit(url)
        by_origin.setdefault(visible(f"{parts.scheme}://{parts.netloc}"), []).append(name)
    groups = [
        f"{', '.join(names)} {'point' if len(names) > 1 else 'points'} at {origin}"
        for origin, names in by_origin.items()
    ]
    return f"note: {'; '.join(groups)} (not the vendors' own addresses)" if groups else ""
