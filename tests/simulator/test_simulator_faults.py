from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from threatintel.simulator import (
    FaultKind,
    ManualClock,
    Simulator,
    SimulatorConfig,
    SimulatorServer,
)

REQUESTS = {
    "virustotal": ("/virustotal/api/v3/ip_addresses/8.8.8.8", {"x-apikey": "k"}),
    "otx": ("/otx/api/v1/indicators/IPv4/8.8.8.8/general", {}),
    "abuseipdb": ("/abuseipdb/api/v2/check?ipAddress=8.8.8.8",
                  {"Key": "k", "Accept": "application/json"}),
    "ipinfo": ("/ipinfo/8.8.8.8/json", {"Authorization": "Bearer k"}),
}  # fmt: skip


async def get(client: httpx.AsyncClient, vendor: str) -> httpx.Response:
    path, headers = REQUESTS[vendor]
    return await client.get(path, headers=headers)


async def test_vt_server_error_is_503_transient_error(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A 5xx fault on VirusTotal is the documented 503 TransientError body."""
    simulator.faults.fail_next("virustotal", FaultKind.SERVER_ERROR)
    response = await get(client, "virustotal")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "TransientError"
    assert (await get(client, "virustotal")).status_code == 200


@pytest.mark.parametrize("vendor", ["otx", "abuseipdb", "ipinfo"])
async def test_other_vendors_fail_with_500_502_or_503(
    client: httpx.AsyncClient, simulator: Simulator, vendor: str
) -> None:
    """A 5xx fault elsewhere is one of 500/502/503, and the log records the fault."""
    simulator.faults.fail_next(vendor, "5xx", n=2)
    statuses = [(await get(client, vendor)).status_code for _ in range(3)]
    assert all(status in (500, 502, 503) for status in statuses[:2])
    assert statuses[2] == 200
    assert simulator.log.count(vendor=vendor, fault=FaultKind.SERVER_ERROR) == 2


async def test_abuseipdb_server_error_follows_the_accept_rule(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """AbuseIPDB's 5xx is JSON:API errors when JSON was asked for."""
    simulator.faults.fail_next("abuseipdb", "5xx")
    body = (await get(client, "abuseipdb")).json()
    assert body["errors"][0]["status"] in (500, 502, 503)


@pytest.mark.parametrize("vendor", ["virustotal", "otx", "abuseipdb", "ipinfo"])
async def test_malformed_is_200_with_truncated_json(
    client: httpx.AsyncClient, simulator: Simulator, vendor: str
) -> None:
    """A malformed fault answers 200 whose JSON body stops half-way."""
    simulator.faults.fail_next(vendor, FaultKind.MALFORMED)
    response = await get(client, vendor)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


async def test_seeded_rate_is_deterministic() -> None:
    """Two simulators with one seed fail the same requests in the same way."""

    async def run() -> list[FaultKind | None]:
        config = SimulatorConfig(clock=ManualClock(0.0), seed=42)
        config.otx.fault_rate = 0.5
        config.otx.fault_kinds = (FaultKind.SERVER_ERROR, FaultKind.MALFORMED)
        simulator = Simulator(config)
        transport = httpx.ASGITransport(app=simulator.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            for _ in range(20):
                await get(client, "otx")
        return [record.fault for record in simulator.log]

    first, second = await run(), await run()
    assert first == second
    assert 3 <= sum(fault is not None for fault in first) <= 17


async def test_scenario_faults_hit_only_their_vendors(client: httpx.AsyncClient) -> None:
    """The demo's 103.75.190.11 fails on OTX every time and nowhere else."""
    otx = [await client.get("/otx/api/v1/indicators/IPv4/103.75.190.11/general") for _ in range(2)]
    vt = await client.get(
        "/virustotal/api/v3/ip_addresses/103.75.190.11", headers={"x-apikey": "k"}
    )
    assert all(response.status_code >= 500 for response in otx)
    assert vt.status_code == 200


async def test_refused_requests_are_not_faulted(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """An auth failure is answered as such; the queued fault waits for an eligible request."""
    simulator.faults.fail_next("virustotal", FaultKind.SERVER_ERROR)
    assert (await client.get(REQUESTS["virustotal"][0])).status_code == 401
    assert simulator.faults.pending("virustotal") == 1
    assert (await get(client, "virustotal")).status_code == 503


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        threading.Event().wait(0.01)


def test_reset_breaks_the_connection_mid_body() -> None:
    """A reset fault promises a body, sends half and closes: the client sees a protocol error."""
    with SimulatorServer(SimulatorConfig(clock=ManualClock(0.0))) as sim:
        sim.faults.fail_next("virustotal", FaultKind.RESET)
        with httpx.Client(base_url=sim.base_urls["virustotal"]) as client:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                client.get("/ip_addresses/8.8.8.8", headers={"x-apikey": "k"})
            assert client.get("/ip_addresses/8.8.8.8", headers={"x-apikey": "k"}).status_code == 200
        assert sim.log.count(fault=FaultKind.RESET) == 1


def test_hang_never_answers_and_does_not_block_shutdown() -> None:
    """A hung request times out client-side, and stopping the server releases it quickly."""
    sim = SimulatorServer(SimulatorConfig(clock=ManualClock(0.0))).start()
    sim.faults.fail_next("ipinfo", FaultKind.HANG, n=2)
    url = f"{sim.base_urls['ipinfo']}/8.8.8.8/json"
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=0.2)
    wait_until(lambda: sim.simulator.hangs.active == 0)  # the client left, so the hang ended
    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(_get_or_error(url)))
    waiter.start()
    wait_until(lambda: sim.simulator.hangs.active == 1)
    started = time.monotonic()
    sim.stop()
    waiter.join(5)
    assert time.monotonic() - started < 3.0
    assert outcome == [503]  # released by the shutdown
    assert sim.log.count(vendor="ipinfo", fault=FaultKind.HANG) == 2
    assert all(record.status is None for record in sim.log)


def _get_or_error(url: str) -> object:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.HTTPError as exc:
        return exc


async def test_faults_follow_the_indicator_not_the_arrival_order() -> None:
    """With one seed, the n-th request for an indicator meets the same fault in any order."""
    values = [f"45.10.{i}.7" for i in range(12)]

    async def run(order: list[str]) -> dict[tuple[str, int], FaultKind | None]:
        config = SimulatorConfig(clock=ManualClock(0.0), seed=7)
        config.virustotal.windows = ()  # no quota: every request is served and may fault
        config.virustotal.fault_rate = 0.5
        config.virustotal.fault_kinds = (FaultKind.SERVER_ERROR, FaultKind.MALFORMED)
        simulator = Simulator(config)
        transport = httpx.ASGITransport(app=simulator.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            for value in order + order:  # each indicator asked twice
                await client.get(
                    f"/virustotal/api/v3/ip_addresses/{value}", headers={"x-apikey": "k"}
                )
        seen: dict[tuple[str, int], FaultKind | None] = {}
        for record in simulator.log:
            assert record.indicator is not None
            nth = sum(1 for key in seen if key[0] == record.indicator)
            seen[(record.indicator, nth)] = record.fault
        return seen

    forward, backward = await run(values), await run(values[::-1])
    assert forward == backward
    assert 4 <= sum(fault is not None for fault in forward.values()) <= 20
