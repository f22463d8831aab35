"""The batch progress display, driven by a real job run and seen through rich's test console."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

from rich.console import Console

from threatintel.engine import Engine
from threatintel.jobs import Job, JobState, MemoryJobStore
from threatintel.jobs.runner import JobRunner
from threatintel.models import Enrichment
from threatintel.progress import BatchProgress, provider_paces

VALUES = [f"site{i}.example.com" for i in range(6)] + ["45.142.212.61", "45.142.212.62"]


def frame_counts(text: str) -> list[int]:
    """The done counts of every frame the display drew, in order."""
    return [int(done) for done in re.findall(r"(\d+)/8\b", text)]


async def test_counts_advance_as_results_are_stored(make_engine: Callable[..., Engine]) -> None:
    """Each stored result moves the bar and the verdict and cache counts under it."""
    engine = make_engine()
    store = MemoryJobStore()
    runner = JobRunner(engine, store)
    job = await runner.create("iocs.txt", providers=["otx", "abuseipdb"])
    await runner.ingest(job.id, VALUES)
    job = await store.get(job.id)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    progress = BatchProgress(console, job, auto_refresh=False)
    frames: list[str] = []

    def advance(enrichment: Enrichment) -> None:
        progress.advance(enrichment)
        progress.refresh()
        frames.append(screen.getvalue())

    runner.on_result = advance
    with progress:
        done = await runner.process(job.id)
    assert done.state is JobState.DONE
    counts = [frame_counts(frame)[-1] for frame in frames]
    assert counts == list(range(1, 9))  # one step per stored indicator
    last = frames[-1]
    assert sum(progress.verdicts.values()) == 8
    line = progress.counts_line()
    assert line.startswith("malicious ") and " · cache 0 · " in line
    assert line.split(" · ")[0] in last  # drawn under the bar


async def test_cache_hits_are_counted(make_engine: Callable[..., Engine]) -> None:
    """A second job over the same indicators is answered from the cache, and says so."""
    engine = make_engine()
    store = MemoryJobStore()
    for _ in range(2):
        runner = JobRunner(engine, store)
        job = await runner.create("again", providers=["otx"])
        await runner.ingest(job.id, VALUES)
        console = Console(file=io.StringIO(), force_terminal=True, width=80)
        progress = BatchProgress(console, await store.get(job.id), auto_refresh=False)
        runner.on_result = progress.advance
        await runner.process(job.id)
    assert progress.cache_hits == 8


def test_eta_counts_the_slowest_providers_pace(make_engine: Callable[..., Engine]) -> None:
    """VirusTotal at 4/min with 212 lookups left bounds the ETA at about 53 minutes; a fast
    provider adds no line, and one with only a daily quota has no pace."""
    engine = make_engine(virustotal_rate_limit=4, otx_rate_limit=100_000)
    job = Job(
        "j", "x", (), JobState.RUNNING, 0.0, 0.0, total=300, done=88,
        types={"domain": 250, "md5": 50}, done_types={"domain": 88},
    )  # fmt: skip
    paces = provider_paces(engine, job, ["virustotal", "otx", "abuseipdb"])
    by_title = {pace.title: pace for pace in paces}
    assert by_title["VirusTotal"].line() == "VirusTotal 4/min: 212 left, about 53 min"
    assert "AbuseIPDB" not in by_title  # a daily quota runs out into gaps: no pace
    assert by_title["AlienVault OTX"].seconds() < 60  # fast: no line
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    progress = BatchProgress(console, job, paces=paces, auto_refresh=False, clock=lambda: 0.0)
    assert progress.lines()[1:] == ["VirusTotal 4/min: 212 left, about 53 min"]
    assert progress.eta() == 212 * 15
    assert progress.eta_text() == "ETA 53 min"
