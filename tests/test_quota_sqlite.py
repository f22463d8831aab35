"""The SQLite quota store: the memory store's answers, kept in a file every process shares.

Times are VirtualClock values or constants passed in, so nothing sleeps; files live in tmp_path.
The core scenarios run on both stores with the same expected Grants.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from test_quota import MIDNIGHT, NOON, SECRET
from threatintel._redaction import fingerprint
from threatintel.clock import VirtualClock
from threatintel.quota import (
    BLOCKED,
    Grant,
    MemoryQuotaStore,
    QuotaStore,
    QuotaStoreUnavailable,
    RateLimiter,
    Window,
    WindowUsage,
)
from threatintel.quota.sqlite import CLOCK_MARGIN, SQLiteQuotaStore

MINUTE_4 = [Window.per_minute(4)]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QuotaStore]:
    """The memory store, then a fresh SQLite file: each core scenario must go the same on both."""
    made: QuotaStore = (
        MemoryQuotaStore() if request.param == "memory" else SQLiteQuotaStore(tmp_path / "q.db")
    )
    yield made
    await made.aclose()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "quota.sqlite3"


def rows(path: Path, sql: str) -> int:
    """One number read straight from the file, as another process would see it."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# --- the same answers as the memory store ---------------------------------------------------


async def test_fifth_grant_waits_until_the_first_ages_out(store: QuotaStore) -> None:
    """With 4 per minute, the 5th request is told to wait exactly until the first is 60 s old."""
    for offset in (0, 10, 20, 30):
        assert await store.acquire("vt:a", MINUTE_4, NOON + offset) == Grant(True)
    assert await store.acquire("vt:a", MINUTE_4, NOON + 45) == Grant(False, wait=15.0)
    assert await store.acquire("vt:a", MINUTE_4, NOON + 60) == Grant(True)
    assert await store.acquire("vt:a", MINUTE_4, NOON + 60) == Grant(False, wait=10.0)
    assert await store.acquire("vt:b", MINUTE_4, NOON + 60) == Grant(True)


async def test_spent_day_is_exhausted_until_utc_midnight(store: QuotaStore) -> None:
    """A spent calendar day refuses with 'day' and the next 00:00 UTC, then grants at midnight."""
    windows = [Window.per_minute(4), Window.per_day(3), Window.per_month(100)]
    for hour in range(3):
        assert await store.acquire("vt:a", windows, NOON + hour * 3600) == Grant(True)
    late = NOON + 3 * 3600
    spent = Grant(False, wait=MIDNIGHT - late, exhausted="day", reset_at=MIDNIGHT)
    assert await store.acquire("vt:a", windows, late) == spent
    assert await store.acquire("vt:a", windows, MIDNIGHT) == Grant(True)


async def test_a_block_refuses_until_it_ends_and_only_grows(store: QuotaStore) -> None:
    """A block refuses as BLOCKED until its end, and a shorter later block does not lift it."""
    await store.block("vt:a", NOON + 30)
    await store.block("vt:a", NOON + 5)
    assert await store.blocked_until("vt:a", NOON) == NOON + 30
    assert await store.blocked_until("vt:b", NOON) is None
    blocked = Grant(False, wait=30.0, exhausted=BLOCKED, reset_at=NOON + 30)
    assert await store.acquire("vt:a", MINUTE_4, NOON) == blocked
    assert await store.acquire("vt:a", MINUTE_4, NOON + 30) == Grant(True)
    assert await store.blocked_until("vt:a", NOON + 30) is None


async def test_usage_reports_every_window(store: QuotaStore) -> None:
    """usage() counts live grants, with the oldest one's expiry or the next fixed boundary."""
    windows = [Window.per_minute(4), Window.per_hour(10), Window.per_day(500)]
    assert await store.usage("vt:a", windows, NOON) == [
        WindowUsage("minute", 4, 0, 4, None),
        WindowUsage("hour", 10, 0, 10, None),
        WindowUsage("day", 500, 0, 500, MIDNIGHT),
    ]
    for offset in (0, 30, 90):
        await store.acquire("vt:a", windows, NOON + offset)
    assert await store.usage("vt:a", windows, NOON + 100) == [
        WindowUsage("minute", 4, 1, 3, NOON + 150),
        WindowUsage("hour", 10, 3, 7, NOON + 3600),
        WindowUsage("day", 500, 3, 497, MIDNIGHT),
    ]


