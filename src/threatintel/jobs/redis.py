"""RedisJobStore: jobs shared by every instance (CLI, HTTP servers, workers) through one Redis.

    store = RedisJobStore("redis://127.0.0.1:6379/0")

Every key of a job carries the job id as a hash tag, so a cluster keeps a job in one slot and
the scripts below touch one slot only (``<prefix>{<id>}:...``):

    :meta      HASH   input, providers, state, times, sealed, lines_read, rejected, message, chunks
    :m         HASH   indicator key -> {"i": indicator JSON, "s": spellings, "c": chunk}
    :c:<seq>   LIST   the chunk's indicator keys, in input order
    :chunks    HASH   seq -> "done" or the end of its claim's lease
    :r         HASH   indicator key -> enrichment JSON          (result rows)
    :v         HASH   indicator key -> verdict                 (to keep the counters exact)
    :n         HASH   counters: t:<type> (manifest), d:<type> (answered), v:<verdict>
    :g, :gk    HASH   "<key>\\n<provider>" -> gap JSON; key -> its gaps' providers
<prefix>index  ZSET   job ids scored by creation time

Appending, claiming and writing a row are each one Lua script, so they are atomic: two workers
never claim one chunk, and a row written twice leaves the counters as they were. A Redis error
becomes JobStoreError (the URL, which may hold a password, is never quoted).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from threatintel.jobs.base import (
    FINISHED,
    MAX_SPELLINGS,
    PAGE,
    Entry,
    Gap,
    Job,
    JobState,
    JobStoreError,
    ResultRow,
    UnknownJob,
    clip_spelling,
    indicator_key,
)
from threatintel.models import Indicator

DEFAULT_PREFIX: Final = "threatintel:jobs:"
SOCKET_TIMEOUT: Final = 5.0

# KEYS: meta, m, n, chunks. ARGV: prefix of chunk lists, lines_read, rejected, now, max
# spellings, then (key, indicator JSON, type, spelling) per item. Returns the new keys.
APPEND_LUA: Final = """
local seq = tonumber(redis.call('HGET', KEYS[1], 'chunks') or '0')
local new = {}
for i = 6, #ARGV, 4 do
  local key, spelling = ARGV[i], ARGV[i + 3]
  local found = redis.call('HGET', KEYS[2], key)
  local entry
  if found then
    entry = cjson.decode(found)
  else
    entry = {i = ARGV[i + 1], s = {}, c = seq}
    redis.call('RPUSH', ARGV[1] .. seq, key)
    redis.call('HINCRBY', KEYS[3], 't:' .. ARGV[i + 2], 1)
    new[#new + 1] = key
  end
  local known = (spelling == '')
  for _, s in ipairs(entry.s) do
    if s == spelling then known = true end
  end
  if not known and #entry.s < tonumber(ARGV[5]) then
    entry.s[#entry.s + 1] = spelling
  end
  if not found or not known then
    redis.call('HSET', KEYS[2], key, cjson.encode(entry))
  end
end
if #new > 0 then
  redis.call('HSET', KEYS[4], tostring(seq), '0')
  redis.call('HSET', KEYS[1], 'chunks', seq + 1)
end
redis.call('HSET', KEYS[1], 'lines_read', ARGV[2], 'updated_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'rejected', ARGV[3])
return new
"""

# KEYS: meta, chunks. ARGV: now, lease end. Returns the claimed seq or -1.
CLAIM_LUA: Final = """
local count = tonumber(redis.call('HGET', KEYS[1], 'chunks') or '0')
for seq = 0, count - 1 do
  local state = redis.call('HGET', KEYS[2], tostring(seq))
  if state and state ~= 'done' and tonumber(state) <= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[2], tostring(seq), ARGV[2])
    return seq
  end
end
return -1
"""

# KEYS: chunks. ARGV: lease end, then the seqs to renew; a chunk done meanwhile stays done
# (one script, so a renewal never lands between our own HGET and a completion).
RENEW_LUA: Final = """
for i = 2, #ARGV do
  local state = redis.call('HGET', KEYS[1], ARGV[i])
  if state and state ~= 'done' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
  end
end
return 0
"""

# KEYS: meta, m, r, v, n, g, gk. ARGV: key, type, verdict, body, now, then (provider, gap
# JSON) per gap. A key outside the manifest is ignored.
PUT_LUA: Final = """
local key = ARGV[1]
if redis.call('HEXISTS', KEYS[2], key) == 0 then return 0 end
local old = redis.call('HGET', KEYS[4], key)
if old then
  redis.call('HINCRBY', KEYS[5], 'v:' .. old, -1)
else
  redis.call('HINCRBY', KEYS[5], 'd:' .. ARGV[2], 1)
end
redis.call('HINCRBY', KEYS[5], 'v:' .. ARGV[3], 1)
redis.call('HSET', KEYS[4], key, ARGV[3])
redis.call('HSET', KEYS[3], key, ARGV[4])
local previous = redis.call('HGET', KEYS[7], key)
if previous then
  for _, provider in ipairs(cjson.decode(previous)) do
    redis.call('HDEL', KEYS[6], key .. '\\n' .. provider)
  end
end
local names = {}
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[6], key .. '\\n' .. ARGV[i], ARGV[i + 1])
  names[#names + 1] = ARGV[i]
end
if #names > 0 then
  redis.call('HSET', KEYS[7], key, cjson.encode(names))
else
  redis.call('HDEL', KEYS[7], key)
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
return 1
"""

# KEYS: meta. ARGV: now. A running job becomes done; 1 for the caller that made it so.
FINISH_LUA: Final = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'message', '', 'updated_at', ARGV[1])
return 1
"""

# KEYS: meta. ARGV: now. A queued job starts running; returns the state after (a chunk of a
# job that is done, failed or cancelled must not reopen it).
START_LUA: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[1])
  return 'running'
end
return state or ''
"""

_PARTS: Final = ("meta", "m", "r", "v", "n", "g", "gk", "chunks")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise JobStoreError(f"Redis job store failed ({type(exc).__name__})") from None


class RedisJobStore:
    """A ``JobStore`` in Redis (see the module docstring for the layout)."""

    __slots__ = (
        "_append",
        "_claim",
        "_finish",
        "_put",
        "_renew",
        "_start",
        "client",
        "prefix",
    )

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        # decode_responses: every reply is str, which redis-py's types cannot express.
        self.client: Any = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
        )
        self._append = self.client.register_script(APPEND_LUA)
        self._claim = self.client.register_script(CLAIM_LUA)
        self._put = self.client.register_script(PUT_LUA)
        self._renew = self.client.register_script(RENEW_LUA)
        self._finish = self.client.register_script(FINISH_LUA)
        self._start = self.client.register_script(START_LUA)

    def _key(self, job_id: str, part: str) -> str:
        return f"{self.prefix}{{{job_id}}}:{part}"

    def _keys(self, job_id: str, *parts: str) -> list[str]:
        return [self._key(job_id, part) for part in parts]

    async def _meta(self, job_id: str) -> dict[str, str]:
        meta: dict[str, str] = await self.client.hgetall(self._key(job_id, "meta"))
        if not meta:
            raise UnknownJob(job_id)
        return meta

    async def create(
        self,
        input: str,
        *,
        providers: Sequence[str],
        now: float,
        options: Mapping[str, str] | None = None,
    ) -> Job:
        job = Job.queued(input, providers, now=now, options=options)
        with _translated():
            await self.client.hset(
                self._key(job.id, "meta"),
                mapping={
                    "input": job.input,
                    "providers": json.dumps(job.providers),
                    "state": job.state.value,
                    "created_at": repr(now),
                    "updated_at": repr(now),
                    "sealed": "0",
                    "lines_read": "0",
                    "rejected": "0",
                    "chunks": "0",
                    "options": json.dumps(job.options),
                },
            )
            await self.client.zadd(self.prefix + "index", {job.id: now})
        return job

    async def get(self, job_id: str) -> Job:
        with _translated():
            meta = await self._meta(job_id)
            counts: dict[str, str] = await self.client.hgetall(self._key(job_id, "n"))
            gaps = await self.client.hlen(self._key(job_id, "g"))
            states: list[str] = await self.client.hvals(self._key(job_id, "chunks"))

        def group(prefix: str) -> dict[str, int]:
            return {
                name[len(prefix) :]: int(value)
                for name, value in counts.items()
                if name.startswith(prefix) and int(value) > 0
            }

        types, done_types = group("t:"), group("d:")
        return Job(
            id=job_id,
            input=meta["input"],
            providers=tuple(json.loads(meta["providers"])),
            state=JobState(meta["state"]),
            created_at=float(meta["created_at"]),
            updated_at=float(meta["updated_at"]),
            total=sum(types.values()),
            done=sum(done_types.values()),
            chunks=int(meta.get("chunks", 0)),
            chunks_done=sum(state == "done" for state in states),
            sealed=meta.get("sealed") == "1",
            lines_read=int(meta.get("lines_read", 0)),
            rejected=int(meta.get("rejected", 0)),
            gaps=int(gaps),
            message=meta.get("message") or None,
            verdicts=group("v:"),
            types=types,
            done_types=done_types,
            options=json.loads(meta.get("options") or "{}"),
        )

    async def jobs(self) -> list[Job]:
        with _translated():
            ids: list[str] = await self.client.zrevrange(self.prefix + "index", 0, -1)
        found = []
        for job_id in ids:
            try:
                found.append(await self.get(job_id))
            except UnknownJob:  # deleted meanwhile
                continue
        return found

    async def append(
        self,
        job_id: str,
        items: Sequence[tuple[Indicator, str]],
        *,
        lines_read: int,
        rejected: int = 0,
        now: float,
    ) -> list[str]:
        args: list[Any] = [self._key(job_id, "c:"), lines_read, rejected, repr(now), MAX_SPELLINGS]
        for indicator, spelling in items:
            args += [
                indicator_key(indicator),
                indicator.model_dump_json(),
                indicator.type.value,
                clip_spelling(spelling),
            ]
        with _translated():
            await self._meta(job_id)
            new = await self._append(keys=self._keys(job_id, "meta", "m", "n", "chunks"), args=args)
        return [str(key) for key in new]

    async def _set(self, job_id: str, now: float, **fields: str) -> None:
        with _translated():
            await self._meta(job_id)
            await self.client.hset(
                self._key(job_id, "meta"), mapping={**fields, "updated_at": repr(now)}
            )

    async def seal(self, job_id: str, *, now: float) -> None:
        await self._set(job_id, now, sealed="1")

    async def set_state(
        self, job_id: str, state: JobState, *, now: float, message: str | None = None
    ) -> None:
        await self._set(job_id, now, state=state.value, message=message or "")

    async def start(self, job_id: str, *, now: float) -> JobState | None:
        """A queued job becomes running, atomically; the job's state after (None: no job).
        Only a queued job moves: a chunk delivered late never reopens a finished job, and a
        cancel landing meanwhile is not overwritten."""
        with _translated():
            state = await self._start(keys=[self._key(job_id, "meta")], args=[repr(now)])
        return JobState(state) if state else None

    async def finish(self, job_id: str, *, now: float) -> bool:
        """Mark a running job done, atomically: True for the one caller (of several workers
        finishing its last chunks at once) that did, so one of them reports it."""
        with _translated():
            return bool(await self._finish(keys=[self._key(job_id, "meta")], args=[repr(now)]))

    async def claim(self, job_id: str, worker: str, *, now: float, lease: float) -> int | None:
        with _translated():
            seq = await self._claim(
                keys=self._keys(job_id, "meta", "chunks"), args=[repr(now), repr(now + lease)]
            )
        return None if int(seq) < 0 else int(seq)

    async def renew(self, job_id: str, chunks: Sequence[int], *, now: float, lease: float) -> None:
        if not chunks:
            return
        with _translated():
            await self._renew(
                keys=[self._key(job_id, "chunks")],
                args=[repr(now + lease), *(str(seq) for seq in chunks)],
            )

    async def release(self, job_id: str) -> None:
        key = self._key(job_id, "chunks")
        with _translated():
            states: dict[str, str] = await self.client.hgetall(key)
            held = {seq: "0" for seq, state in states.items() if state != "done"}
            if held:
                await self.client.hset(key, mapping=held)

    async def entries(self, job_id: str, chunk: int) -> list[Entry]:
        out: list[Entry] = []
        with _translated():
            keys: list[str] = await self.client.lrange(self._key(job_id, f"c:{chunk}"), 0, -1)
            for start in range(0, len(keys), PAGE):
                page = keys[start : start + PAGE]
                found: list[str | None] = await self.client.hmget(self._key(job_id, "m"), page)
                for raw in found:
                    if raw is None:
                        continue
                    entry = json.loads(raw)
                    spellings = entry["s"] if isinstance(entry["s"], list) else []
                    out.append(Entry(Indicator.model_validate_json(entry["i"]), tuple(spellings)))
        return out

    async def complete(self, job_id: str, chunk: int, *, now: float) -> None:
        with _translated():
            await self.client.hset(self._key(job_id, "chunks"), str(chunk), "done")
        await self._set(job_id, now)

    async def put(self, job_id: str, rows: Sequence[ResultRow], *, now: float) -> None:
        keys = self._keys(job_id, "meta", "m", "r", "v", "n", "g", "gk")
        with _translated():
            # One round trip for the lot; each row's script is atomic on its own.
            async with self.client.pipeline(transaction=False) as pipe:
                for row in rows:
                    args: list[Any] = [row.key, row.type, row.verdict, row.body, repr(now)]
                    for gap in row.gaps:
                        args += [gap.provider, json.dumps([gap.status, gap.reset_at])]
                    await self._put(keys=keys, args=args, client=pipe)
                await pipe.execute()

    async def answered(self, job_id: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with _translated():
            for start in range(0, len(keys), PAGE):
                page = list(keys[start : start + PAGE])
                verdicts = await self.client.hmget(self._key(job_id, "v"), page)
                found.update(key for key, verdict in zip(page, verdicts, strict=True) if verdict)
        return found

    async def result(self, job_id: str, key: str) -> str | None:
        with _translated():
            body: str | None = await self.client.hget(self._key(job_id, "r"), key)
        return body

    async def results(self, job_id: str) -> AsyncIterator[str]:
        chunks = (await self.get(job_id)).chunks
        for seq in range(chunks):
            start = 0
            while True:
                with _translated():
                    keys: list[str] = await self.client.lrange(
                        self._key(job_id, f"c:{seq}"), start, start + PAGE - 1
                    )
                    bodies = await self.client.hmget(self._key(job_id, "r"), keys) if keys else []
                for body in bodies:
                    if body is not None:
                        yield str(body)
                if len(keys) < PAGE:
                    break
                start += PAGE

    async def gaps(self, job_id: str) -> AsyncIterator[Gap]:
        with _translated():
            async for field, value in self.client.hscan_iter(self._key(job_id, "g")):
                key, _, provider = str(field).rpartition("\n")
                status, reset_at = json.loads(value)
                yield Gap(key, provider, status, reset_at)

    async def delete(self, job_id: str) -> None:
        with _translated():
            chunks = await self.client.hget(self._key(job_id, "meta"), "chunks")
            parts = [*_PARTS, *(f"c:{seq}" for seq in range(int(chunks or 0)))]
            await self.client.unlink(*self._keys(job_id, *parts))
            await self.client.zrem(self.prefix + "index", job_id)

    async def cleanup(self, *, now: float, retention: float) -> int:
        gone = 0
        with _translated():
            ids: list[str] = await self.client.zrange(self.prefix + "index", 0, -1)
            for job_id in ids:
                state, updated = await self.client.hmget(
                    self._key(job_id, "meta"), ["state", "updated_at"]
                )
                if state is None:  # meta gone: only the index entry is left
                    await self.client.zrem(self.prefix + "index", job_id)
                    continue
                if JobState(state) in FINISHED and float(updated) < now - retention:
                    await self.delete(job_id)
                    gone += 1
        return gone

    async def aclose(self) -> None:
        await self.client.aclose()
