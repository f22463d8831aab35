from __future__ import annotations

import base64

import httpx
import pytest

from threatintel.simulator import Simulator, Window
from threatintel.simulator.bodies import sample, sample_text

IPINFO = "/ipinfo"
WIRE_FIELDS = {"ip", "hostname", "city", "region", "country", "loc", "org", "postal", "timezone",
               "anycast", "readme", "bogon"}  # fmt: skip


async def test_unauthenticated_answer_carries_readme(client: httpx.AsyncClient) -> None:
    """Without a token the body adds the missingauth readme, and only wire fields are sent."""
    response = await client.get(f"{IPINFO}/45.142.212.61/json")
    body = response.json()
    assert response.status_code == 200
    assert body["readme"] == "https://ipinfo.io/missingauth"
    assert set(body) <= WIRE_FIELDS
    assert body["org"].startswith("AS") and "," in body["loc"]


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"headers": {"Authorization": "Bearer tok"}}, "bearer"),
        ({"params": {"token": "tok"}}, "query"),
        ({"headers": {"Authorization": "Basic " + base64.b64encode(b"tok:").decode()}}, "basic"),
    ],
)
async def test_token_forms_are_accepted_and_logged(
    client: httpx.AsyncClient, simulator: Simulator, kwargs: dict[str, dict[str, str]], source: str
) -> None:
    """Bearer, ?token= and Basic all authenticate (no readme); the log records which was used."""
    response = await client.get(f"{IPINFO}/8.8.8.8", **kwargs)  # type: ignore[arg-type]
    assert "readme" not in response.json()
    record = simulator.log.last("ipinfo")
    assert record is not None and (record.key, record.key_source) == ("tok", source)


async def test_recorded_samples_are_served(client: httpx.AsyncClient) -> None:
    """1.1.1.1 anonymous and 54.240.77.24 with a token are the recorded bodies."""
    anonymous = await client.get(f"{IPINFO}/1.1.1.1/json")
    with_token = await client.get(f"{IPINFO}/54.240.77.24/json", params={"token": "t"})
    assert anonymous.json() == sample("ipinfo_ip_unauthenticated.json")
    assert list(anonymous.json())[-2:] == ["readme", "anycast"]
    assert with_token.json() == sample("ipinfo_ip.json")


async def test_bogon_is_200_with_the_flag_only(client: httpx.AsyncClient) -> None:
    """A bogon answers 200 with exactly ip and bogon: true."""
    response = await client.get(f"{IPINFO}/10.0.0.1/json", params={"token": "t"})
    assert response.status_code == 200
    assert response.json() == sample("ipinfo_bogon.json")


async def test_invalid_ip_is_404_wrong_ip(client: httpx.AsyncClient) -> None:
    """A path that is not an IP is the recorded 404 Wrong ip body, as exactly application/json."""
    response = await client.get(f"{IPINFO}/not-an-ip/json")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == sample("ipinfo_404_wrong_ip.json")


async def test_wrong_token_is_403(client: httpx.AsyncClient, simulator: Simulator) -> None:
    """A token outside the configured set gets 403 Wrong token."""
    simulator.config.ipinfo.keys = {"good"}
    response = await client.get(f"{IPINFO}/8.8.8.8", params={"token": "bad"})
    assert response.status_code == 403
    assert response.json() == {
        "status": 403,
        "error": {"title": "Wrong token", "message": "Please provide a valid token"},
    }


async def test_over_quota_is_the_recorded_429(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """Past the monthly window the body is the recorded 429 text, byte for byte."""
    simulator.config.ipinfo.windows = (Window.per_month(1),)
    assert (await client.get(f"{IPINFO}/8.8.8.8", params={"token": "t"})).status_code == 200
    refused = await client.get(f"{IPINFO}/8.8.8.8", params={"token": "t"})
    assert refused.status_code == 429
    assert refused.text == sample_text("ipinfo_429.txt")
    assert "retry-after" not in refused.headers


async def test_field_path_answers_plain_text(client: httpx.AsyncClient) -> None:
    """/{ip}/org answers the field as text."""
    response = await client.get(f"{IPINFO}/8.8.8.8/org", params={"token": "t"})
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "AS15169 Google LLC\n"


async def test_batch_maps_each_input(client: httpx.AsyncClient, simulator: Simulator) -> None:
    """POST /batch answers a map keyed by input, and each entry costs one request."""
    simulator.config.ipinfo.windows = (Window.per_month(10),)
    items = [*sample("ipinfo_batch_request.json"), "45.142.212.61", "10.0.0.1"]
    response = await client.post(f"{IPINFO}/batch", params={"token": "t"}, json=items)
    body = response.json()
    assert response.status_code == 200
    assert {k: body[k] for k in sample("ipinfo_batch_response.json")} == sample(
        "ipinfo_batch_response.json"
    )
    assert body["45.142.212.61"]["ip"] == "45.142.212.61"
    assert body["10.0.0.1"] == {"ip": "10.0.0.1", "bogon": True}
    usage = simulator.quotas.usage("ipinfo", "t", simulator.config.ipinfo.windows[0])
    assert usage.used == 4


async def test_batch_limits(client: httpx.AsyncClient) -> None:
    """Batches over 1000 items are refused, and the batch needs a token."""
    too_many = await client.post(f"{IPINFO}/batch", params={"token": "t"}, json=["8.8.8.8"] * 1001)
    anonymous = await client.post(f"{IPINFO}/batch", json=["8.8.8.8"])
    assert too_many.status_code == 400
    assert anonymous.status_code == 403
