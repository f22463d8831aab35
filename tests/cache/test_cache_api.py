"""The cache package's surface: the key scheme, CacheEntry, open_cache and as_flight_lock."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import threatintel.cache
from threatintel.cache import (
    FRONT_MAX_BYTES,
    CacheEntry,
    LayeredCache,
    MemoryCache,
    RedisCache,
    SQLiteCache,
    as_flight_lock,
    cache_key,
    open_cache,
)
from threatintel.clock import VirtualClock


def test_public_names_are_pinned() -> None:
    """The package exports exactly the names the engine is written against, sorted."""
    assert threatintel.cache.__all__ == [
        "Cache",
        "CacheAdmin",
        "CacheEntry",
        "CacheStats",
        "FlightLock",
        "HitCounter",
        "LayeredCache",
        "MemoryCache",
        "ProviderCacheStats",
        "RedisCache",
        "SQLiteCache",
        "as_cache_admin",
        "as_flight_lock",
        "as_hit_counter",
        "cache_key",
        "open_cache",
    ]


SCOPE = "https://www.virustotal.com/api/v3"
SCOPE_DIGEST = hashlib.sha256(SCOPE.encode()).hexdigest()[:16]


def test_cache_key_scheme() -> None:
    """A short value appears verbatim after a versioned provider, scope digest and type prefix."""
    assert (
        cache_key("virustotal", "ipv4", "1.2.3.4", scope=SCOPE)
        == f"ti:v2:virustotal:{SCOPE_DIGEST}:ipv4:1.2.3.4"
    )


def test_the_scope_separates_keys_without_showing_the_host() -> None:
    """Two endpoints give two keys, and neither key names the (perhaps internal) host."""
    internal = "http://ti-mirror.corp.internal:8080/api/v3"
    mirror = cache_key("virustotal", "ipv4", "1.2.3.4", scope=internal)
    vendor = cache_key("virustotal", "ipv4", "1.2.3.4", scope=SCOPE)
    assert mirror != vendor
    assert "corp" not in mirror and "virustotal.com" not in vendor


def test_long_values_are_hashed() -> None:
    """A value over 200 characters becomes its SHA-256, keeping keys short and bounded."""
    url = "https://example.com/" + "x" * 300
    digest = hashlib.sha256(url.encode()).hexdigest()
    prefix = f"ti:v2:otx:{SCOPE_DIGEST}:url:"
    assert cache_key("otx", "url", url, scope=SCOPE) == f"{prefix}sha256={digest}"
    assert cache_key("otx", "url", "u" * 200, scope=SCOPE) == prefix + "u" * 200


def test_a_short_value_cannot_impersonate_a_hashed_one() -> None:
    """A literal value shaped like a hashed one is hashed too: it cannot take a long URL's key."""
    url = "https://example.com/" + "x" * 300
    lookalike = "sha256=" + hashlib.sha256(url.encode()).hexdigest()
    assert cache_key("otx", "url", lookalike, scope=SCOPE) != cache_key(
        "otx", "url", url, scope=SCOPE
    )


def test_entry_age_and_remaining_time() -> None:
    """An entry's age counts from stored_at, never below zero, and it expires at expires_at."""
    entry = CacheEntry(b"", stored_at=100.0, expires_at=160.0)
    assert entry.age(130.0) == 30.0
    assert entry.age(90.0) == 0.0
    assert entry.ttl_left(130.0) == 30.0
    assert not entry.expired(159.9)
    assert entry.expired(160.0)


async def test_open_cache_builds_each_backend(tmp_path: Path, clock: VirtualClock) -> None:
    """Each backend name gives the documented stack; nothing connects until first use."""
    memory = open_cache(backend="memory", cache_dir=tmp_path, redis_url=None, clock=clock)
    assert isinstance(memory, MemoryCache)
    assert memory.max_bytes is None  # the only store: bounded by entries alone

    sqlite = open_cache(backend="sqlite", cache_dir=tmp_path / "d", redis_url=None, clock=clock)
    assert isinstance(sqlite, LayeredCache)
    assert isinstance(sqlite.back, SQLiteCache)
    assert sqlite.back.path == tmp_path / "d" / "threatintel.sqlite3"
    assert sqlite.back.max_bytes == 256 * 1024 * 1024
    assert sqlite.front.max_bytes == FRONT_MAX_BYTES == 4 * 1024 * 1024
    await sqlite.aclose()

    small = open_cache(
        backend="sqlite", cache_dir=tmp_path, redis_url=None, clock=clock, sqlite_max_bytes=4096
    )
    assert isinstance(small, LayeredCache)
    assert isinstance(small.back, SQLiteCache)
    assert small.back.max_bytes == 4096
    await small.aclose()

    shared = open_cache(
        backend="redis", cache_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", clock=clock
    )
    assert isinstance(shared, LayeredCache)
    assert isinstance(shared.back, RedisCache)
    await shared.aclose()


def test_open_cache_rejects_bad_settings(tmp_path: Path, clock: VirtualClock) -> None:
    """An unknown backend, or redis without a URL, fails at start-up with a clear message."""
    with pytest.raises(ValueError, match=r"unknown cache backend 'disk'.*memory, sqlite, redis"):
        open_cache(backend="disk", cache_dir=tmp_path, redis_url=None, clock=clock)
    with pytest.raises(ValueError, match="needs a Redis URL"):
        open_cache(backend="redis", cache_dir=tmp_path, redis_url=None, clock=clock)


async def test_only_redis_backed_caches_offer_a_flight_lock(tmp_path: Path) -> None:
    """as_flight_lock finds a cross-process lock in Redis, directly or behind a LayeredCache."""
    redis_cache = RedisCache("redis://127.0.0.1:1/0")
    sqlite_cache = SQLiteCache(tmp_path / "c.db")
    assert as_flight_lock(redis_cache) is redis_cache
    assert as_flight_lock(MemoryCache()) is None
    assert as_flight_lock(sqlite_cache) is None
    layered_redis = LayeredCache(MemoryCache(), redis_cache)
    assert as_flight_lock(layered_redis) is layered_redis
    assert as_flight_lock(LayeredCache(MemoryCache(), sqlite_cache)) is None
    await sqlite_cache.aclose()
    await redis_cache.aclose()


def test_importing_the_package_does_not_import_redis() -> None:
    """The redis package is loaded only when a Redis cache is first used."""
    code = "import sys, threatintel.cache; print('redis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