async def test_a_refused_grant_counts_in_no_window(store: QuotaStore) -> None:
    """A request refused by one window is counted in none of the others."""
    windows = [Window.per_minute(4), Window.per_day(10)]
    for _ in range(5):
        await store.acquire("vt:a", windows, NOON)
    usage = await store.usage("vt:a", windows, NOON)
    assert [(u.window, u.used, u.remaining) for u in usage] == [("minute", 4, 0), ("day", 4, 6)]
    day_first = [Window.per_minute(10), Window.per_day(2)]
    for _ in range(3):
        await store.acquire("vt:b", day_first, NOON)
    assert [u.used for u in await store.usage("vt:b", day_first, NOON)] == [2, 2]


async def test_a_lagging_clock_cannot_reuse_a_slot(store: QuotaStore) -> None:
    """A request stamped before the bucket's newest grant is judged at that newer time."""
    for now in (NOON,) * 4 + (NOON + 60,) * 4:
        assert (await store.acquire("vt:a", MINUTE_4, now)).granted
    assert await store.acquire("vt:a", MINUTE_4, NOON + 30) == Grant(False, wait=60.0)


async def test_random_histories_get_identical_answers(path: Path) -> None:
    """Hundreds of seeded random acquires, blocks and reads get equal answers from both stores."""
    rng = random.Random(20240310)
    windows = [
        Window.per_minute(4),
        Window.per_hour(12, seconds=900.0),
        Window.per_day(30, seconds=3600.0),
        Window.per_month(200),
    ]
    memory = MemoryQuotaStore()
    kinds: Counter[str] = Counter()
    async with SQLiteQuotaStore(path) as sqlite:
        now = NOON
        for _ in range(600):
            now += rng.choice([0.0, 0.0, 0.5, 3.0, 10.0, 20.0, 45.0, 60.0, 300.0])
            bucket = rng.choice(["vt:a", "vt:b"])
            roll = rng.random()
            if roll < 0.03:
                until = now + rng.choice([5.0, 120.0])
                await memory.block(bucket, until)
                await sqlite.block(bucket, until)
            elif roll < 0.15:
                assert await sqlite.usage(bucket, windows, now) == await memory.usage(
                    bucket, windows, now
                )
                assert await sqlite.blocked_until(bucket, now) == await memory.blocked_until(
                    bucket, now
                )
            else:
                grant = await memory.acquire(bucket, windows, now)
                assert await sqlite.acquire(bucket, windows, now) == grant
                kinds[("granted" if grant.granted else grant.exhausted) or "wait"] += 1
    # The history reached every kind of answer, so the equality above means something.
    assert set(kinds) == {"granted", "wait", "day", "month", BLOCKED}


def grant_totals(path: Path) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """(The kept per-window totals, the grants in the file), read as another process would."""
    conn = sqlite3.connect(path)
    try:
        kept = {(b, w): n for b, w, n in conn.execute("SELECT * FROM grant_rows") if n}
        actual = conn.execute("SELECT bucket, window_name, count(*) FROM grants GROUP BY 1, 2")
        return kept, {(b, w): n for b, w, n in actual}
    finally:
        conn.close()


async def test_kept_window_totals_match_the_grants(path: Path) -> None:
    """Per-window row totals stay equal to the grants in the file through grants, refunds and
    purges of expired rows."""
    rng = random.Random(7)
    windows = [Window.per_minute(4), Window.per_hour(30, seconds=900.0)]
    async with SQLiteQuotaStore(path, purge_every=7) as store:
        now = NOON
        for _ in range(400):
            now += rng.choice([0.0, 1.0, 15.0, 60.0, 200.0])
            bucket = rng.choice(["vt:a", "vt:b", "otx:c"])
            grant = await store.acquire(bucket, windows, now)
            if grant.granted and rng.random() < 0.2:
                await store.refund(bucket, windows, grant)
        kept, actual = grant_totals(path)
        assert kept == actual
        assert len(actual) >= 3  # several windows held rows to compare


async def test_a_file_from_before_the_totals_is_counted_once(path: Path) -> None:
    """A file whose grants were written before the per-window totals existed still refuses a
    full window: the totals are counted from its grants when it is opened."""
    async with SQLiteQuotaStore(path) as store:
        for offset in range(4):
            assert await store.acquire("vt:a", MINUTE_4, NOON + offset) == Grant(True)
    conn = sqlite3.connect(path)
    try:  # what an older version left: the grants, no totals
        conn.executescript(
            "DROP TRIGGER grant_added; DROP TRIGGER grant_removed; DROP TABLE grant_rows;"
        )
    finally:
        conn.close()
    async with SQLiteQuotaStore(path) as store:
        assert await store.acquire("vt:a", MINUTE_4, NOON + 10) == Grant(False, wait=50.0)
    assert grant_totals(path)[0] == {("vt:a", "minute"): 4}


# --- persistence and sharing ----------------------------------------------------------------


