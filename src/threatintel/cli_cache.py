"""`threatintel cache warm | stats | clear`: fill the cache ahead of time, see it, empty it.

The stores do the work (``threatintel.cache.admin``); this module reads options, asks before
deleting on a terminal and prints. Heavy modules load inside the commands: the CLI imports this
one for `--help` too (tests/test_lazy_imports.py).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Final

import typer

from threatintel._wording import plural
from threatintel.cli_options import Command

if TYPE_CHECKING:
    from threatintel.cache import Cache, CacheStats
    from threatintel.models import Enrichment
    from threatintel.settings import Settings

cache_app = typer.Typer(
    name="cache",
    help="Fill, inspect or empty the cache of answers.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

#: Units an --older-than value may end with, in seconds.
DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def register(app: typer.Typer) -> None:
    """Add the `cache` command group to ``app``."""
    app.add_typer(cache_app, name="cache")


def parse_duration(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m``, ``90s`` or ``2w``; ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"--older-than {text!r}: give a number and a unit, like 7d, 12h or 30m")
    return float(match.group(1)) * DURATION_UNITS[match.group(2).lower()]


class WarmTally:
    """What `cache warm` prints, counted one enrichment at a time (none of them kept)."""

    def __init__(self) -> None:
        self.indicators = self.fetched = self.cached = 0
        self.failed: Counter[str] = Counter()

    def add(self, enrichment: Enrichment) -> None:
        self.indicators += 1
        for result in enrichment.sources.values():
            if result.cached:
                self.cached += 1
            elif result.status.answered:
                self.fetched += 1
            elif result.status.failed:
                self.failed[f"{result.source} {result.status.value}"] += 1

    def line(self) -> str:
        """One line: indicators, lookups made, answers already cached, lookups that failed."""
        line = (
            f"{plural(self.indicators, 'indicator')}: {plural(self.fetched, 'answer')} looked"
            f" up, {self.cached} already cached, {sum(self.failed.values())} failed"
        )
        if self.failed:
            line += " (" + ", ".join(f"{what} {n}" for what, n in self.failed.most_common()) + ")"
        return line


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float | None) -> str:
    """``3d``, ``5h``, ``12m``, ``40s`` (the largest whole unit), ``-`` for no age."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def stats_json(stats: CacheStats, now: float) -> dict[str, object]:
    return {
        "where": stats.where,
        "file_bytes": stats.file_bytes,
        "entries": stats.entries,
        "value_bytes": stats.value_bytes,
        "counting_since": stats.counting_since,
        "providers": [
            {
                "provider": p.provider,
                "entries": p.entries,
                "value_bytes": p.value_bytes,
                "hits": p.hits,
                "misses": p.misses,
                "hit_rate": p.hit_rate,
                "oldest_age": None if p.oldest is None else round(now - p.oldest, 3),
                "newest_age": None if p.newest is None else round(now - p.newest, 3),
            }
            for p in stats.providers
        ],
    }


def _no_shared_cache(settings: Settings) -> str | None:
    """Why there is nothing to show or clear (a memory cache, no SQLite file yet), or None."""
    from threatintel.cache import SQLITE_FILENAME

    backend = settings.resolved_cache_backend
    if settings.cache_ttl == 0:
        return "CACHE_TTL=0: caching is off, nothing is stored"
    if backend == "memory":
        return "CACHE_BACKEND=memory: each process keeps its own cache and drops it on exit"
    path = settings.cache_dir / SQLITE_FILENAME
    if backend == "sqlite" and not path.exists():
        return f"no cache yet: {path} is made by the first lookup"
    return None


def _open(settings: Settings) -> Cache:
    from threatintel.clock import SystemClock
    from threatintel.wiring import build_cache

    return build_cache(settings, SystemClock())


