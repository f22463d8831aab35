"""The shared quota store: one budget per key for every instance behind the load balancer.

    store = RedisQuotaStore("redis://127.0.0.1:6379/0")
    limiter = RateLimiter("virustotal", keys, windows, store=store, clock=SystemClock())
    ...
    await store.aclose()

Layout, all keys of a bucket under one hash tag so a cluster keeps them in one slot
(``<prefix>{virustotal:key:0123abcd89}:...``):

    ...:w:<window>             ZSET, sliding window: one member per grant ("<time>:<random>"),
                               scored with the instant the grant stops counting
    ...:w:<window>:<id>        counter of a fixed window (id: day/month/epoch multiple)
    ...:blocked                until when nothing is granted (a 429 correction)
    ...:now                    the newest instant a grant was made at

One Lua script checks the block and every window, then records the grant in all of them, so
concurrent instances can never overspend. Times come from the caller's clock, never Redis TIME:
tests with a virtual clock work, and instances with synced clocks agree. Key expiries only
collect garbage; correctness rests on the scores and window ids.

Every reply is checked against what the scripts and commands can return (its type, length and
the range of each number), and reads are bounded on the server (``ZCOUNT`` and the first score
rather than a whole window's members). A Redis error, a reply the client library cannot parse,
or one of the wrong shape is raised as QuotaStoreUnavailable, so the FallbackQuotaStore counts
locally instead of failing the lookup.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from threatintel.quota.base import (
    BLOCKED,
    Grant,
    QuotaStoreUnavailable,
    Window,
    WindowUsage,
    block_end,
    decode_limits,
    encode_limits,
)

DEFAULT_PREFIX = "threatintel:quota:"
DEFAULT_SOCKET_TIMEOUT = 2.0
#: Extra life for every key past its last use, so a clock a little ahead never loses counts.
TTL_MARGIN = 60.0
#: A block never needs to outlive the next monthly reset; acquire also deletes a block it finds
#: over, so this only bounds the garbage of buckets that are never used again.
BLOCK_TTL = 32 * 86_400.0
#: How often a caller whose clock is behind the bucket's newest grant is re-judged at that time.
STALE_RETRIES = 3
#: How far past what it could be a time in a reply may lie before the reply is taken for
#: garbage: another instance's clock a little ahead, windows lengthened since (a larger
#: rate-limit margin) are fine; a time far in the future would corrupt every window it touched.
MAX_CLOCK_AHEAD = 86_400.0
#: A number in a reply is never longer than this as text (a float's repr is at most 24).
_MAX_NUMBER_TEXT = 32
#: A count read back is never more than this (a window's limit is far below it).
_MAX_COUNT = 10**12
_ACQUIRE_KINDS = frozenset({"ok", "stale", "blocked", "wait", "spent"})

# KEYS: block, now, then one key per window.
# ARGV: now, member, ttl of the "now" key (ms), then per window: kind ("s"/"f"), limit,
#       score of a grant made now (sliding: now + seconds; unused for fixed), ttl (ms).
# Replies: {"ok"} | {"stale", newest} | {"blocked", until} | {"wait", frees_at} | {"spent", i...}.
# Scores and times travel as strings and Lua only compares them, so no digit is lost.
ACQUIRE_LUA = """
local now = tonumber(ARGV[1])
local seen = redis.call('GET', KEYS[2])
if seen and tonumber(seen) > now then
  return {'stale', seen}
end
local blocked = redis.call('GET', KEYS[1])
if blocked then
  if tonumber(blocked) > now then
    return {'blocked', blocked}
  end
  redis.call('DEL', KEYS[1])
