"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from threatintel.settings import Settings
from threatintel.simulator import SimulatorConfig, SimulatorServer, VendorConfig

VENDOR_NAMES = ("virustotal", "otx", "abuseipdb", "ipinfo")
REDIS_URL = "redis://127.0.0.1:6379/0"

#: Recognisable fake keys: the secrets tests look for them everywhere.
TEST_KEYS = {
    "virustotal": "VT-SECRET-KEY-0123456789abcdef0123456789abcdef",
    "otx": "OTX-SECRET-KEY-fedcba9876543210fedcba9876543210",
    "abuseipdb": "ABUSE-SECRET-KEY-00112233445566778899aabbccddeeff",
    "ipinfo": "IPINFO-SECRET-TOKEN-a1b2c3d4e5f6",
}


def quiet_config() -> SimulatorConfig:
    """The simulator with no quotas, no faults and any key accepted: tests add what they need."""
    config = SimulatorConfig()
    for name in VENDOR_NAMES:
        setattr(config, name, VendorConfig())
    return config


def sim_settings(sim: SimulatorServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {}
    for name in VENDOR_NAMES:
        values[f"{name}_base_url"] = sim.base_urls[name]
        values[f"{name}_api_key"] = TEST_KEYS[name]
    values["request_timeout"] = 5.0
    # Most tests look at single exchanges: no retries, and limits far above what they use so
    # nothing waits on real time. Quota and retry tests set the real shapes explicitly.
    values["max_retries"] = 0
    values["max_quota_wait"] = 0  # after a 429 the limiter blocks the key: report, don't wait
    values["virustotal_rate_limit"] = 100_000
    values["virustotal_daily_limit"] = 100_000
    values["virustotal_monthly_limit"] = 100_000
    values["otx_rate_limit"] = 100_000
    values["abuseipdb_rate_limit"] = 100_000
    values["ipinfo_rate_limit"] = 100_000
    values["ipinfo_anonymous_daily_limit"] = 100_000
    return Settings.load(**(values | overrides))


def sim_env(sim: SimulatorServer, **extra: str) -> dict[str, str]:
    """The same configuration as sim_settings, as environment variables for CLI runs."""
    settings = sim_settings(sim)
    env = {f"{n.upper()}_BASE_URL": sim.base_urls[n] for n in VENDOR_NAMES}
    env |= {f"{n.upper()}_API_KEY": TEST_KEYS[n] for n in VENDOR_NAMES}
    for name in (
        "max_retries",
        "virustotal_rate_limit",
        "virustotal_daily_limit",
        "virustotal_monthly_limit",
        "otx_rate_limit",
        "abuseipdb_rate_limit",
        "ipinfo_rate_limit",
        "ipinfo_anonymous_daily_limit",
        "max_quota_wait",
    ):
        env[name.upper()] = str(getattr(settings, name))
    return env | extra


#: The note naming non-default endpoints (every sim_env run has it), wrapped or not.
ENDPOINTS_NOTE = re.compile(r"note: \S+_BASE_URL.*?\(not the vendors' own addresses\)\n?", re.S)


def stderr_lines(stderr: str) -> list[str]:
    """stderr's lines but the note naming non-default endpoints."""
    return ENDPOINTS_NOTE.sub("", stderr).strip().splitlines()


@contextlib.asynccontextmanager
async def redis_key_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the local Redis, its keys deleted on exit; skips without Redis."""
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        pytest.skip("no Redis at 127.0.0.1:6379: start one to run the shared-quota tests")
    prefix = f"threatintel:test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@contextlib.contextmanager
def emptied_redis_database(database: int, what: str) -> Iterator[str]:
    """The URL of ``database`` on the local Redis with every ``threatintel*`` key deleted
    before and after (the servers and the queue use their default prefixes there, so each
    such test owns a database); skips, naming ``what``, when no Redis answers."""
    import redis

    url = f"redis://127.0.0.1:6379/{database}"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        pytest.skip(f"no Redis at 127.0.0.1:6379: start one to run {what}")

    def clear() -> None:
        keys = list(client.scan_iter(match="threatintel*"))
        if keys:
            client.delete(*keys)

    clear()
    try:
        yield url
    finally:
        clear()
        client.close()
