"""Batch jobs as data: the store protocol, its three backends, and the runner.

    store = open_job_store(backend="sqlite", cache_dir=settings.cache_dir, redis_url=None)
    runner = JobRunner(engine, store)
    job = await runner.ingest("iocs.txt", lines)        # the input, streamed into the manifest
    job = await runner.run(job.id)                      # every chunk not yet done

module     what it holds
base       Job, JobState, Entry, ResultRow, Gap, the JobStore protocol, UnknownJob
memory     MemoryJobStore: this process only (tests, CACHE_BACKEND=memory)
sqlite     SQLiteJobStore: one file under the cache directory, the default
redis      RedisJobStore: shared by every instance; import it from ``threatintel.jobs.redis``
           (not re-exported here, so the redis client loads only when it is used)
runner     JobRunner: ingest input, run chunks through the engine, fill gaps

A job is data, not a process: any runner (the CLI, an HTTP handler, a worker fed by a queue)
claims a chunk, runs it and writes its rows idempotently; resuming runs the chunks not done.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from threatintel.jobs.base import (
    DEFAULT_LEASE,
    FINISHED,
    GAP_STATUSES,
    MAX_SPELLINGS,
    Entry,
    Gap,
    Job,
    JobState,
    JobStore,
    JobStoreError,
    ResultRow,
    UnknownJob,
    indicator_key,
)
from threatintel.jobs.memory import MemoryJobStore
from threatintel.jobs.sqlite import FILENAME, SQLiteJobStore

if TYPE_CHECKING:
    from threatintel.settings import Settings

__all__ = [
    "DEFAULT_LEASE",
    "FINISHED",
    "GAP_STATUSES",
    "MAX_SPELLINGS",
    "Entry",
    "Gap",
    "Job",
    "JobState",
    "JobStore",
    "JobStoreError",
    "MemoryJobStore",
    "ResultRow",
    "SQLiteJobStore",
    "UnknownJob",
    "indicator_key",
    "job_store_for",
    "open_job_store",
]

BACKENDS: Final = ("memory", "sqlite", "redis")


def open_job_store(*, backend: str, cache_dir: str | Path, redis_url: str | None) -> JobStore:
    """The job store the cache backend setting names; nothing opens until first use."""
    name = backend.strip().lower()
    if name == "memory":
        return MemoryJobStore()
    if name == "sqlite":
        return SQLiteJobStore(Path(cache_dir) / FILENAME)
    if name == "redis":
        if not redis_url:
            raise ValueError("the redis job store needs a Redis URL")
        from threatintel.jobs.redis import RedisJobStore  # the redis client only when used

        return RedisJobStore(redis_url)
    raise ValueError(f"unknown job store backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def job_store_for(settings: Settings) -> JobStore:
    """The job store beside the cache: Redis when REDIS_URL is set, else the SQLite file.
    ConfigError (naming the settings, never the URL) when it cannot be set up."""
    from threatintel.errors import ConfigError

    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    try:
        return open_job_store(
            backend=settings.resolved_cache_backend,
            cache_dir=settings.cache_dir,
            redis_url=redis_url,
        )
    except ValueError:
        raise ConfigError("REDIS_URL/CACHE_BACKEND: the job store cannot be set up") from None