end
local spent = {'spent'}
local frees_at = nil
for i = 1, #KEYS - 2 do
  local key, a = KEYS[i + 2], 3 + (i - 1) * 4
  local limit = tonumber(ARGV[a + 2])
  if ARGV[a + 1] == 's' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
    local count = redis.call('ZCARD', key)
    if count >= limit then
      local score = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')[2]
      if frees_at == nil or tonumber(score) > tonumber(frees_at) then
        frees_at = score
      end
    end
  elseif tonumber(redis.call('GET', key) or '0') >= limit then
    spent[#spent + 1] = tostring(i)
  end
end
if #spent > 1 then
  return spent
end
if frees_at then
  return {'wait', frees_at}
end
for i = 1, #KEYS - 2 do
  local key, a = KEYS[i + 2], 3 + (i - 1) * 4
  if ARGV[a + 1] == 's' then
    redis.call('ZADD', key, ARGV[a + 3], ARGV[2])
  else
    redis.call('INCR', key)
  end
  redis.call('PEXPIRE', key, ARGV[a + 4])
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return {'ok'}
"""

# KEYS: block. ARGV: until, ttl (ms). A block only ever grows.
BLOCK_LUA = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


# KEYS: one key per window. ARGV: per window: kind ("s"/"f"), score of the grant (sliding) or
# "" (fixed). Uncounts one grant in every window, atomically; a fixed window's key is the one
# the grant was counted in, so a window that has reset since is not touched.
REFUND_LUA = """
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 2
  if ARGV[a] == 's' then
    local member = redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[a + 1], ARGV[a + 1], 'LIMIT', 0, 1)[1]
    if member then
      redis.call('ZREM', KEYS[i], member)
    end
  elseif tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return 1
