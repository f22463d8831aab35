"""Shared fixtures: one simulator server on 127.0.0.1 for the session, reset for every test.

Tests drive the real provider clients over HTTP against it; nothing leaves loopback.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import REDIS_URL, VENDOR_NAMES, quiet_config, redis_key_prefix, sim_settings
from threatintel.engine import Engine
from threatintel.quota import MemoryQuotaStore, QuotaStore, SQLiteQuotaStore
from threatintel.quota.redis import RedisQuotaStore
from threatintel.simulator import Scenario, SimulatorServer


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: Any) -> None:
    """No test reads the developer's real keys, proxies, ./.env or config.env, or writes to
    their cache."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.endswith(("_API_KEY", "_BASE_URL", "_RATE_LIMIT")) or upper in {
            "CACHE_TTL",
            "MAX_RETRIES",
            "REQUEST_TIMEOUT",
            "MAX_WORKERS",
            "BATCH_SIZE",
            "QUERY_PRIVATE",
            "INTERNAL_DOMAINS",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        }:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    # Never the developer's real cache and quota files (the default is the user cache dir).
    monkeypatch.setenv("CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    # Nor their own config.env (settings.user_config_file), which is read like the environment.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


@pytest.fixture(scope="session")
def _sim_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(quiet_config()) as server:
        yield server


@pytest.fixture
def sim(_sim_server: SimulatorServer) -> Iterator[SimulatorServer]:
    """The session's simulator, back to a quiet state with an empty request log."""
    fresh = quiet_config()
    config = _sim_server.config
    config.scenario = Scenario.default()
    config.clock = time.time
    for name in VENDOR_NAMES:
        setattr(config, name, getattr(fresh, name))
    _sim_server.simulator.faults.clear()
    _sim_server.simulator.hangs.rearm()
    _sim_server.simulator.quotas.reset()
    _sim_server.log.clear()
    yield _sim_server
    _sim_server.simulator.release_hangs()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the local Redis (127.0.0.1:6379), its keys deleted afterwards."""
    async with redis_key_prefix() as prefix:
        yield prefix


@pytest.fixture
async def make_engine(sim: SimulatorServer) -> AsyncIterator[Callable[..., Engine]]:
    """Build engines wired to the simulator; every one is closed after the test."""
    engines: list[Engine] = []

    def make(**overrides: Any) -> Engine:
        engine = Engine(sim_settings(sim, **overrides))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


@pytest.fixture
async def engine(sim: SimulatorServer) -> AsyncIterator[Engine]:
    async with Engine(sim_settings(sim)) as engine:
        yield engine


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def each_quota_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[QuotaStore]:
    """Each quota store: memory, a fresh SQLite file, Redis under a fresh prefix."""
    made: QuotaStore
    if request.param == "redis":
        async with redis_key_prefix() as prefix:
            made = RedisQuotaStore(REDIS_URL, prefix=prefix)
            yield made
            await made.aclose()
        return
    made = MemoryQuotaStore() if request.param == "memory" else SQLiteQuotaStore(tmp_path / "q")
    yield made
    await made.aclose()
