"""The batch progress display: done/total, verdicts, cache hits, rate, and an ETA that knows
about rate limits.

    progress = BatchProgress(console, job, paces=provider_paces(engine, job))
    with progress:
        ...  progress.advance(enrichment)  ...

Under the bar, one line per provider whose own pace bounds the run, e.g.
``VirusTotal 4/min: 212 left, about 53 min``: the lookups it still has to make (the job's
remaining indicators of the types it serves) divided by its per-minute limit. The ETA shown is
the larger of that bound and what the observed rate predicts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

if TYPE_CHECKING:
    from threatintel.engine import Engine
    from threatintel.jobs import Job
    from threatintel.models import Enrichment

#: A provider's line appears when its pace alone needs at least this many seconds.
SHOW_PACE_AFTER = 60.0
VERDICTS = ("malicious", "suspicious", "harmless", "unknown")


@dataclass(slots=True)
class Pace:
    """One provider's bound on the run: its per-minute limit and the lookups it has left."""

    title: str
    per_minute: float
    serves: frozenset[str]  # indicator types
    left: int

    def seconds(self) -> float:
        return self.left * 60.0 / self.per_minute

    def line(self) -> str:
        rate = f"{self.per_minute:g}/min"
        return f"{self.title} {rate}: {self.left} left, about {_minutes(self.seconds())}"


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5_400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3_600:.1f} h"


def provider_paces(engine: Engine, job: Job, names: Iterable[str]) -> list[Pace]:
    """The paces of the selected providers that have a per-minute or per-hour limit, read
    from each one's rate limiter (every key adds its own budget)."""
    remaining = {t: job.types.get(t, 0) - job.done_types.get(t, 0) for t in job.types}
    paces = []
    for name in names:
        provider = engine.providers[name]
        keys = engine.settings.api_keys(name)
        if provider.requires_key and not keys:
            continue
        windows = engine.pipelines[name].limiter.windows
        rates = [w.limit * 60.0 / w.seconds * max(1, len(keys)) for w in windows if w.sliding]
        if not rates:
            continue
        serves = frozenset(t.value for t in provider.supports)
        left = sum(count for t, count in remaining.items() if t in serves)
        paces.append(Pace(provider.title, min(rates), serves, left))
    return paces


class _Display(Progress):
    """A rich Progress with the verdict counts and the provider paces under the bar."""

    def __init__(
        self, lines: Callable[[], list[str]], console: Console, *, auto_refresh: bool = True
    ) -> None:
        self._lines = lines  # before Progress sets up, which may draw
        super().__init__(
            TextColumn("batch"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=console,
            transient=True,
            auto_refresh=auto_refresh,
        )

    def get_renderables(self) -> Iterable[RenderableType]:
        yield Group(self.make_tasks_table(self.tasks), *(Text(line) for line in self._lines()))


class BatchProgress:
    """Counts what a batch has stored and shows it (see the module docstring)."""

    def __init__(
        self,
        console: Console,
        job: Job,
        *,
        paces: list[Pace] | None = None,
        clock: Callable[[], float] = time.monotonic,
        auto_refresh: bool = True,
    ) -> None:
        self.total = job.total
        self.done = job.done
        self.verdicts: Counter[str] = Counter(job.verdicts)
        self.cache_hits = 0
        self.paces = paces or []
        self._clock = clock
        self._started = clock()
        self._this_run = 0
        #: The rich Progress drawing it (quota-wait lines print through its console).
        self.bar = _Display(self.lines, console, auto_refresh=auto_refresh)
        self._task = self.bar.add_task("batch", total=job.total or None, completed=job.done, eta="")

    def add_input(self, keys: Iterable[str]) -> None:
        """More input has been read: the new manifest keys (``type:value``)."""
        added = 0
        for key in keys:
            added += 1
            kind = key.partition(":")[0]
            for pace in self.paces:
                if kind in pace.serves:
                    pace.left += 1
        self.total += added
        self.bar.update(self._task, total=self.total)

    def advance(self, enrichment: Enrichment) -> None:
        self.done += 1
        self._this_run += 1
        self.verdicts[enrichment.verdict.label.value] += 1
        if any(source.cached for source in enrichment.sources.values()):
            self.cache_hits += 1
        for pace in self.paces:
            if enrichment.indicator.type.value in pace.serves:
                pace.left = max(0, pace.left - 1)
        self.bar.update(self._task, completed=self.done, eta=self.eta_text())

    def follow(self, job: Job) -> None:
        """Show ``job`` as its store reports it: its chunks run in other processes too."""
        self._this_run += max(0, job.done - self.done)
        self.done, self.total = job.done, job.total
        self.verdicts = Counter(job.verdicts)
        self.bar.update(
            self._task, total=self.total or None, completed=self.done, eta=self.eta_text()
        )

    def rate(self) -> float:
        """Indicators per second stored by this run so far."""
        elapsed = self._clock() - self._started
        return self._this_run / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left: the slower of the observed rate and the slowest provider's pace."""
        left = max(0, self.total - self.done)
        if not left:
            return 0.0
        bounds = [pace.seconds() for pace in self.paces]
        rate = self.rate()
        if rate > 0:
            bounds.append(left / rate)
        return max(bounds) if bounds else None

    def eta_text(self) -> str:
        eta = self.eta()
        return "" if eta is None else f"ETA {_minutes(eta)}" if eta else ""

    def counts_line(self) -> str:
        counts = " · ".join(f"{name} {self.verdicts.get(name, 0)}" for name in VERDICTS)
        return f"{counts} · cache {self.cache_hits} · {self.rate() * 60:.0f}/min"

    def lines(self) -> list[str]:
        slow = [p.line() for p in self.paces if p.seconds() >= SHOW_PACE_AFTER]
        return [self.counts_line(), *slow]

    def print(self, text: str) -> None:
        """A line above the bar (quota waits, notes)."""
        self.bar.console.print(text)

    def refresh(self) -> None:
        self.bar.refresh()

    def __enter__(self) -> BatchProgress:
        self.bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bar.stop()


def verdict_summary(verdicts: Mapping[str, int]) -> str:
    """``3m 1s 10h 2u``: a job's verdict counts in a few columns."""
    return " ".join(f"{verdicts.get(name, 0)}{name[0]}" for name in VERDICTS)
