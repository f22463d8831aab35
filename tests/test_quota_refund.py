"""Quota is charged for what the vendor could have counted, not for requests never sent.

A slot granted for a request that provably never left the machine (the connection was refused,
the name did not resolve) is given back, in every store; anything that may have reached the
vendor (a timeout waiting for the answer, a reset, a 5xx) stays counted.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from support import REDIS_URL, redis_key_prefix, sim_settings
from threatintel.clock import VirtualClock
from threatintel.engine import Engine, ProviderQuota
from threatintel.models import SourceStatus
from threatintel.quota import Grant, MemoryQuotaStore, QuotaStore, RateLimiter, Window
from threatintel.quota.redis import RedisQuotaStore
from threatintel.quota.sqlite import SQLiteQuotaStore
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig

NOON = 1_700_049_600.0  # 2023-11-15 12:00:00 UTC
MINUTE_AND_DAY = (Window.per_minute(4), Window.per_day(10))
IP = "45.142.212.61"


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QuotaStore]:
    """Each quota store in turn; Redis on a fresh key prefix, deleted afterwards."""
    if request.param == "memory":
        yield MemoryQuotaStore()
        return
    if request.param == "sqlite":
        sqlite = SQLiteQuotaStore(tmp_path / "quota.sqlite3")
        yield sqlite
        await sqlite.aclose()
        return
    async with redis_key_prefix() as prefix:
        redis = RedisQuotaStore(REDIS_URL, prefix=prefix)
        yield redis
        await redis.aclose()


async def used(store: QuotaStore, windows: tuple[Window, ...], now: float) -> list[int]:
    return [w.used for w in await store.usage("vt:a", windows, now)]


# --- the stores -----------------------------------------------------------------------------


async def test_a_refund_uncounts_the_grant_in_every_window(store: QuotaStore) -> None:
    """A refunded grant leaves the minute and the day, so a full minute has room again."""
    grants = [await store.acquire("vt:a", MINUTE_AND_DAY, NOON + i) for i in range(4)]
    assert not (await store.acquire("vt:a", MINUTE_AND_DAY, NOON + 5)).granted
    await store.refund("vt:a", MINUTE_AND_DAY, grants[1])
    assert await used(store, MINUTE_AND_DAY, NOON + 5) == [3, 3]
    assert (await store.acquire("vt:a", MINUTE_AND_DAY, NOON + 5)).granted


async def test_a_refund_removes_its_own_grant_not_another(store: QuotaStore) -> None:
    """The refunded grant's slot frees up; the other grants keep their expiry times."""
    minute = (Window.per_minute(2),)
    first = await store.acquire("vt:a", minute, NOON)
    await store.acquire("vt:a", minute, NOON + 30)
    await store.refund("vt:a", minute, first)
    (usage,) = await store.usage("vt:a", minute, NOON + 31)
    assert usage.used == 1 and usage.reset_at == NOON + 90  # the later grant is the one left


async def test_a_refund_after_the_day_reset_leaves_the_new_day_alone(store: QuotaStore) -> None:
    """A grant from yesterday is refunded from nothing today: today's count is untouched."""
    day = (Window.per_day(10),)
    yesterday = await store.acquire("vt:a", day, NOON)
    await store.acquire("vt:a", day, NOON + 86_400)
    await store.refund("vt:a", day, yesterday)
    assert await used(store, day, NOON + 86_400) == [1]


async def test_a_grant_records_the_instant_it_was_counted_at(store: QuotaStore) -> None:
    """A caller behind the bucket's time is counted at the bucket's time, and told so."""
    minute = (Window.per_minute(4),)
    await store.acquire("vt:a", minute, NOON + 10)
    late = await store.acquire("vt:a", minute, NOON)
    assert late == Grant(True) and late.at == NOON + 10
    await store.refund("vt:a", minute, late)
    assert await used(store, minute, NOON + 10) == [1]


# --- the limiter ----------------------------------------------------------------------------


