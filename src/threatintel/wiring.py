"""What an Engine is built from, per process: the HTTP client, the providers, the cache and
the quota store, each from the settings (a caller may hand the Engine its own instead).

    client = build_client(settings)                  # one pool for every provider
    providers = build_providers(settings, client)
    cache = build_cache(settings, clock)             # SQLite by default, Redis, or memory
    quota_store = build_quota_store(settings, clock)

Apart from engine.py, which schedules lookups, because these only open resources.
"""

from __future__ import annotations

import re

import httpx

from threatintel._version import __version__
from threatintel.cache import Cache, open_cache
from threatintel.clock import Clock
from threatintel.errors import ConfigError
from threatintel.providers import PROVIDERS, HttpProvider
from threatintel.quota import FallbackQuotaStore, MemoryQuotaStore, QuotaStore
from threatintel.quota.sqlite import SQLiteQuotaStore
from threatintel.settings import Settings

__all__ = [
    "QUOTA_FILENAME",
    "USER_AGENT",
    "build_cache",
    "build_client",
    "build_providers",
    "build_quota_store",
]

USER_AGENT = f"threatintel/{__version__}"


def build_client(settings: Settings, *, trust_env: bool = True) -> httpx.AsyncClient:
    """The one pooled HTTP client for the process.

    ``trust_env`` (httpx's default) makes it honour HTTPS_PROXY / NO_PROXY and SSL_CERT_FILE,
    as corporate proxies and TLS inspection require. The simulator is on loopback and is
    reached without them. A broken proxy URL or certificate file is a ConfigError.
    The transports are aiohttp's (see threatintel._transport: httpcore's pool costs CPU per
    request that grows with connections x waiters).
    """
    from threatintel._transport import AiohttpClient  # aiohttp itself loads on first request

    try:
        return AiohttpClient(
            timeout=settings.request_timeout,
            # MAX_WORKERS calls in flight per provider: a connection for each, so none of
            # them queues in the pool behind another provider's calls.
            limits=httpx.Limits(
                max_connections=settings.max_workers * len(PROVIDERS),
                max_keepalive_connections=settings.max_workers * len(PROVIDERS),
            ),
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
            trust_env=trust_env,
        )
    except (OSError, ValueError) as exc:
        # e.g. SSL_CERT_FILE naming a missing file, or HTTPS_PROXY with an unknown scheme.
        raise ConfigError(
            f"cannot set up HTTP (check HTTPS_PROXY/HTTP_PROXY/SSL_CERT_FILE): {_safe(exc)}"
        ) from None


def build_providers(
    settings: Settings, client: httpx.AsyncClient, *, include_raw: bool = False
) -> dict[str, HttpProvider]:
    providers: dict[str, HttpProvider] = {}
    for name, cls in PROVIDERS.items():
        providers[name] = cls(
            client,
            settings.base_url(name),
            timeout=settings.request_timeout,
            include_raw=include_raw,
            **cls.options(settings),
        )
    return providers


def build_cache(settings: Settings, clock: Clock) -> Cache:
    backend = settings.resolved_cache_backend
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    try:
        return open_cache(
            backend=backend, cache_dir=settings.cache_dir, redis_url=redis_url, clock=clock
        )
    except ValueError:
        # The message could quote REDIS_URL, password included: name the setting only.
        raise ConfigError("REDIS_URL/CACHE_BACKEND: the cache cannot be set up") from None


QUOTA_FILENAME = "quota.sqlite3"


def build_quota_store(settings: Settings, clock: Clock) -> QuotaStore:
    """Redis when instances share quotas; else SQLite, which outlives the process (so short
    CLI runs in a row share one budget). Either falls back to memory while unreachable."""
    backend = settings.resolved_cache_backend
    if backend == "memory":
        return MemoryQuotaStore()
    if backend == "redis" and settings.redis_url is not None:
        from threatintel.quota.redis import RedisQuotaStore  # the redis client only when used

        try:  # before the local store: a refused URL leaves nothing built
            shared = RedisQuotaStore(settings.redis_url.get_secret_value())
        except ValueError:
            raise ConfigError("REDIS_URL: not a usable Redis URL") from None
        # While Redis is down, the local file keeps CLI runs from overspending in a row.
        local = SQLiteQuotaStore(settings.cache_dir / QUOTA_FILENAME)
        return FallbackQuotaStore(shared, clock=clock, fallback=local)
    return FallbackQuotaStore(SQLiteQuotaStore(settings.cache_dir / QUOTA_FILENAME), clock=clock)


def _safe(exc: BaseException) -> str:
    """An exception's text without anything that looks like credentials in a URL."""
    text = " ".join(str(exc).split())[:200]
    return re.sub(r"//[^/@\s]+@", "//***@", text)
