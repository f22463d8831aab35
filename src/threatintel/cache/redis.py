"""A cache shared by every replica through Redis, plus the cross-process lock for coalescing.

    async with RedisCache("redis://cache:6379/0", prefix="threatintel:") as cache:
        token = await cache.acquire_lock("virustotal:ipv4:1.2.3.4", ttl=30)

Each entry is one Redis string, ``<prefix><key>``, written with ``SET ... PX <ttl ms>``. Its
value is a 19-byte header, ``b"TI\\x01"`` then ``stored_at`` and ``expires_at`` as big-endian
IEEE doubles (epoch seconds from the injected clock), followed by the raw value bytes. Redis
expires the key in real time; ``get`` also treats an entry whose ``expires_at`` has passed on the
injected clock as a miss, so virtual time works here as it does for the other backends. A value
without the header (someone else's key), with impossible times, or longer than
``max_entry_bytes`` reads as a miss; the read itself asks for at most that many bytes plus one
(``GETRANGE``), so a huge value never crosses the wire from a well-behaved server.

Locks are ``<prefix>lock:<name>`` holding a random token (``SET NX PX`` in Lua), with
``<prefix>lock-until:<name>`` beside it holding when the lock runs out on the holder's injected
clock (each renewal moves it). A lock is taken over when it has no expiry at all (left by hand,
or by a tool that forgot ``PX``: it would be held forever) or when that time has passed on the
caller's clock (its holder stopped renewing it; with virtual time, Redis's own real-time expiry
never comes), and the first take-over logs one warning. A holder that keeps renewing keeps its
lock however long its lookup waits for quota. Release is a Lua compare-and-delete and extension
a Lua compare-and-PEXPIRE, so a holder whose lock expired can neither delete nor prolong its
successor's.

The redis package is imported only when a client is first needed. Every redis or socket error,
and every reply of the wrong shape (a type, length or number no command of ours returns, or a
reply the client library cannot even parse), becomes ``CacheError`` in this module, so the
``LayeredCache`` carries on with its local layer; messages show the URL with its credentials
masked.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import secrets
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from threatintel._redaction import redact_url, url_secrets
from threatintel.cache.admin import (
    ANY_SCHEME,
    CacheStats,
    LookupCounts,
    StatsBuilder,
    provider_prefix,
)
from threatintel.cache.base import SYSTEM_CLOCK, CacheBase, CacheEntry, check_ttl
from threatintel.clock import Clock
from threatintel.errors import CacheError, ConfigError

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
#: The largest value read or written: an answer is its result's JSON plus the vendor's body
#: compressed, and the providers refuse bodies over 8 MiB, so a real entry stays far below.
DEFAULT_MAX_ENTRY_BYTES: Final = 16 * 1024 * 1024

_MAGIC: Final = b"TI\x01"
_HEADER: Final = struct.Struct(">dd")
_HEADER_SIZE: Final = len(_MAGIC) + _HEADER.size
_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})
_REASON_LENGTH: Final = 300
#: Keys asked for per SCAN step (a hint to Redis), and read per pipeline round trip.
SCAN_COUNT: Final = 500
_GLOB_SPECIAL: Final = frozenset("*?[]\\")

logger = logging.getLogger("threatintel.cache")

# KEYS: lock, until. ARGV: token, ttl (ms), now, until (both on the caller's clock).
# Take the lock (1), take it over (2), or find it held by a live holder (0). A lock without an
# expiry would be held forever; one whose "until" has passed was left by a holder that stopped
# renewing. A lock without "until" but with an expiry (another tool's) is left to expire.
_ACQUIRE_SCRIPT: Final = """
local taken = 1
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
    local held_until = tonumber(redis.call("GET", KEYS[2]))
    local lapsed = held_until and held_until <= tonumber(ARGV[3])
    if redis.call("PTTL", KEYS[1]) ~= -1 and not lapsed then
        return 0
    end
    redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
    taken = 2
end
redis.call("SET", KEYS[2], ARGV[4], "PX", ARGV[2])
return taken
"""

# KEYS: lock, until. Delete the lock only if it still holds our token: GET then DEL must be one
# atomic step.
_RELEASE_SCRIPT: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    redis.call("DEL", KEYS[2])
    return redis.call("DEL", KEYS[1])
end
return 0
"""

