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
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from threatintel.quota import (
    BLOCKED,
    Grant,
    QuotaStoreUnavailable,
    Window,
    WindowUsage,
    block_end,
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
            reply = [_text(part) for part in await self._run(self._acquire, keys, args)]
            if reply[0] == "stale":
                # Our clock is behind the bucket's newest grant (a slow reply, a lagging
                # instance): judge the request at that time, so no slot is reused early.
                now = float(reply[1])
                continue
            if reply[0] == "blocked" and block_end(reply[1], now) is None:
                # A bad block (inf, nan, decades away, garbage): cleared, then ask again.
                await self._clear_block(bucket)
                continue
            return _grant(reply, windows, now)
        return Grant(False, wait=0.0)

    async def _clear_block(self, bucket: str) -> None:
        try:
            await self._redis.delete(self._key(bucket, "blocked"))
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable("the shared quota store is unavailable") from exc

    async def block(self, bucket: str, until: float) -> None:
        if not math.isfinite(until):
            return
        await self._run(self._block, [self._key(bucket, "blocked")], [repr(until), _ms(BLOCK_TTL)])

    async def refund(self, bucket: str, windows: Sequence[Window], grant: Grant) -> None:
        if grant.at is None:
            return
        keys = [self._window_key(bucket, window, grant.at) for window in windows]
        args: list[str | int] = []
        for window in windows:
            # The same float repr the grant was scored with, so the score matches exactly.
            args += ["s", repr(grant.at + window.seconds)] if window.sliding else ["f", ""]
        await self._run(self._refund, keys, args)

    async def usage(self, bucket: str, windows: Sequence[Window], now: float) -> list[WindowUsage]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for window in windows:
                    key = self._window_key(bucket, window, now)
                    if window.sliding:
                        pipe.zrangebyscore(key, f"({now!r}", "+inf", withscores=True)
                    else:
                        pipe.get(key)
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable("the shared quota store is unavailable") from exc
        result = []
        for window, reply in zip(windows, replies, strict=True):
            if window.sliding:
                used = len(reply)
                reset = float(reply[0][1]) if reply else None
            else:
                used = int(_text(reply)) if reply is not None else 0
                reset = window.reset_at(now)
            remaining = max(0, window.limit - used)
            result.append(WindowUsage(window.name, window.limit, used, remaining, reset))
        return result

    async def blocked_until(self, bucket: str, now: float) -> float | None:
        try:
            raw = await self._redis.get(self._key(bucket, "blocked"))
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable("the shared quota store is unavailable") from exc
        return None if raw is None else block_end(_text(raw), now)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    def _key(self, bucket: str, suffix: str) -> str:
        return f"{self.prefix}{{{bucket}}}:{suffix}"

    def _window_key(self, bucket: str, window: Window, now: float) -> str:
        if window.sliding:
            return self._key(bucket, f"w:{window.name}")
        return self._key(bucket, f"w:{window.name}:{window.window_id(now)}")

    async def _run(self, script: Any, keys: list[str], args: list[str | int]) -> list[Any]:
        try:
            reply = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable("the shared quota store is unavailable") from exc
        return reply if isinstance(reply, list) else [reply]


def _grant(reply: list[str], windows: Sequence[Window], now: float) -> Grant:
    kind = reply[0]
    if kind == "ok":
        return Grant(True, at=now)
    if kind == "blocked":
        until = float(reply[1])
        return Grant(False, wait=until - now, exhausted=BLOCKED, reset_at=until)
    if kind == "wait":
        return Grant(False, wait=float(reply[1]) - now)
    # The bucket comes back when every spent window has reset: report the latest reset.
    spent = [windows[int(index) - 1] for index in reply[1:]]
    reset, name = max((window.reset_at(now), window.name) for window in spent)
    return Grant(False, wait=reset - now, exhausted=name, reset_at=reset)


def _ms(seconds: float) -> int:
    """A key lifetime in whole milliseconds, with the margin."""
    return max(1, math.ceil((max(0.0, seconds) + TTL_MARGIN) * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
