"""What an Engine is built from, per process: the HTTP client, the providers, the cache and
the quota store, each from the settings (a caller may hand the Engine its own instead).

    client = build_client(settings)                  # one pool for every provider
    providers = build_providers(settings, client)
    cache = build_cache(settings, clock)             # SQLite by default, Redis, or memory
    quota_store = build_quota_store(settings, clock)
    limiter = build_limiter(settings, "otx", providers["otx"], quota_store, clock)

Apart from engine.py, which schedules lookups, because these only build and open things; the
limiter's windows, limits and their variable names come from the provider registry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from threatintel._version import __version__
from threatintel.cache import Cache, open_cache
from threatintel.clock import Clock
from threatintel.errors import ConfigError
from threatintel.lookups import CallHook
from threatintel.pipeline import SourcePipeline
from threatintel.providers import PROVIDERS, HttpProvider, Provider, QuotaWindow
from threatintel.quota import (
    FallbackQuotaStore,
    LimitsProbe,
    MemoryQuotaStore,
    QuotaStore,
    QuotaWaitHook,
    RateLimiter,
    Window,
)
from threatintel.quota.sqlite import SQLiteQuotaStore
from threatintel.resilience import CircuitBreaker, RetryPolicy
from threatintel.settings import Settings

if TYPE_CHECKING:
    import ssl

__all__ = [
    "QUOTA_FILENAME",
    "QUOTA_SETTINGS",
    "SMALL_RUN",
    "USER_AGENT",
    "build_cache",
    "build_client",
    "build_limiter",
    "build_providers",
    "build_quota_store",
    "quota_windows",
]

USER_AGENT = f"threatintel/{__version__}"


#: A run that knows up front it looks up at most this many indicators (the CLI's
#: `analyze IP ...` with no --file) goes through httpx's own transport (httpcore) instead of
#: aiohttp's; every other run (a file, stdin, the MCP and HTTP servers, the library) keeps
#: aiohttp's pool, whose CPU per request stays flat at scale (see threatintel._transport).
#: Importing aiohttp costs 60-130 ms of CPU (it also builds a TLS context from the system's
#: CA store), more than a handful of requests cost httpcore. Measured against the simulator,
#: whole CLI processes: with 8 indicators httpx's own pool used ~75 ms less CPU than aiohttp,
#: with 32 (128 requests) ~200 ms more.
SMALL_RUN = 8


def build_client(
    settings: Settings, *, trust_env: bool = True, indicators: int | None = None
) -> httpx.AsyncClient:
    """The one pooled HTTP client for the process.

    ``trust_env`` (httpx's default) makes it honour HTTPS_PROXY / NO_PROXY and SSL_CERT_FILE,
    as corporate proxies and TLS inspection require. The simulator is on loopback and is
    reached without them. A broken proxy URL or certificate file is a ConfigError.
    ``indicators``: how many the run will look up, when known up front; at most SMALL_RUN use
    httpx's own transport, anything else aiohttp's (threatintel._transport: httpcore's pool
    costs CPU per request that grows with connections x waiters).
    """
    from threatintel._transport import AiohttpClient, HttpcoreClient

    small = indicators is not None and indicators <= SMALL_RUN
    try:
        return (HttpcoreClient if small else AiohttpClient)(
            timeout=settings.request_timeout,
            # MAX_WORKERS calls in flight per provider: a connection for each, so none of
            # them queues in the pool behind another provider's calls.
            limits=httpx.Limits(
                max_connections=settings.max_workers * len(PROVIDERS),
                max_keepalive_connections=settings.max_workers * len(PROVIDERS),
            ),
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
            verify=_verify(settings),
            trust_env=trust_env,
        )
    except (OSError, ValueError) as exc:
        # e.g. SSL_CERT_FILE naming a missing file, or HTTPS_PROXY with an unknown scheme.
        raise ConfigError(
            f"cannot set up HTTP (check HTTPS_PROXY/HTTP_PROXY/SSL_CERT_FILE): {_safe(exc)}"
        ) from None


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    """True (httpx builds the TLS context: certifi's CA bundle, or SSL_CERT_FILE) when some
    provider's endpoint is not plain http://; else a context that trusts no CA at all.

    Loading a CA bundle costs 10-20 ms, a tenth of a one-indicator run, and a run whose every
    endpoint is http:// (only allowed on loopback: the simulator) never uses it: the requests
    go to those endpoints only (no redirects are followed). Should TLS happen anyway, the
    empty context refuses every certificate: it fails closed.
    """
    if any(urlsplit(settings.base_url(name)).scheme != "http" for name in PROVIDERS):
        return True
    import ssl  # loaded by asyncio already: a dictionary look-up

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


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
            backend=backend,
            cache_dir=settings.cache_dir,
            redis_url=redis_url,
            clock=clock,
            # Every lookup in flight (MAX_WORKERS per provider) may want a connection at once
            # (its lock, its read, its write): fewer made a busy worker's lookups queue past
            # the pool's timeout and go on without the shared cache and its lock.
            redis_connections=settings.max_workers * len(PROVIDERS),
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


def build_limiter(
    settings: Settings,
    name: str,
    provider: Provider,
    store: QuotaStore,
    clock: Clock,
    *,
    windows: Sequence[Window] | None = None,
    on_wait: QuotaWaitHook | None = None,
) -> RateLimiter:
    """The quota limiter of one provider: its keys, the vendor's windows (or ``windows``, the
    caller's), learning limits from the vendor's account endpoint where it has one."""
    keys = [k.get_secret_value() for k in settings.api_keys(name)]
    limiter = RateLimiter(
        name,
        keys or [None],
        windows or quota_windows(settings, name, keyed=bool(keys)),
        store,
        clock,
        wait_for_reset=settings.quota_wait_for_reset,
        max_wait=settings.max_quota_wait,
        margin=settings.rate_limit_margin,
        on_wait=on_wait,
        setting_names=_quota_settings().get(name, {}),
        # Windows given by the caller, and limits the user set, are never relearned.
        pinned=_pinned(settings, name, keyed=bool(keys), given=windows),
        learn=_limits_probe(provider),
    )
    if isinstance(provider, HttpProvider):
        provider.on_limits = limiter.learned
    return limiter


def _vendor_windows(provider: str, *, keyed: bool) -> tuple[QuotaWindow, ...]:
    cls = PROVIDERS.get(provider)
    return cls.quota_windows(keyed=keyed) if cls is not None else ()


def _quota_settings() -> dict[str, dict[str, str]]:
    """Per registered provider (read now: one registered after import counts too), the
    variable holding each window's limit, for quota-wait messages."""
    return {
        name: {w.name: w.setting.upper() for w in (*cls.anonymous_windows, *cls.windows)}
        for name, cls in PROVIDERS.items()
    }


#: The variable that sets each vendor window's limit, per provider and window name; read from
#: the registry (each provider class declares its windows and their settings).
QUOTA_SETTINGS: dict[str, dict[str, str]] = _quota_settings()


def quota_windows(settings: Settings, provider: str, *, keyed: bool) -> list[Window]:
    """Every window the vendor enforces, from the settings (free-tier defaults), or from the
    provider's own default for a setting Settings does not have (a plug-in provider)."""
    return [
        w.window(getattr(settings, w.setting, None) or w.default)
        for w in _vendor_windows(provider, keyed=keyed)
    ]


def _pinned(
    settings: Settings, provider: str, *, keyed: bool, given: Sequence[Window] | None
) -> frozenset[str]:
    """The windows whose limit learning must not change: all of them when the caller chose
    the windows, else those whose setting the user set (configured beats learned)."""
    if given:
        return frozenset(w.name for w in given)
    return frozenset(
        w.name for w in _vendor_windows(provider, keyed=keyed) if settings.configured(w.setting)
    )


def _limits_probe(provider: Provider) -> LimitsProbe | None:
    """The provider's account endpoint as the limiter's probe, if it has one."""
    if not isinstance(provider, HttpProvider):
        return None
    if type(provider).account_limits is HttpProvider.account_limits:
        return None
    return provider.account_limits


def _safe(exc: BaseException) -> str:
    """An exception's text without anything that looks like credentials in a URL."""
    text = " ".join(str(exc).split())[:200]
    return re.sub(r"//[^/@\s]+@", "//***@", text)


def build_pipelines(
    settings: Settings,
    providers: Mapping[str, Provider],
    *,
    quota_store: QuotaStore,
    cache: Cache,
    clock: Clock,
    windows: Mapping[str, Sequence[Window]] | None,
    on_quota_wait: QuotaWaitHook | None,
    include_raw: bool,
    on_call: CallHook | None,
) -> dict[str, SourcePipeline]:
    """One call pipeline per provider: its limiter, breaker, retry policy and cache use."""
    retry = RetryPolicy(
        settings.max_retries,
        backoff_base=settings.retry_backoff_base,
        backoff_cap=settings.retry_backoff_cap,
        max_retry_after=settings.max_retry_after,
    )
    pipelines: dict[str, SourcePipeline] = {}
    for name, provider in providers.items():
        limiter = build_limiter(
            settings,
            name,
            provider,
            quota_store,
            clock,
            windows=(windows or {}).get(name),
            on_wait=on_quota_wait,
        )
        breaker = CircuitBreaker(
            name,
            failure_rate=settings.circuit_failure_rate,
            min_calls=settings.circuit_min_calls,
            window=settings.circuit_window,
            reset_after=settings.circuit_reset_after,
            clock=clock,
        )
        pipelines[name] = SourcePipeline(
            provider,
            limiter=limiter,
            breaker=breaker,
            retry=retry,
            clock=clock,
            cache=cache,
            include_raw=include_raw,
            ttl=settings.cache_ttl_for(name),
            negative_ttl=settings.negative_cache_ttl,
            lookup_timeout=settings.lookup_timeout,
            # Long enough for a peer's whole lookup (every attempt) to finish.
            lock_ttl=settings.request_timeout * (settings.max_retries + 1) + 5,
            # MAX_WORKERS: HTTP calls in flight per provider, taken after the quota grant.
            max_inflight=settings.max_workers,
            on_call=on_call,
        )
    return pipelines