async def test_a_later_store_on_the_file_sees_earlier_grants(path: Path) -> None:
    """A second store on the same file (a later CLI run) sees the first one's grants and blocks."""
    windows = [Window.per_minute(4), Window.per_day(500)]
    async with SQLiteQuotaStore(path) as first:
        for offset in (0, 10, 20, 30):
            assert await first.acquire("vt:a", windows, NOON + offset) == Grant(True)
        await first.block("vt:b", NOON + 600)
    async with SQLiteQuotaStore(path) as later:
        assert await later.usage("vt:a", windows, NOON + 40) == [
            WindowUsage("minute", 4, 4, 0, NOON + 60),
            WindowUsage("day", 500, 4, 496, MIDNIGHT),
        ]
        assert await later.acquire("vt:a", windows, NOON + 40) == Grant(False, wait=20.0)
        assert await later.blocked_until("vt:b", NOON + 40) == NOON + 600


async def test_two_stores_on_one_file_grant_exactly_the_limit(path: Path) -> None:
    """Forty acquires at one instant, split over two stores on one file, give exactly 4 grants."""
    async with SQLiteQuotaStore(path) as one, SQLiteQuotaStore(path) as two:
        grants = await asyncio.gather(
            *((one, two)[i % 2].acquire("vt:a", MINUTE_4, NOON) for i in range(40))
        )
        assert Counter(grants) == {Grant(True): 4, Grant(False, wait=60.0): 36}
        assert (await two.usage("vt:a", MINUTE_4, NOON))[0].used == 4


# Each process opens the file, says it is ready, waits for "go" on stdin so that all of them
# contend at once, makes 200 acquires at the same instant and prints how many were granted.
_CHILD = """
import asyncio, sys
from threatintel.quota import Window
from threatintel.quota.sqlite import SQLiteQuotaStore

async def main() -> None:
    async with SQLiteQuotaStore(sys.argv[1]) as store:
        minute = [Window.per_minute(4)]
        await store.usage("vt:a", minute, 0.0)
        print("ready", flush=True)
        sys.stdin.readline()
        grants = [await store.acquire("vt:a", minute, float(sys.argv[2])) for _ in range(200)]
    print(sum(grant.granted for grant in grants))

asyncio.run(main())
"""


@pytest.mark.slow
def test_separate_processes_share_one_budget(path: Path) -> None:
    """Four real processes acquiring on one file at one instant get 4 grants between them."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), repr(NOON)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        granted = 0
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=20)
            assert child.returncode == 0, err
            granted += int(out)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert granted == 4


async def test_limiter_gives_three_keys_twelve_grants_a_minute(path: Path) -> None:
    """Three keys at 4/min on the file give 12 grants a minute, and a later run sees none left."""
    clock = VirtualClock(NOON)
    keys = ["a", "b", "c"]
    async with SQLiteQuotaStore(path) as store:
        rl = RateLimiter("virustotal", keys, MINUTE_4, store, clock)
        assert Counter([await rl.acquire() for _ in range(12)]) == {"a": 4, "b": 4, "c": 4}
        assert clock.time() == NOON
        assert Counter([await rl.acquire() for _ in range(12)]) == {"a": 4, "b": 4, "c": 4}
        assert clock.time() == NOON + 60
    async with SQLiteQuotaStore(path) as later:
        usage = await RateLimiter("virustotal", keys, MINUTE_4, later, clock).usage()
    assert [u.key for u in usage] == [fingerprint(key) for key in keys]
    assert [u.windows[0].remaining for u in usage] == [0, 0, 0]


async def test_the_file_is_created_in_wal_mode(path: Path) -> None:
    """The store creates missing parent directories and puts the file in WAL mode."""
    async with SQLiteQuotaStore(path) as store:
        await store.acquire("vt:a", MINUTE_4, NOON)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_old_rows_are_deleted(path: Path) -> None:
    """Expired grants and past counters leave the file, a used bucket's and an abandoned one's."""
    # A past scaled day's counter outlives its reset by CLOCK_MARGIN, which must be shorter.
    assert CLOCK_MARGIN < 600.0
    windows = [Window.per_minute(4), Window.per_day(100, seconds=600.0)]
    async with SQLiteQuotaStore(path) as store:
        await store.acquire("vt:old", windows, NOON)
        await store.block("vt:old", NOON + 1)
        for step in range(240):
            await store.acquire("vt:a", windows, NOON + 15.0 * step)
        # Live grants plus those within CLOCK_MARGIN of expiring, kept for lagging clocks.
        assert rows(path, "SELECT count(*) FROM grants WHERE bucket = 'vt:a'") <= 8
        assert rows(path, "SELECT count(*) FROM counters WHERE bucket = 'vt:a'") <= 2
    later = NOON + 2 * 86_400.0
    async with SQLiteQuotaStore(path) as store:
        await store.acquire("vt:a", windows, later)
    for table in ("grants", "counters", "blocks", "newest"):
        assert rows(path, f"SELECT count(*) FROM {table} WHERE bucket = 'vt:old'") == 0
    assert rows(path, "SELECT count(*) FROM grants") == 1


async def test_the_file_holds_key_fingerprints_never_the_key(path: Path) -> None:
    """Every bucket the limiter writes names the API key by fingerprint, and no byte shows it."""
    clock = VirtualClock(NOON)
    windows = [Window.per_minute(4), Window.per_day(500), Window.per_month(15_500)]
    async with SQLiteQuotaStore(path) as store:
        rl = RateLimiter("virustotal", [SECRET], windows, store, clock)
        await rl.acquire()
        await rl.penalize(SECRET, retry_after=1.0, long_window=False)
        assert SECRET not in repr(store)
    conn = sqlite3.connect(path)
    try:
        buckets = conn.execute(
            "SELECT bucket FROM grants UNION SELECT bucket FROM counters"
            " UNION SELECT bucket FROM blocks UNION SELECT bucket FROM newest"
        ).fetchall()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    assert buckets == [(f"virustotal:{fingerprint(SECRET)}",)]
    assert SECRET[:12].encode() not in path.read_bytes()


# --- failures -------------------------------------------------------------------------------


GARBAGE = b"this is not a database\x00\xff" * 200


async def test_a_corrupt_file_is_set_aside_and_started_afresh(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database is kept aside with one warning, and the store counts anew."""
    path.parent.mkdir(parents=True)
    path.write_bytes(GARBAGE)
    async with SQLiteQuotaStore(path) as store:
        assert await store.acquire("virustotal:0123abcd89", MINUTE_4, NOON) == Grant(True)
        await store.block("vt:a", NOON + 30)
        assert await store.blocked_until("vt:a", NOON) == NOON + 30
        assert (await store.usage("virustotal:0123abcd89", MINUTE_4, NOON))[0].used == 1
    (aside,) = path.parent.glob("quota.sqlite3.corrupt-*")
    assert aside.read_bytes() == GARBAGE
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"SQLite quota store {path} was corrupt or not a database; moved it to {aside}"
        " and started a fresh file"
    ]
    assert [r.name for r in caplog.records] == ["threatintel.quota"]