"""


class RedisQuotaStore:
    """A QuotaStore in Redis, shared by every instance that uses the same ``prefix``.

        store = RedisQuotaStore("redis://cache:6379/0")       # owns its client
        store = RedisQuotaStore(client=existing, prefix="x:")  # borrows one; aclose leaves it

    Every Redis failure is raised as QuotaStoreUnavailable (the limiter then counts locally).
    """

    __slots__ = ("_acquire", "_block", "_owns_client", "_redis", "_refund", "prefix")

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("give RedisQuotaStore either a url or a client")
        if client is None:
            client = Redis.from_url(
                str(url),
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # One immediate retry replaces a pooled connection the server closed; more, with
                # backoff, would stall every lookup while Redis is down instead of falling back.
                retry=Retry(NoBackoff(), 1),
            )
        self._redis = client
        self._owns_client = url is not None
        self.prefix = prefix
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._block = client.register_script(BLOCK_LUA)
        self._refund = client.register_script(REFUND_LUA)

    def __repr__(self) -> str:
        # Never the URL: it may carry a password.
        return f"RedisQuotaStore(prefix={self.prefix!r})"

    async def acquire(self, bucket: str, windows: Sequence[Window], now: float) -> Grant:
        member_id = secrets.token_hex(6)
        bad_block = False
        for _ in range(STALE_RETRIES):
            keys = [self._key(bucket, "blocked"), self._key(bucket, "now")]
            per_window: list[str | int] = []
            ttls = [_ms(0.0)]
            for window in windows:
                keys.append(self._window_key(bucket, window, now))
                if window.sliding:
                    ttls.append(_ms(window.seconds))
                    per_window += ["s", window.limit, repr(now + window.seconds), ttls[-1]]
                else:
                    ttls.append(_ms(window.reset_at(now) - now))
                    per_window += ["f", window.limit, "", ttls[-1]]
            args = [repr(now), f"{now!r}:{member_id}", max(ttls), *per_window]
            raw = await self._run(self._acquire, keys, args)
            with _unavailable():
                reply = _acquire_reply(raw, len(windows))
                if reply[0] == "stale":
                    # Our clock is behind the bucket's newest grant (a slow reply, a lagging
                    # instance): judge the request at that time, so no slot is reused early.
                    now = _number(reply[1], above=now, at_most=now + MAX_CLOCK_AHEAD)
                    continue
                bad_block = reply[0] == "blocked" and block_end(reply[1], now) is None
                if not bad_block:
                    return _grant(reply, windows, now)
            # A bad block (inf, nan, decades away): cleared, then ask again.
            await self._clear_block(bucket)
        if bad_block:  # cleared and reported again: this is no Redis we can trust
            raise QuotaStoreUnavailable(
                "the shared quota store keeps reporting an impossible block"
            )
        return Grant(False, wait=0.0)

    async def _clear_block(self, bucket: str) -> None:
        with _unavailable():
            await self._redis.delete(self._key(bucket, "blocked"))

    async def block(self, bucket: str, until: float) -> None:
        if not math.isfinite(until):
            return
        reply = await self._run(
            self._block, [self._key(bucket, "blocked")], [repr(until), _ms(BLOCK_TTL)]
        )
        with _unavailable():
            _expect_one(reply)

    async def refund(self, bucket: str, windows: Sequence[Window], grant: Grant) -> None:
        if grant.at is None:
            return
        keys = [self._window_key(bucket, window, grant.at) for window in windows]
        args: list[str | int] = []
        for window in windows:
            # The same float repr the grant was scored with, so the score matches exactly.
            args += ["s", repr(grant.at + window.seconds)] if window.sliding else ["f", ""]
        reply = await self._run(self._refund, keys, args)
        with _unavailable():
            _expect_one(reply)

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        with _unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for window in windows:
                    key = self._window_key(bucket, window, now)
                    if window.sliding:
                        # The count and the earliest score only: a window's members could be
                        # many, and none of them is needed.
                        pipe.zcount(key, f"({now!r}", "+inf")
                        pipe.zrangebyscore(
                            key, f"({now!r}", "+inf", start=0, num=1, withscores=True
                        )
                    else:
                        pipe.get(key)
                replies = iter(await pipe.execute())
            result = []
            for window in windows:
                if window.sliding:
                    used = _count(next(replies))
                    reset = _first_score(next(replies), now, window)
                else:
                    reply = next(replies)
                    used = _count(reply) if reply is not None else 0
                    reset = window.reset_at(now)
                remaining = max(0, window.limit - used)
                result.append(WindowUsage(window.name, window.limit, used, remaining, reset))
            if next(replies, None) is not None:
                raise ValueError("more replies than commands")
        return result

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        with _unavailable():
            raw = await self._redis.get(self._key(bucket, "blocked"))
            if raw is None:
                return None
            if not isinstance(raw, bytes | str):
                raise ValueError("a block is stored as text")
            text = _text(raw)
        # A bad row (not a number, non-finite, decades away) is no block, as in every store.
        return block_end(text, now)

    async def learned_limits(self, bucket: str, now: float) -> dict[str, int]:
        with _unavailable():
            raw = await self._redis.get(self._key(bucket, "limits"))
        return decode_limits(raw, now)

    async def keep_limits(self, bucket: str, limits: Mapping[str, int], until: float) -> None:
        if not math.isfinite(until):
            return
        with _unavailable():
            # Expired by Redis too, a block's lifetime later: `until` is the caller's clock.
            await self._redis.set(
                self._key(bucket, "limits"), encode_limits(limits, until), px=_ms(BLOCK_TTL)
            )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    def _key(self, bucket: str, suffix: str) -> str:
        return f"{self.prefix}{{{bucket}}}:{suffix}"

    def _window_key(self, bucket: str, window: Window, now: float) -> str:
        if window.sliding:
            return self._key(bucket, f"w:{window.name}")
        return self._key(bucket, f"w:{window.name}:{window.window_id(now)}")

    async def _run(self, script: Any, keys: list[str], args: list[str | int]) -> object:
        with _unavailable():
            reply: object = await script(keys=keys, args=args)
        return reply


@contextmanager
def _unavailable() -> Iterator[None]:
    """The one place Redis errors, and replies of the wrong shape, become QuotaStoreUnavailable.

    Anything raised while talking to Redis or reading its reply counts: redis-py lets
    ValueError, TypeError or AttributeError escape when a server sends garbage, and our own
    checks raise ValueError.
    """
    try:
        yield
    except QuotaStoreUnavailable:
        raise
    except (RedisError, OSError, EOFError) as exc:
        raise QuotaStoreUnavailable("the shared quota store is unavailable") from exc
    except Exception as exc:
        raise QuotaStoreUnavailable(
            f"the shared quota store gave an unexpected reply ({type(exc).__name__})"
        ) from exc


def _acquire_reply(raw: object, windows: int) -> list[str]:
    """ACQUIRE_LUA's reply as text, if it has one of the shapes the script returns."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= windows + 1:
        raise ValueError("the acquire reply is not a short list")
    reply = [_text(part) for part in raw]
    kind = reply[0]
    expected_length = {"ok": 1, "stale": 2, "blocked": 2, "wait": 2}.get(kind)
    if kind not in _ACQUIRE_KINDS or (expected_length not in (None, len(reply))):
        raise ValueError("the acquire reply has an unknown kind or length")
    if kind == "spent" and len(reply) < 2:
        raise ValueError("a spent reply names no window")
    return reply


