"""A cache shared by every replica through Redis, plus the cross-process lock for coalescing.

    async with RedisCache("redis://cache:6379/0", prefix="threatintel:") as cache:
        token = await cache.acquire_lock("virustotal:ipv4:1.2.3.4", ttl=30)

Each entry is one Redis string, ``<prefix><key>``, written with ``SET ... PX <ttl ms>``. Its
value is a 19-byte header, ``b"TI\\x01"`` then ``stored_at`` and ``expires_at`` as big-endian
IEEE doubles (epoch seconds from the injected clock), followed by the raw value bytes. Redis
expires the key in real time; ``get`` also treats an entry whose ``expires_at`` has passed on the
injected clock as a miss, so virtual time works here as it does for the other backends. A value
without the header (someone else's key) reads as a miss.

Locks are ``<prefix>lock:<name>`` holding a random token (``SET NX PX``); release is a Lua
compare-and-delete and extension a Lua compare-and-PEXPIRE, so a holder whose lock expired can
neither delete nor prolong its successor's.

The redis package is imported only when a client is first needed. Every redis or socket error
becomes ``CacheError`` in this module; messages show the URL with its credentials masked.
"""

from __future__ import annotations

import importlib.util
import math
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from threatintel.cache.base import SYSTEM_CLOCK, CacheBase, CacheEntry, check_ttl
from threatintel.clock import Clock
from threatintel.errors import CacheError, ConfigError
from threatintel.settings import redact_url, url_secrets

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

DEFAULT_PREFIX: Final = "threatintel:"
DEFAULT_SOCKET_TIMEOUT: Final = 2.0
#: Connections per process; callers beyond it wait up to ``socket_timeout`` for a free one.
DEFAULT_MAX_CONNECTIONS: Final = 50
#: One retry on a fresh connection covers a pooled connection the server closed while idle;
#: more would only stretch the time a dead server takes to report.
CONNECTION_RETRIES: Final = 1

_MAGIC: Final = b"TI\x01"
_HEADER: Final = struct.Struct(">dd")
_HEADER_SIZE: Final = len(_MAGIC) + _HEADER.size
_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})

# Delete the lock only if it still holds our token: GET then DEL must be one atomic step.
_RELEASE_SCRIPT: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""

# Reset the expiry only if the lock still holds our token, in one atomic step likewise; an
# expired lock is gone and stays gone (PEXPIRE never creates a key).
_EXTEND_SCRIPT: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""


def _encode(value: bytes, stored_at: float, expires_at: float) -> bytes:
    return _MAGIC + _HEADER.pack(stored_at, expires_at) + value


def _decode(raw: object) -> CacheEntry | None:
    if not isinstance(raw, bytes) or len(raw) < _HEADER_SIZE or not raw.startswith(_MAGIC):
        return None
    stored_at, expires_at = _HEADER.unpack_from(raw, len(_MAGIC))
    return CacheEntry(raw[_HEADER_SIZE:], stored_at, expires_at)


def _milliseconds(ttl: float) -> int:
    return max(1, math.ceil(check_ttl(ttl) * 1000))


class RedisCache(CacheBase):
    """A ``Cache`` and ``FlightLock`` over one Redis database, with keys under ``prefix``."""

    __slots__ = (
        "_client",
        "_closed",
        "_scripts",
        "_secrets",
        "_url",
        "clock",
        "max_connections",
        "prefix",
        "socket_connect_timeout",
        "socket_timeout",
        "where",
    )

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        socket_connect_timeout: float | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        #: The URL as messages show it.
        self.where = redact_url(url)
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ValueError(
                f"unsupported Redis URL {self.where!r}: the scheme must be redis, rediss or unix"
            )
        if socket_timeout <= 0:
            raise ValueError("socket_timeout must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        # Fail at start-up, not on the first lookup, when the optional package is missing.
        if importlib.util.find_spec("redis") is None:
            raise ConfigError("the Redis cache needs the 'redis' package: pip install redis")
        self._url = url
        self._secrets = url_secrets(url)
        self.clock = clock
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self.socket_connect_timeout = socket_connect_timeout or socket_timeout
        self.max_connections = max_connections
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisCache({self.where!r}, prefix={self.prefix!r})"

    @property
    def label(self) -> str:
        """What messages call this cache: ``Redis at <URL, credentials masked>``."""
        return f"Redis at {self.where}"

    # -- the Cache protocol ----------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        with self._translated("get"):
            raw = await self._redis().get(self.prefix + key)
        entry = _decode(raw)
        if entry is None or entry.expired(self.clock.time()):
            return None
        return entry

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        ms = _milliseconds(ttl)
        now = self.clock.time()
        blob = _encode(bytes(value), now, now + ms / 1000)
        with self._translated("set"):
            await self._redis().set(self.prefix + key, blob, px=ms)

    async def delete(self, key: str) -> None:
        with self._translated("delete"):
            await self._redis().delete(self.prefix + key)

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None:
            with self._translated("close"):
                await client.aclose()

    # -- the FlightLock protocol -------------------------------------------------------------

    def lock_key(self, name: str) -> str:
        """The Redis key that holds the lock called ``name``."""
        return f"{self.prefix}lock:{name}"

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        ms = _milliseconds(ttl)
        token = secrets.token_urlsafe(16)
        with self._translated("lock"):
            taken = await self._redis().set(self.lock_key(name), token, nx=True, px=ms)
        return token if taken else None

    async def extend_lock(self, name: str, token: str, ttl: float) -> bool:
        ms = _milliseconds(ttl)
        with self._translated("extend lock"):
            extended = await self._script(_EXTEND_SCRIPT)(
                keys=[self.lock_key(name)], args=[token, ms]
            )
        return bool(extended == 1)

    async def release_lock(self, name: str, token: str) -> None:
        with self._translated("unlock"):
            await self._script(_RELEASE_SCRIPT)(keys=[self.lock_key(name)], args=[token])

    # -- the seam ---------------------------------------------------------------------------

    def _redis(self) -> Redis:
        if self._closed:
            raise CacheError(f"Redis cache at {self.where} is closed")
        if self._client is None:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            try:
                # The default pool raises "Too many connections" when a burst of lookups
                # outnumbers it; a blocking pool makes them queue for a connection instead.
                pool = BlockingConnectionPool.from_url(
                    self._url,
                    max_connections=self.max_connections,
                    timeout=self.socket_timeout,
                    socket_timeout=self.socket_timeout,
                    socket_connect_timeout=self.socket_connect_timeout,
                    retry=Retry(NoBackoff(), CONNECTION_RETRIES),
                )
                self._client = Redis.from_pool(pool)
            except ValueError as exc:
                # redis-py parses the URL's options here (a bad port, an unknown ?option=). Its
                # message is about the URL itself, so it is shown scrubbed and not chained.
                message = f"Redis URL {self.where} is invalid: {self._reason(exc)}"
                raise CacheError(message) from None
        return self._client

    def _script(self, source: str) -> AsyncScript:
        client = self._redis()
        script = self._scripts.get(source)
        if script is None:
            # Registered once per client: it sends EVALSHA, and loads the script on NOSCRIPT.
            script = self._scripts[source] = client.register_script(source)
        return script

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """The one place redis and socket errors become ``CacheError``, credentials masked."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise CacheError(
                f"Redis at {self.where} is unreachable ({action}): {self._reason(exc)}"
            ) from exc
        except RedisError as exc:
            message = f"Redis at {self.where} failed ({action}): {self._reason(exc)}"
            raise CacheError(message) from exc

    def _reason(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
