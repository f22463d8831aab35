"""One suite for every job store backend: memory, SQLite and the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support import REDIS_URL, redis_key_prefix
from threatintel.indicators import parse_indicator
from threatintel.jobs import (
    JobState,
    JobStore,
    MemoryJobStore,
    ResultRow,
    SQLiteJobStore,
    UnknownJob,
    indicator_key,
)
from threatintel.models import (
    Enrichment,
    Indicator,
    SourceResult,
    SourceStatus,
    Verdict,
    VerdictLabel,
)

NOW = 1_700_000_000.0


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """Each backend in turn; Redis skips with a reason when no server runs."""
    if request.param == "memory":
        yield MemoryJobStore()
        return
    if request.param == "sqlite":
        sqlite = SQLiteJobStore(tmp_path / "jobs.sqlite3")
        yield sqlite
        await sqlite.aclose()
        return
    from threatintel.jobs.redis import RedisJobStore

    async with redis_key_prefix() as prefix:
        redis = RedisJobStore(REDIS_URL, prefix=prefix)
        yield redis
        await redis.aclose()


def ind(value: str) -> Indicator:
    return parse_indicator(value)


def enrichment(value: str, label: str = "harmless", **statuses: SourceStatus) -> Enrichment:
    sources = {
        name: SourceResult(source=name, status=status, raw={"echo": "secret"})
        for name, status in (statuses or {"otx": SourceStatus.OK}).items()
    }
    return Enrichment(
        indicator=ind(value),
        sources=sources,
        verdict=Verdict(label=VerdictLabel(label), score=0, confidence=0),
    )


async def test_append_dedupes_across_chunks_and_keeps_spellings(store: JobStore) -> None:
    """A repeated indicator joins no second chunk; its other spellings are kept with it."""
    job = await store.create("iocs.txt", providers=["otx"], now=NOW)
    first = await store.append(
        job.id,
        [(ind("evil.com"), "evil[.]com"), (ind("8.8.8.8"), "8.8.8.8")],
        lines_read=2,
        now=NOW,
    )
    second = await store.append(
        job.id,
        [(ind("evil.com"), "EVIL.com."), (ind("1.1.1.1"), "1[.]1.1.1")],
        lines_read=4,
        rejected=1,
        now=NOW + 1,
    )
    assert first == ["domain:evil.com", "ipv4:8.8.8.8"]
    assert second == ["ipv4:1.1.1.1"]
    got = await store.get(job.id)
    assert (got.total, got.chunks, got.lines_read, got.rejected) == (3, 2, 4, 1)
    assert got.types == {"domain": 1, "ipv4": 2}
    assert got.providers == ("otx",)
    entries = await store.entries(job.id, 0)
    assert [e.indicator.value for e in entries] == ["evil.com", "8.8.8.8"]
    assert entries[0].spellings == ("evil[.]com", "EVIL.com.")
    assert [e.indicator.value for e in await store.entries(job.id, 1)] == ["1.1.1.1"]


async def test_claims_hand_out_each_chunk_once_until_the_lease_ends(store: JobStore) -> None:
    """Two runners never hold one chunk; an expired lease, or release, frees it; done stays done."""
    job = await store.create("x", providers=[], now=NOW)
    await store.append(job.id, [(ind("a.com"), "a.com")], lines_read=1, now=NOW)
    await store.append(job.id, [(ind("b.com"), "b.com")], lines_read=2, now=NOW)
    assert await store.claim(job.id, "w1", now=NOW, lease=60) == 0
    assert await store.claim(job.id, "w2", now=NOW, lease=60) == 1
    assert await store.claim(job.id, "w3", now=NOW, lease=60) is None
    await store.complete(job.id, 1, now=NOW)
    assert await store.claim(job.id, "w3", now=NOW + 61, lease=60) == 0  # w1 died
    await store.release(job.id)
    assert await store.claim(job.id, "w4", now=NOW + 62, lease=60) == 0
    assert await store.claim(job.id, "w4", now=NOW + 1_000, lease=60) == 0
    got = await store.get(job.id)
    assert (got.chunks, got.chunks_done) == (2, 1)


async def test_a_renewed_lease_keeps_a_chunk_from_other_runners(store: JobStore) -> None:
    """Renewing extends a live chunk's lease past its first end; a done chunk stays done."""
    job = await store.create("x", providers=[], now=NOW)
    await store.append(job.id, [(ind("a.com"), "a.com")], lines_read=1, now=NOW)
    await store.append(job.id, [(ind("b.com"), "b.com")], lines_read=2, now=NOW)
    assert await store.claim(job.id, "w1", now=NOW, lease=60) == 0
    assert await store.claim(job.id, "w1", now=NOW, lease=60) == 1
    await store.complete(job.id, 1, now=NOW + 30)
    await store.renew(job.id, [0, 1], now=NOW + 40, lease=60)
    assert await store.claim(job.id, "w2", now=NOW + 90, lease=60) is None
    assert await store.claim(job.id, "w2", now=NOW + 101, lease=60) == 0  # renewals stopped
    assert (await store.get(job.id)).chunks_done == 1