# KEYS: lock, until. ARGV: token, ttl (ms), until. Reset the expiry only if the lock still
# holds our token, in one atomic step likewise; an expired lock is gone and stays gone
# (PEXPIRE never creates a key).
_EXTEND_SCRIPT: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    redis.call("SET", KEYS[2], ARGV[3], "PX", ARGV[2])
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""


def _encode(value: bytes, stored_at: float, expires_at: float) -> bytes:
    return _MAGIC + _HEADER.pack(stored_at, expires_at) + value


def _decode(raw: bytes, max_bytes: int) -> CacheEntry | None:
    """The entry in ``raw``, or None for anything ``_encode`` could not have written."""
    if len(raw) < _HEADER_SIZE or len(raw) > max_bytes or not raw.startswith(_MAGIC):
        return None
    stored_at, expires_at = _HEADER.unpack_from(raw, len(_MAGIC))
    if not (math.isfinite(stored_at) and math.isfinite(expires_at) and stored_at <= expires_at):
        return None  # NaN would never expire, and an age of infinity is no age
    return CacheEntry(raw[_HEADER_SIZE:], stored_at, expires_at)


def _times(head: bytes) -> tuple[float, float] | None:
    """(stored_at, expires_at) from the start of a value, None unless ``_encode`` wrote it."""
    if len(head) < _HEADER_SIZE or not head.startswith(_MAGIC):
        return None
    stored_at, expires_at = _HEADER.unpack_from(head, len(_MAGIC))
    if not (math.isfinite(stored_at) and math.isfinite(expires_at) and stored_at <= expires_at):
        return None
    return stored_at, expires_at


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _check_reply(reply: object, expected: tuple[object, ...], action: str) -> None:
    """Raise ValueError (mapped to CacheError) unless ``reply`` is one of ``expected``.

    Compared by type as well, so that ``True`` never passes for ``1``.
    """
    if not any(type(reply) is type(want) and reply == want for want in expected):
        raise ValueError(f"unexpected reply to {action}: {_shape(reply)}")


def _shape(reply: object) -> str:
    """What a bad reply was, without echoing a possibly huge or hostile value."""
    if isinstance(reply, bytes | str | list | tuple | dict):
        return f"{type(reply).__name__} of length {len(reply)}"
    if isinstance(reply, int) and abs(reply) < 1_000_000:
        return f"the integer {reply}"
    return type(reply).__name__


def _milliseconds(ttl: float) -> int:
    return max(1, math.ceil(check_ttl(ttl) * 1000))