async def test_a_limiter_over_a_corrupt_file_heals_it_and_runs_share_the_budget(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a corrupt file the limiter counts in a fresh file that a later run finds spent."""
    path.parent.mkdir(parents=True)
    path.write_bytes(GARBAGE)
    clock = VirtualClock(NOON)
    async with SQLiteQuotaStore(path) as store:
        rl = RateLimiter("virustotal", ["k"], MINUTE_4, store, clock)
        assert [await rl.acquire() for _ in range(4)] == ["k"] * 4
        assert clock.time() == NOON
    async with SQLiteQuotaStore(path) as later:
        rl = RateLimiter("virustotal", ["k"], MINUTE_4, later, clock)
        assert [u.windows[0].remaining for u in await rl.usage()] == [0]
        assert await rl.acquire() == "k"
        assert clock.time() == NOON + 60
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "moved it to" in warnings[0].getMessage()


async def test_an_unopenable_path_makes_the_store_unavailable(path: Path) -> None:
    """A directory where the file should be is not corrupt: it stays, and calls raise naming it."""
    path.mkdir(parents=True)
    async with SQLiteQuotaStore(path) as store:
        with pytest.raises(QuotaStoreUnavailable, match=r"quota\.sqlite3 failed") as caught:
            await store.acquire("virustotal:0123abcd89", MINUTE_4, NOON)
    assert "0123abcd89" not in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert path.is_dir()
    assert list(path.parent.glob("*.corrupt-*")) == []


async def test_an_uncreatable_directory_makes_the_store_unavailable(tmp_path: Path) -> None:
    """A parent 'directory' that is really a file gives QuotaStoreUnavailable, not OSError."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the quota directory should be")
    async with SQLiteQuotaStore(blocker / "sub" / "quota.sqlite3") as store:
        with pytest.raises(QuotaStoreUnavailable, match="cannot be created") as caught:
            await store.acquire("vt:a", MINUTE_4, NOON)
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_closed_store_is_unavailable(path: Path) -> None:
    """After aclose (which may be called twice) every call raises QuotaStoreUnavailable."""
    store = SQLiteQuotaStore(path)
    await store.acquire("vt:a", MINUTE_4, NOON)
    await store.aclose()
    await store.aclose()
    with pytest.raises(QuotaStoreUnavailable, match="closed"):
        await store.acquire("vt:a", MINUTE_4, NOON)
    assert repr(store) == f"SQLiteQuotaStore({str(path)!r})"