async def test_rows_are_idempotent_and_counters_exact(store: JobStore) -> None:
    """Writing a row twice (a chunk re-run) or with a new verdict leaves exact counts."""
    job = await store.create("x", providers=[], now=NOW)
    await store.append(
        job.id, [(ind("a.com"), "a.com"), (ind("8.8.8.8"), "8.8.8.8")], lines_read=2, now=NOW
    )
    row = ResultRow.of(enrichment("a.com", "malicious"))
    await store.put(job.id, [row], now=NOW)
    await store.put(job.id, [row], now=NOW)
    got = await store.get(job.id)
    assert (got.done, got.verdicts, got.done_types) == (1, {"malicious": 1}, {"domain": 1})
    rows = [
        ResultRow.of(enrichment("a.com", "harmless")),
        ResultRow.of(enrichment("8.8.8.8", "suspicious")),
        ResultRow.of(enrichment("not-in-job.com")),
        ResultRow.of(enrichment("8.8.8.8", "harmless")),  # the same row twice in one write
    ]
    await store.put(job.id, rows, now=NOW)
    got = await store.get(job.id)
    assert (got.done, got.verdicts) == (2, {"harmless": 2})
    assert await store.answered(job.id, ["domain:a.com", "ipv4:9.9.9.9"]) == {"domain:a.com"}
    bodies = [Enrichment.model_validate_json(b) async for b in store.results(job.id)]
    assert [e.indicator.value for e in bodies] == ["a.com", "8.8.8.8"]  # manifest order
    assert all(s.raw is None for e in bodies for s in e.sources.values())  # no vendor bodies


async def test_gaps_follow_the_latest_row(store: JobStore) -> None:
    """A source that could not answer is a gap until a row where it answered replaces it."""
    job = await store.create("x", providers=[], now=NOW)
    await store.append(job.id, [(ind("a.com"), "a.com")], lines_read=1, now=NOW)
    missing = enrichment(
        "a.com",
        virustotal=SourceStatus.QUOTA_EXHAUSTED,
        otx=SourceStatus.OK,
        ipinfo=SourceStatus.TIMEOUT,
    )
    await store.put(job.id, [ResultRow.of(missing)], now=NOW)
    gaps = sorted([(g.key, g.provider, g.status) async for g in store.gaps(job.id)])
    assert gaps == [
        ("domain:a.com", "ipinfo", "timeout"),
        ("domain:a.com", "virustotal", "quota_exhausted"),
    ]
    assert (await store.get(job.id)).gaps == 2
    filled = enrichment("a.com", virustotal=SourceStatus.OK, ipinfo=SourceStatus.OK)
    await store.put(job.id, [ResultRow.of(filled)], now=NOW)
    assert [g async for g in store.gaps(job.id)] == []
    assert (await store.get(job.id)).gaps == 0


async def test_states_listing_and_retention(store: JobStore) -> None:
    """Finished jobs older than the retention go; running and recent ones stay; newest first."""
    old = await store.create("old", providers=[], now=NOW)
    busy = await store.create("busy", providers=[], now=NOW + 1)
    recent = await store.create("recent", providers=[], now=NOW + 2)
    await store.set_state(old.id, JobState.DONE, now=NOW)
    await store.set_state(busy.id, JobState.RUNNING, now=NOW)
    await store.set_state(recent.id, JobState.CANCELLED, now=NOW + 500, message="stopped")
    assert [j.input for j in await store.jobs()] == ["recent", "busy", "old"]
    assert await store.cleanup(now=NOW + 1_000, retention=600) == 1
    assert [j.input for j in await store.jobs()] == ["recent", "busy"]
    assert (await store.get(recent.id)).state is JobState.CANCELLED
    with pytest.raises(UnknownJob):
        await store.get(old.id)


async def test_seal_and_unknown_jobs(store: JobStore) -> None:
    """Sealing marks the input complete; every verb on a missing job is UnknownJob."""
    job = await store.create("x", providers=[], now=NOW)
    assert not (await store.get(job.id)).sealed
    await store.seal(job.id, now=NOW)
    assert (await store.get(job.id)).sealed
    with pytest.raises(UnknownJob):
        await store.append("nope", [(ind("a.com"), "a.com")], lines_read=1, now=NOW)
    with pytest.raises(UnknownJob):
        await store.set_state("nope", JobState.DONE, now=NOW)


async def test_sqlite_file_is_private(tmp_path: Path) -> None:
    """The job file names an incident's indicators: owner-only, in an owner-only directory."""
    store = SQLiteJobStore(tmp_path / "new" / "jobs.sqlite3")
    await store.create("x", providers=[], now=NOW)
    await store.aclose()
    assert stat.S_IMODE((tmp_path / "new" / "jobs.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_indicator_key_is_type_and_value() -> None:
    """Rows are keyed by the normalised indicator, whatever its spelling."""
    assert indicator_key(ind("hxxp://EVIL[.]com:80/x")) == indicator_key(ind("http://evil.com/x"))


async def test_a_jobs_options_are_kept_with_it(store: JobStore) -> None:
    """What a job was submitted with (format, output path) comes back on every read."""
    job = await store.create("x", providers=[], now=NOW, options={"format": "csv", "output": "/o"})
    plain = await store.create("y", providers=[], now=NOW)
    assert (await store.get(job.id)).options == {"format": "csv", "output": "/o"}
    assert (await store.get(plain.id)).options == {}


async def test_a_job_file_from_before_options_still_opens(tmp_path: Path) -> None:
    """A jobs file whose table has no options column gains it; its jobs read with none."""
    import sqlite3

    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, input TEXT NOT NULL,"
            " providers TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,"
            " updated_at REAL NOT NULL, sealed INTEGER NOT NULL DEFAULT 0,"
            " lines_read INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,"
            " message TEXT)"
        )
        conn.execute("INSERT INTO jobs VALUES ('old', 'x', '[]', 'done', 1, 1, 1, 0, 0, NULL)")
    store = SQLiteJobStore(path)
    try:
        assert (await store.get("old")).options == {}
        made = await store.create("y", providers=[], now=NOW, options={"format": "json"})
        assert (await store.get(made.id)).options == {"format": "json"}
    finally:
        await store.aclose()