def _grant(reply: list[str], windows: Sequence[Window], now: float) -> Grant:
    """The grant a checked acquire reply stands for; ValueError for numbers out of range."""
    kind = reply[0]
    if kind == "ok":
        return Grant(True, at=now)
    if kind == "blocked":
        # The script reports a block only while it lasts. How far ahead one may reach is the
        # block store's business (see ``block``); here it only has to be a number.
        until = _number(reply[1], above=now)
        return Grant(False, wait=until - now, exhausted=BLOCKED, reset_at=until)
    if kind == "wait":
        # A sliding window's oldest counted grant: scored now + seconds at most (give or take
        # MAX_CLOCK_AHEAD), and the script has already dropped those at or before now.
        longest = max((w.seconds for w in windows if w.sliding), default=None)
        if longest is None:
            raise ValueError("a wait reply without a sliding window")
        frees_at = _number(reply[1], above=now, at_most=now + longest + MAX_CLOCK_AHEAD)
        return Grant(False, wait=frees_at - now)
    # The bucket comes back when every spent window has reset: report the latest reset.
    spent = []
    for index in reply[1:]:
        position = _count(index) - 1
        if not 0 <= position < len(windows) or windows[position].sliding:
            raise ValueError("a spent reply names a window that cannot be spent")
        spent.append(windows[position])
    reset, name = max((window.reset_at(now), window.name) for window in spent)
    return Grant(False, wait=reset - now, exhausted=name, reset_at=reset)


def _number(value: object, *, above: float = -math.inf, at_most: float = math.inf) -> float:
    """A finite number sent as text (or a parsed score), within (above, at_most]; else
    ValueError. Our times always travel as text: an integer reply is not one of them."""
    if not isinstance(value, bytes | str | float):
        raise ValueError("a number was expected")
    if isinstance(value, bytes | str) and len(value) > _MAX_NUMBER_TEXT:
        raise ValueError("a number was expected, not a long string")
    number = float(_text(value)) if isinstance(value, bytes | str) else value
    if not (math.isfinite(number) and above < number <= at_most):
        raise ValueError("a number out of range")
    return number


def _count(value: object) -> int:
    """A count (an integer reply, or one sent as text) from 0 to _MAX_COUNT; else ValueError."""
    if isinstance(value, bool) or not isinstance(value, bytes | str | int):
        raise ValueError("a count was expected")
    if isinstance(value, bytes | str) and len(value) > _MAX_NUMBER_TEXT:
        raise ValueError("a count was expected, not a long string")
    count = int(_text(value)) if isinstance(value, bytes | str) else value
    if not 0 <= count <= _MAX_COUNT:
        raise ValueError("a count out of range")
    return count


def _first_score(reply: object, now: float, window: Window) -> float | None:
    """The earliest score of a sliding window (ZRANGEBYSCORE ... LIMIT 0 1 WITHSCORES)."""
    if not isinstance(reply, list) or len(reply) > 1:
        raise ValueError("the first-score reply is not a list of at most one member")
    if not reply:
        return None
    pair = reply[0]
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise ValueError("a member without its score")
    return _number(pair[1], above=now, at_most=now + window.seconds + MAX_CLOCK_AHEAD)


def _expect_one(reply: object) -> None:
    """BLOCK_LUA and REFUND_LUA always return 1."""
    if isinstance(reply, bool) or reply != 1:
        raise ValueError("the script's reply is not 1")


def _ms(seconds: float) -> int:
    """A key lifetime in whole milliseconds, with the margin."""
    return max(1, math.ceil((max(0.0, seconds) + TTL_MARGIN) * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