class RedisCache(CacheBase):
    """A ``Cache`` and ``FlightLock`` over one Redis database, with keys under ``prefix``."""

    __slots__ = (
        "_client",
        "_closed",
        "_lookups",
        "_scripts",
        "_secrets",
        "_took_over",
        "_url",
        "clock",
        "max_connections",
        "max_entry_bytes",
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
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
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
        if max_entry_bytes <= _HEADER_SIZE:
            raise ValueError(f"max_entry_bytes must be more than {_HEADER_SIZE}")
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
        #: Longer values are neither written nor read (a longer one read is a corrupt entry).
        self.max_entry_bytes = max_entry_bytes
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._closed = False
        self._took_over = False
        self._lookups = LookupCounts()

    def __repr__(self) -> str:
        return f"RedisCache({self.where!r}, prefix={self.prefix!r})"

    @property
    def label(self) -> str:
        """What messages call this cache: ``Redis at <URL, credentials masked>``."""
        return f"Redis at {self.where}"

    # -- the Cache protocol ----------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        with self._translated("get"):
            # One byte past the limit tells an oversized value from one that just fits; a
            # missing key reads as b"".
            raw = await self._redis().getrange(self.prefix + key, 0, self.max_entry_bytes)
            if not isinstance(raw, bytes):
                raise TypeError(f"unexpected reply to get: {_shape(raw)}")
        entry = _decode(raw, self.max_entry_bytes)
        if entry is None or entry.expired(self.clock.time()):
            return None
        return entry

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The live entries among ``keys``, in one pipelined round trip (GETRANGE per key,
        bounded like ``get``, rather than MGET, which would read oversized values whole)."""
        if not keys:
            return {}
        with self._translated("get"):
            pipe = self._redis().pipeline(transaction=False)
            for key in keys:
                pipe.getrange(self.prefix + key, 0, self.max_entry_bytes)
            replies = await pipe.execute()
            if len(replies) != len(keys) or not all(isinstance(r, bytes) for r in replies):
                raise TypeError(f"unexpected reply to get: {_shape(replies)}")
        now = self.clock.time()
        found: dict[str, CacheEntry] = {}
        for key, raw in zip(keys, replies, strict=True):
            entry = _decode(raw, self.max_entry_bytes)
            if entry is not None and not entry.expired(now):
                found[key] = entry
        return found

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        ms = _milliseconds(ttl)
        now = self.clock.time()
        blob = _encode(bytes(value), now, now + ms / 1000)
        if len(blob) > self.max_entry_bytes:
            # It would read back as a miss: spare Redis the bytes (the old entry stays valid).
            return
        with self._translated("set"):
            # redis-py turns the "OK" reply into True.
            _check_reply(await self._redis().set(self.prefix + key, blob, px=ms), (True,), "set")

    async def delete(self, key: str) -> None:
        with self._translated("delete"):
            _check_reply(await self._redis().delete(self.prefix + key), (0, 1), "delete")

    async def aclose(self) -> None:
        if not self._closed:
            with suppress(CacheError):  # counts are worth a try, not a failed close
                await self.save_lookups()
        self._closed = True
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None:
            with self._translated("close"):
                await client.aclose()

    # -- CacheAdmin and HitCounter -----------------------------------------------------------
    # Counters are three hashes beside the entries, one field per provider: <prefix>stats:hits,
    # <prefix>stats:misses and <prefix>stats:since (when its counting started).

    def _counter_keys(self) -> list[str]:
        return [f"{self.prefix}stats:{name}" for name in ("hits", "misses", "since")]

    async def stats(self) -> CacheStats:
        now = self.clock.time()
        builder = StatsBuilder()
        with self._translated("stats"):
            async for keys in self._scan(ANY_SCHEME):
                pipe = self._redis().pipeline(transaction=False)
                for key in keys:
                    pipe.getrange(key, 0, _HEADER_SIZE - 1)
                    pipe.strlen(key)
                replies = await pipe.execute()
                for i, key in enumerate(keys):
                    times = _times(replies[2 * i])
                    if times is not None and times[1] > now:
                        size = int(replies[2 * i + 1]) - _HEADER_SIZE
                        builder.add(self._name(key), size, times[0])
            hits, misses, since = [
                {
                    _text(name): float(value)
                    for name, value in (await self._redis().hgetall(k)).items()
                }
                for k in self._counter_keys()
            ]
        counts = [
            (name, int(hits.get(name, 0)), int(misses.get(name, 0))) for name in hits | misses
        ]
        counts += [(name, h, m) for name, (h, m) in self._lookups.peek().items()]
        return builder.build(self.label, counts, counting_since=min(since.values(), default=None))

    async def remove(self, *, provider: str | None = None, older_than: float | None = None) -> int:
        cutoff = None if older_than is None else self.clock.time() - older_than
        # Outside the seam: a bad name is the caller's ValueError, not a Redis failure.
        under = provider_prefix(provider) if provider is not None else ANY_SCHEME
        removed = 0
        with self._translated("remove"):
            client = self._redis()
            async for found in self._scan(under):
                keys = found
                if cutoff is not None:
                    pipe = client.pipeline(transaction=False)
                    for key in found:
                        pipe.getrange(key, 0, _HEADER_SIZE - 1)
                    heads = await pipe.execute()
                    keys = [
                        key
                        for key, head in zip(found, heads, strict=True)
                        if (times := _times(head)) is not None and times[0] <= cutoff
                    ]
                if keys:
                    # UNLINK frees the memory in the background: the server never stalls.
                    removed += int(await client.unlink(*keys))
            if older_than is None:
                self._lookups.forget(provider)
                if provider is None:
                    await client.delete(*self._counter_keys())
                else:
                    for counter in self._counter_keys():
                        await client.hdel(counter, provider)
        return removed

    def note_lookup(self, provider: str, *, hit: bool) -> int:
        return self._lookups.add(provider, hit=hit)

    async def save_lookups(self) -> None:
        await self._lookups.save(self._write_lookups)

    async def _write_lookups(self, counts: dict[str, tuple[int, int]]) -> None:
        hits_key, misses_key, since_key = self._counter_keys()
        with self._translated("save counts"):
            pipe = self._redis().pipeline(transaction=False)
            for name, (hits, misses) in counts.items():
                pipe.hincrby(hits_key, name, hits)
                pipe.hincrby(misses_key, name, misses)
                pipe.hsetnx(since_key, name, repr(self.clock.time()))
            await pipe.execute()

    async def _scan(self, key_prefix: str) -> AsyncIterator[list[bytes]]:
        """The names under ``<prefix><key_prefix>``, a SCAN step at a time (never KEYS)."""
        pattern = _glob_escape(self.prefix + key_prefix) + "*"
        cursor: int = 0
        while True:
            cursor, keys = await self._redis().scan(cursor, match=pattern, count=SCAN_COUNT)
            if keys:
                yield [k if isinstance(k, bytes) else k.encode() for k in keys]
            if int(cursor) == 0:
                return

    def _name(self, key: bytes) -> str:
        """A Redis key's cache key (the prefix taken off)."""
        return _text(key)[len(self.prefix) :]

    # -- the FlightLock protocol -------------------------------------------------------------

    def lock_key(self, name: str) -> str:
        """The Redis key that holds the lock called ``name``."""
        return f"{self.prefix}lock:{name}"

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        """A token, or None while a peer holds the lock; CacheError for any other answer.

        An odd reply raises rather than reads as "held": a caller told "held" waits for a peer
        that may not exist, while a CacheError sends it on without the lock.
        """
        ms = _milliseconds(ttl)
        token = secrets.token_urlsafe(16)
        now = self.clock.time()
        with self._translated("lock"):
            taken = await self._script(_ACQUIRE_SCRIPT)(
                keys=self._lock_keys(name), args=[token, ms, repr(now), repr(now + ms / 1000)]
            )
            _check_reply(taken, (0, 1, 2), "lock")
        if taken == 2 and not self._took_over:
            self._took_over = True
            logger.warning(
                "%s: took over a lookup lock left without an expiry or no longer renewed "
                "(later take-overs are not logged)",
                self.label,
            )
        return None if taken == 0 else token

    async def extend_lock(self, name: str, token: str, ttl: float) -> bool:
        ms = _milliseconds(ttl)
        until = repr(self.clock.time() + ms / 1000)
        with self._translated("extend lock"):
            extended = await self._script(_EXTEND_SCRIPT)(
                keys=self._lock_keys(name), args=[token, ms, until]
            )
            _check_reply(extended, (0, 1), "extend lock")
        return bool(extended == 1)

    async def release_lock(self, name: str, token: str) -> None:
        with self._translated("unlock"):
            released = await self._script(_RELEASE_SCRIPT)(keys=self._lock_keys(name), args=[token])
            _check_reply(released, (0, 1), "unlock")

    def _lock_keys(self, name: str) -> list[str]:
        # A separate namespace: no lock name can end up naming another lock's "until".
        return [self.lock_key(name), f"{self.prefix}lock-until:{name}"]

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
        """The one place redis and socket errors, and replies of the wrong shape, become
        ``CacheError``, credentials masked."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            yield
        except CacheError:
            raise  # already ours (a closed cache, an invalid URL)
        except (RedisConnectionError, RedisTimeoutError, OSError, EOFError) as exc:
            raise CacheError(
                f"Redis at {self.where} is unreachable ({action}): {self._reason(exc)}"
            ) from exc
        except RedisError as exc:
            message = f"Redis at {self.where} failed ({action}): {self._reason(exc)}"
            raise CacheError(message) from exc
        except Exception as exc:
            # A reply we, or the client library parsing it, could not make sense of (redis-py
            # lets ValueError, TypeError, AttributeError... escape on garbage): the server is
            # not behaving like Redis, which is as good as not having one.
            message = f"Redis at {self.where} answered nonsense ({action}): {self._reason(exc)}"
            raise CacheError(message) from exc

    def _reason(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        # Cut only once masked (a cut secret would slip past), and cut because a parse error
        # can quote the garbage it choked on.
        return text[:_REASON_LENGTH]
