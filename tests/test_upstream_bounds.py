"""Bounds on what an upstream can make us do: Retry-After, block rows, list sizes, raw bodies."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from redis.asyncio import Redis

from support import REDIS_URL, redis_key_prefix
from threatintel.providers.base import (
    MAX_RAW_BYTES,
    MAX_RAW_DEPTH,
    MAX_RETRY_AFTER,
    json_depth,
    kept_raw,
    parse_retry_after,
)
from threatintel.providers.values import MAX_LIST, Kept
from threatintel.quota import MAX_BLOCK, QuotaStore, Window
from threatintel.quota.redis import RedisQuotaStore
from threatintel.quota.sqlite import SQLiteQuotaStore

NOW = 1_750_000_000.0
MINUTE_4 = [Window.per_minute(4)]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7.5 ", 7.5),
        ("0", 0.0),
        ("1e300", MAX_RETRY_AFTER),
        ("3e9", MAX_RETRY_AFTER),
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("9" * 400, None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Mon, 99 Foo 99999999999 99:99:99 GMT", None),
    ],
)
def test_retry_after_is_finite_and_at_most_a_day(header: str | None, seconds: float | None) -> None:
    """Retry-After becomes seconds in [0, a day], or None when it is not a usable value."""
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_date_is_read_against_now() -> None:
    """An HTTP-date Retry-After is the seconds from now until that date."""
    assert parse_retry_after("Sun, 15 Jun 2025 15:07:30 GMT", now=1_749_999_950.0) == 100.0


@pytest.mark.parametrize("until", [math.inf, math.nan, 1e300, NOW + 3e9, NOW + MAX_BLOCK + 60])
async def test_stores_ignore_an_absurd_block(each_quota_store: QuotaStore, until: float) -> None:
    """A block that is not finite or ends beyond MAX_BLOCK is never honoured nor an error."""
    store = each_quota_store
    await store.block("k", until)
    assert await store.blocked_until("k", NOW) is None
    assert (await store.acquire("k", MINUTE_4, NOW)).granted


async def test_stores_keep_a_believable_block(each_quota_store: QuotaStore) -> None:
    """A block within MAX_BLOCK still holds, and a later absurd one does not replace it."""
    store = each_quota_store
    await store.block("k", NOW + 3600)
    await store.block("k", math.inf)
    assert await store.blocked_until("k", NOW) == NOW + 3600
    assert not (await store.acquire("k", MINUTE_4, NOW)).granted


@pytest.mark.parametrize("bad", ["garbage", 1e300, None])
async def test_sqlite_store_clears_a_bad_row(tmp_path: Path, bad: object) -> None:
    """A blocks row that is text, absurd or NULL (an old version, a hand edit) is cleared."""
    path = tmp_path / "q.db"
    async with SQLiteQuotaStore(path) as store:
        await store.block("k", NOW + 60)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("DROP TABLE blocks")
        conn.execute("CREATE TABLE blocks (bucket TEXT PRIMARY KEY, until)")
        conn.execute("INSERT INTO blocks VALUES ('k', ?)", (bad,))
    conn.close()
    async with SQLiteQuotaStore(path) as store:
        assert await store.blocked_until("k", NOW) is None
        assert (await store.acquire("k", MINUTE_4, NOW)).granted
        await store.block("k", NOW + 60)
        assert await store.blocked_until("k", NOW) == NOW + 60


@pytest.mark.parametrize("bad", [b"inf", b"nan", b"1e300", b"garbage"])
async def test_redis_store_clears_a_bad_block(bad: bytes) -> None:
    """A Redis block value that is not a believable time is cleared, and the grant goes ahead."""
    async with redis_key_prefix() as prefix:
        store = RedisQuotaStore(REDIS_URL, prefix=prefix)
        client = Redis.from_url(REDIS_URL)
        try:
            await client.set(f"{prefix}{{k}}:blocked", bad)
            assert await store.blocked_until("k", NOW) is None
            if bad != b"garbage":  # garbage replies are the Redis-robustness work's (issue 8 §4)
                assert (await store.acquire("k", MINUTE_4, NOW)).granted
        finally:
            await client.aclose()
            await store.aclose()


def test_kept_deduplicates_caps_and_counts() -> None:
    """Kept keeps first-seen unique values up to its limit and counts the distinct rest."""
    kept = Kept()
    values = [f"v{i % 40_000}" for i in range(80_000)] + [None, ""]
    assert kept.unique("names", values) == [f"v{i}" for i in range(MAX_LIST)]
    assert kept.dropped == {"names": 40_000 - MAX_LIST}
    assert kept.strings("tags", ["a", 1, "a", " b  c ", {"x": 1}]) == ["a", "b c"]
    assert kept.dropped == {"names": 40_000 - MAX_LIST}


def test_json_depth_is_counted_without_recursion() -> None:
    """Depth is measured iteratively, so a body far deeper than the recursion limit is fine."""
    deep: list[object] = []
    node = deep
    for _ in range(100_000):
        child: list[object] = []
        node.append(child)
        node = child
    assert json_depth(deep, stop=MAX_RAW_DEPTH) == MAX_RAW_DEPTH + 1
    assert json_depth({"a": [1, {"b": []}]}, stop=MAX_RAW_DEPTH) == 4


def test_raw_body_kept_only_within_bounds() -> None:
    """A raw body is kept as is unless too deep or too large, then a note says which."""
    body = {"data": {"id": "x"}}
    assert kept_raw(body, 100) is body
    assert "larger" in kept_raw(body, MAX_RAW_BYTES + 1)["omitted"]
    deep: dict[str, object] = {}
    node = deep
    for _ in range(MAX_RAW_DEPTH + 1):
        node["n"] = node = {}
    assert "deeper" in kept_raw(deep, 100)["omitted"]
