"""The request log: one frozen record per request the simulator answered (or hung on).

    sim.log.count(vendor="virustotal", status=429)
    [r.key_source for r in sim.log.filter(vendor="ipinfo")]     # "bearer", "query", ...

Records keep the request headers, API keys included: the log lives in memory for tests and is
never printed (uvicorn's access log is off as well).

The log is a window over the newest ``max_records`` requests (``DEFAULT_MAX_RECORDS`` unless
given), so a simulator left running for a demo or a long benchmark holds bounded memory; the
oldest records make way and ``dropped`` counts them. The default is far above what any test or
benchmark sends between two ``clear()`` calls, so their counts stay exact.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from threatintel.simulator.faults import FaultKind

#: Records kept; the biggest test run sends a few thousand requests, benchmarks a few hundred.
DEFAULT_MAX_RECORDS = 100_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    vendor: str
    method: str
    path: str  # percent-decoded, as routed
    query: str  # raw query string
    headers: Mapping[str, str]  # lower-case names
    status: int | None  # None: the request hung
    fault: FaultKind | None
    key: str | None
    key_source: str | None  # "header", "query", "bearer", "basic"; None without a key
    indicator: str | None
    timestamp: float
    note: str | None = None  # e.g. a slug mismatch the real service would not flag


class RequestLog:
    """Thread-safe, append-only window over the newest RequestRecords; reads return snapshots."""

    __slots__ = ("_dropped", "_lock", "_records", "max_records")

    def __init__(self, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        #: How many of the newest records the log keeps.
        self.max_records = max_records
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Records that made way for newer ones since the log was created or cleared."""
        with self._lock:
            return self._dropped

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            if len(self._records) == self.max_records:
                self._dropped += 1
            self._records.append(record)

    def records(self) -> tuple[RequestRecord, ...]:
        with self._lock:
            return tuple(self._records)

    def filter(
        self,
        *,
        vendor: str | None = None,
        status: int | None = None,
        fault: FaultKind | str | None = None,
        key: str | None = None,
        indicator: str | None = None,
        faulted: bool | None = None,
    ) -> list[RequestRecord]:
        """Records matching every given criterion (None means "any")."""
        return [
            r
            for r in self.records()
            if (vendor is None or r.vendor == vendor)
            and (status is None or r.status == status)
            and (fault is None or r.fault == fault)
            and (key is None or r.key == key)
            and (indicator is None or r.indicator == indicator)
            and (faulted is None or (r.fault is not None) == faulted)
        ]

    def count(
        self,
        *,
        vendor: str | None = None,
        status: int | None = None,
        fault: FaultKind | str | None = None,
        key: str | None = None,
        indicator: str | None = None,
        faulted: bool | None = None,
    ) -> int:
        return len(
            self.filter(
                vendor=vendor,
                status=status,
                fault=fault,
                key=key,
                indicator=indicator,
                faulted=faulted,
            )
        )

    def last(self, vendor: str | None = None) -> RequestRecord | None:
        matching = self.filter(vendor=vendor)
        return matching[-1] if matching else None

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._dropped = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.records())
