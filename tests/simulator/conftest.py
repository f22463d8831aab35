from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from threatintel.simulator import ManualClock, Simulator, SimulatorConfig

# 2023-11-14 22:13:20 UTC: late in a day, so tests can cross midnight with a small step.
START = 1_700_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def simulator(clock: ManualClock) -> Simulator:
    return Simulator(SimulatorConfig(clock=clock))


@pytest.fixture
async def client(simulator: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=simulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client