def _check_provider(name: str | None) -> str | None:
    from threatintel.cli import fail
    from threatintel.providers import PROVIDERS

    if name is None:
        return None
    if name.strip().lower() not in PROVIDERS:
        fail(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
    return name.strip().lower()


def _title(name: str) -> str:
    from threatintel.providers import PROVIDERS

    return PROVIDERS[name].title


ProviderOption = Annotated[
    str | None,
    typer.Option("--provider", metavar="NAME", help="Only this provider's answers (e.g. otx)."),
]


@cache_app.command("warm", cls=Command)
def warm(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="FILE", help="A file of indicators or free text; '-' or none: stdin."
        ),
    ] = None,
    providers: Annotated[
        list[str] | None,
        typer.Option("--providers", "-p", metavar="NAMES", help="Only these (comma-separated)."),
    ] = None,
) -> None:
    """Look up FILE's indicators to fill the cache.

    Later runs answer them from the cache.
    Prints one line: indicators, lookups made, answers already cached, lookups that failed.
    """
    from threatintel.cli import err, errors_as_exit_codes, fail, load_settings
    from threatintel.cli_run import run_stream
    from threatintel.cli_support import TextInput, stdin_unless_terminal

    selected = [p.strip() for item in providers or [] for p in item.split(",") if p.strip()]
    with errors_as_exit_codes():
        # Read as the lookups go, no enrichment kept: memory stays flat for a feed dump.
        text = TextInput.open(stdin_unless_terminal(source, "threatintel cache warm"))
    settings = load_settings()
    if settings.cache_ttl == 0:
        fail("CACHE_TTL=0 turns the cache off: there is nothing to warm")
    if settings.resolved_cache_backend == "memory":
        err.print("note: CACHE_BACKEND=memory: the answers are gone when this command exits")
    tally = WarmTally()
    with errors_as_exit_codes():
        run_stream(settings, text, selected or None, tally.add)
    sys.stdout.write(tally.line() + "\n")


@cache_app.command("stats")
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show entries, size, hit rate and ages per provider.

    Hit rates count every lookup of every threatintel process using this cache.
    """
    import asyncio

    from rich.markup import escape

    from threatintel.cli import EXIT_FAILURE, err, errors_as_exit_codes, fail, load_settings
    from threatintel.cli import stdout_console as console
    from threatintel.errors import CacheError
    from threatintel.reports.text import terminal_table

    settings = load_settings()
    if (reason := _no_shared_cache(settings)) is not None:
        err.print(reason)
        return

    async def read() -> CacheStats:
        from threatintel.cache import as_cache_admin

        async with _open(settings) as cache:
            admin = as_cache_admin(cache)
            assert admin is not None  # every backend is one
            return await admin.stats()

    with errors_as_exit_codes():
        try:
            found = asyncio.run(read())
        except CacheError as exc:
            fail(str(exc), EXIT_FAILURE)
    now = datetime.now(UTC).timestamp()
    if as_json:
        sys.stdout.write(json.dumps(stats_json(found, now), indent=2) + "\n")
        return
    size = f" ({human_bytes(found.file_bytes)} on disk)" if found.file_bytes is not None else ""
    screen = console()
    # A line of its own, not the table's title: a long path would wrap the title to pieces.
    screen.print(escape(f"cache: {found.where}{size}"), soft_wrap=True)
    table = terminal_table()
    for name in ("provider", "entries", "size", "hit rate", "oldest", "newest"):
        table.add_column(name, justify="left" if name == "provider" else "right", no_wrap=True)
    for p in found.providers:
        rate = "-" if p.hit_rate is None else f"{p.hit_rate:.0%} of {p.hits + p.misses}"
        oldest = None if p.oldest is None else now - p.oldest
        newest = None if p.newest is None else now - p.newest
        row = [p.provider, str(p.entries), human_bytes(p.value_bytes), rate]
        table.add_row(*row, human_age(oldest), human_age(newest))
    table.add_row("total", str(found.entries), human_bytes(found.value_bytes), "", "", "")
    screen.print(table)
    if found.counting_since is not None:
        err.print(f"hit rate: lookups answered from the cache since {_when(found.counting_since)}")


@cache_app.command("clear")
def clear(
    provider: ProviderOption = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", metavar="AGE", help="Only answers stored longer ago (7d, 12h, 30m)."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove cached answers (all, one provider's, or older ones).

    Asks first on a terminal unless --yes. The next lookups ask the services again.
    """
    import asyncio

    from threatintel.cli import EXIT_FAILURE, err, errors_as_exit_codes, fail, load_settings
    from threatintel.errors import CacheError

    name = _check_provider(provider)
    try:
        age = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        fail(str(exc))
    settings = load_settings()
    if (reason := _no_shared_cache(settings)) is not None:
        err.print(f"nothing to clear: {reason}")
        return
    what = f"{_title(name)}'s cached answers" if name else "every cached answer"
    if older_than is not None:
        what += f" stored over {older_than.strip()} ago"
    if not yes and sys.stdin.isatty() and not typer.confirm(f"Remove {what}?", default=False):
        err.print("nothing removed")
        return

    async def remove() -> tuple[str, int]:
        from threatintel.cache import as_cache_admin

        async with _open(settings) as cache:
            admin = as_cache_admin(cache)
            assert admin is not None  # every backend is one
            return admin.label, await admin.remove(provider=name, older_than=age)

    with errors_as_exit_codes():
        try:
            where, removed = asyncio.run(remove())
        except CacheError as exc:
            fail(str(exc), EXIT_FAILURE)
    sys.stdout.write(f"removed {plural(removed, 'entry', 'entries')} ({what}) from {where}\n")
