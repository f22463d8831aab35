"""Vendor quotas, spent exactly once: the limiter, the stores it counts in, and their vocabulary.

    limiter = RateLimiter("virustotal", keys=["k1"], windows=[Window.per_minute(4)],
                          store=SQLiteQuotaStore(path), clock=SystemClock())
    key = await limiter.acquire()

module     what it holds
base       Window, Grant, WindowUsage, KeyUsage, the QuotaStore protocol, block_end, and
           the learned-limits encoding the shared stores keep
memory     MemoryQuotaStore: this process only (tests, and the last resort)
sqlite     SQLiteQuotaStore: one file shared by every process on the machine
redis      RedisQuotaStore: shared by every replica; import it from ``threatintel.quota.redis``
           (not re-exported here, so the redis client loads only when it is used)
fallback   FallbackQuotaStore: a shared store with a local stand-in while it is down
limiter    RateLimiter (hands out keys with budget left) and the QuotaWait event

Nothing here imports the settings (nor, through them, scoring and the parser): keys are named
with ``threatintel._redaction.fingerprint``, a leaf module (tests/test_layering.py checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threatintel._lazy import lazy_exports

if TYPE_CHECKING:
    from threatintel.quota.base import (
        ANONYMOUS,
        BLOCKED,
        CONFIGURED,
        DAY,
        DEFAULT,
        HOUR,
        LEARNED,
        MAX_BLOCK,
        MINUTE,
        MONTH,
        Grant,
        KeyUsage,
        QuotaStore,
        QuotaStoreUnavailable,
        Window,
        WindowUsage,
        block_end,
    )
    from threatintel.quota.fallback import STORE_RETRY_AFTER, FallbackQuotaStore
    from threatintel.quota.limiter import (
        DEFAULT_PENALTY,
        LEARNED_TTL,
        MAX_BLOCK_WAIT,
        MAX_LEARNED_LIMIT,
        MIN_WAIT,
        NOTICE_AFTER,
        LimitsProbe,
        QuotaWait,
        QuotaWaitHook,
        RateLimiter,
    )
    from threatintel.quota.memory import MemoryQuotaStore
    from threatintel.quota.sqlite import SQLiteQuotaStore

# Each name loads its module on first use (PEP 562): `threatintel version` reads BLOCKED from
# quota.base and must not load the SQLite store and the limiter with it (issue 9, start-up).
# Hidden from type checkers, which read the imports above and so still flag a misspelt name.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        globals(),
        {
            **dict.fromkeys(
                [
                    "ANONYMOUS",
                    "BLOCKED",
                    "CONFIGURED",
                    "DAY",
                    "DEFAULT",
                    "HOUR",
                    "LEARNED",
                    "MAX_BLOCK",
                    "MINUTE",
                    "MONTH",
                    "Grant",
                    "KeyUsage",
                    "QuotaStore",
                    "QuotaStoreUnavailable",
                    "Window",
                    "WindowUsage",
                    "block_end",
                ],
                "base",
            ),
            **dict.fromkeys(["STORE_RETRY_AFTER", "FallbackQuotaStore"], "fallback"),
            **dict.fromkeys(
                [
                    "DEFAULT_PENALTY",
                    "LEARNED_TTL",
                    "MAX_BLOCK_WAIT",
                    "MAX_LEARNED_LIMIT",
                    "MIN_WAIT",
                    "NOTICE_AFTER",
                    "LimitsProbe",
                    "QuotaWait",
                    "QuotaWaitHook",
                    "RateLimiter",
                ],
                "limiter",
            ),
            "MemoryQuotaStore": "memory",
            "SQLiteQuotaStore": "sqlite",
        },
    )

__all__ = [
    "ANONYMOUS",
    "BLOCKED",
    "CONFIGURED",
    "DAY",
    "DEFAULT",
    "DEFAULT_PENALTY",
    "HOUR",
    "LEARNED",
    "LEARNED_TTL",
    "MAX_BLOCK",
    "MAX_BLOCK_WAIT",
    "MAX_LEARNED_LIMIT",
    "MINUTE",
    "MIN_WAIT",
    "MONTH",
    "NOTICE_AFTER",
    "STORE_RETRY_AFTER",
    "FallbackQuotaStore",
    "Grant",
    "KeyUsage",
    "LimitsProbe",
    "MemoryQuotaStore",
    "QuotaStore",
    "QuotaStoreUnavailable",
    "QuotaWait",
    "QuotaWaitHook",
    "RateLimiter",
    "SQLiteQuotaStore",
    "Window",
    "WindowUsage",
    "block_end",
]