def limiter(store: QuotaStore) -> RateLimiter:
    return RateLimiter("vt", ["k"], MINUTE_AND_DAY, store, VirtualClock(NOON))


async def test_a_task_refunds_its_own_slot_once() -> None:
    """refund gives back this task's latest slot once; a second call gives back nothing."""
    store = MemoryQuotaStore()
    rl = limiter(store)
    key = await rl.acquire()
    assert await rl.refund(key) is True
    assert await rl.refund(key) is False
    usage = await rl.usage()
    assert [w.used for w in usage[0].windows] == [0, 0]


async def test_a_task_cannot_refund_another_tasks_slot() -> None:
    """A slot taken in one task is not given back by a refund in another."""
    store = MemoryQuotaStore()
    rl = limiter(store)
    key = await asyncio.create_task(rl.acquire())
    assert await rl.refund(key) is False
    assert [w.used for w in (await rl.usage())[0].windows] == [1, 1]


# --- end to end: lookups that fail before or after sending ---------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spent(report: list[ProviderQuota], provider: str) -> list[int]:
    (row,) = [q for q in report if q.provider == provider]
    return [window.used for key in row.keys for window in key.windows]


RETRYING = {"max_retries": 3, "retry_backoff_base": 0, "retry_backoff_cap": 0}


async def test_a_refused_connection_spends_no_quota(sim: SimulatorServer) -> None:
    """Four refused attempts on a closed loopback port leave `threatintel quota` unchanged."""
    refused = f"http://127.0.0.1:{closed_port()}/api/v3"
    settings = sim_settings(sim, virustotal_base_url=refused, cache_backend="sqlite", **RETRYING)
    async with Engine(settings) as engine:
        before = await engine.quota()
        analysis = await engine.analyze([IP], providers=["virustotal"])
        after = await engine.quota()
        retries = engine.stats["virustotal"].retries
    assert analysis.enrichments[0].sources["virustotal"].status is SourceStatus.ERROR
    assert retries == 3  # it did try four times
    assert spent(after, "virustotal") == spent(before, "virustotal") == [0, 0, 0]


async def test_answers_that_may_have_been_counted_are_charged(sim: SimulatorServer) -> None:
    """5xx answers reached the vendor: every attempt stays charged (1 try + 3 retries)."""
    sim.config.virustotal = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.SERVER_ERROR,))
    settings = sim_settings(sim, cache_backend="sqlite", **RETRYING)
    async with Engine(settings) as engine:
        await engine.analyze([IP], providers=["virustotal"])
        after = await engine.quota()
    assert sim.log.count(vendor="virustotal") == 4
    assert spent(after, "virustotal") == [4, 4, 4]


def failing_client(error: Callable[[httpx.Request], Exception]) -> httpx.AsyncClient:
    """An HTTP client whose every request fails as httpx reports that failure: no traffic."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("error", "charged"),
    [
        # What httpx raises when the name does not resolve (socket.gaierror, wrapped).
        (lambda r: httpx.ConnectError("[Errno -2] Name or service not known", request=r), 0),
        (lambda r: httpx.ConnectTimeout("timed out connecting", request=r), 0),
        (lambda r: httpx.ReadTimeout("timed out waiting for the answer", request=r), 4),
        (lambda r: httpx.ReadError("connection reset by peer", request=r), 4),
    ],
    ids=["dns-failure", "connect-timeout", "read-timeout", "reset"],
)
async def test_only_failures_before_sending_are_refunded(
    sim: SimulatorServer, error: Callable[[httpx.Request], Exception], charged: int
) -> None:
    """Failures before the request was written spend nothing; failures after spend each try."""
    settings = sim_settings(sim, cache_backend="sqlite", **RETRYING)
    async with failing_client(error) as client, Engine(settings, client=client) as engine:
        analysis = await engine.analyze([IP], providers=["virustotal"])
        after = await engine.quota()
    assert analysis.enrichments[0].sources["virustotal"].status.failed
    assert spent(after, "virustotal") == [charged] * 3
