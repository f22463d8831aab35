from __future__ import annotations

import dataclasses

import httpx
import pytest

from threatintel.simulator import FaultKind, ManualClock, RequestLog, Simulator, serve


async def test_log_records_every_request_with_clock_time(
    client: httpx.AsyncClient, simulator: Simulator, clock: ManualClock
) -> None:
    """Each answered request leaves one frozen record stamped by the injected clock."""
    await client.get("/virustotal/api/v3/domains/haiku-os.org?x=1", headers={"X-Apikey": "k1"})
    clock.advance(5)
    simulator.faults.fail_next("otx", FaultKind.MALFORMED)
    await client.get("/otx/api/v1/indicators/IPv4/8.8.8.8/general")
    first, second = simulator.log.records()
    assert (first.vendor, first.method, first.status, first.key) == ("virustotal", "GET", 200, "k1")
    assert first.path == "/virustotal/api/v3/domains/haiku-os.org" and first.query == "x=1"
    assert first.headers["x-apikey"] == "k1" and first.indicator == "haiku-os.org"
    assert second.timestamp == first.timestamp + 5 and second.fault is FaultKind.MALFORMED
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.status = 500  # type: ignore[misc]


async def test_log_helpers_filter_count_and_clear(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """count/filter/last select by vendor, status, key and fault; clear empties the log."""
    await client.get("/ipinfo/8.8.8.8", params={"token": "t"})
    await client.get("/ipinfo/nope")
    await client.get("/abuseipdb/api/v2/check?ipAddress=8.8.8.8")
    log = simulator.log
    assert len(log) == 3
    assert log.count(vendor="ipinfo") == 2 and log.count(status=404) == 1
    assert log.count(vendor="abuseipdb", status=401) == 1 and log.count(key="t") == 1
    assert log.count(faulted=True) == 0 and log.count(faulted=False) == 3
    last = log.last("ipinfo")
    assert last is not None and last.indicator == "nope"
    log.clear()
    assert len(log) == 0 and log.last() is None


def test_serve_refuses_non_loopback_hosts() -> None:
    """The blocking serve() entry point has the same loopback guard as the server class."""
    with pytest.raises(ValueError, match="loopback"):
        serve(host="0.0.0.0")


async def test_log_keeps_a_bounded_window_and_counts_what_it_dropped() -> None:
    """Past max_records the oldest records make way, dropped counts them, and clear resets it."""
    log = RequestLog(max_records=3)
    simulator = Simulator(log=log)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator.app), base_url="http://sim"
    ) as bounded:
        for n in range(1, 6):
            await bounded.get(f"/ipinfo/8.8.8.{n}", params={"token": "t"})
    assert len(log) == 3 and log.max_records == 3
    assert [r.indicator for r in log.records()] == ["8.8.8.3", "8.8.8.4", "8.8.8.5"]
    assert log.dropped == 2
    log.clear()
    assert log.dropped == 0 and len(log) == 0


def test_default_log_window_holds_every_test_run() -> None:
    """The default window is far above the few thousand requests the largest test run sends."""
    assert RequestLog().max_records >= 50_000
    with pytest.raises(ValueError, match="max_records"):
        RequestLog(max_records=0)
