from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from threatintel.simulator import IndicatorSpec, ManualClock, Scenario, Simulator, Truth, Window
from threatintel.simulator.bodies import sample

CHECK = "/abuseipdb/api/v2/check"
JSON = {"Key": "abuse-key", "Accept": "application/json"}


async def check(client: httpx.AsyncClient, query: str, **headers: str) -> httpx.Response:
    return await client.get(f"{CHECK}?{query}", headers=headers or JSON)


async def test_malicious_verbose_has_reports_and_rate_headers(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A malicious IP scores high; verbose adds countryName and one report per counted report."""
    simulator.config.scenario = Scenario({"45.142.212.61": IndicatorSpec(Truth.MALICIOUS)})
    response = await check(client, "ipAddress=45.142.212.61&maxAgeInDays=90&verbose")
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit"] == "1000"
    assert response.headers["x-ratelimit-remaining"] == "999"
    data = response.json()["data"]
    assert set(data) == set(sample("abuseipdb_check_malicious.json")["data"])
    assert data["abuseConfidenceScore"] >= 89 and data["isWhitelisted"] is False
    assert data["totalReports"] == len(data["reports"]) > 0
    assert data["lastReportedAt"].endswith("+00:00")
    assert data["lastReportedAt"] == data["reports"][0]["reportedAt"]
    assert set(data["reports"][0]) == set(
        sample("abuseipdb_check_malicious.json")["data"]["reports"][0]
    )


async def test_plain_check_omits_verbose_fields(client: httpx.AsyncClient) -> None:
    """Without verbose the body has the clean sample's keys: no countryName, no reports."""
    data = (await check(client, "ipAddress=185.220.101.4")).json()["data"]
    assert list(data) == list(sample("abuseipdb_check_clean.json")["data"])


async def test_max_age_narrows_the_reports(client: httpx.AsyncClient, simulator: Simulator) -> None:
    """totalReports counts only reports within maxAgeInDays."""
    simulator.config.scenario = Scenario({"45.142.212.61": IndicatorSpec(Truth.MALICIOUS)})
    short = (await check(client, "ipAddress=45.142.212.61&maxAgeInDays=1")).json()["data"]
    long = (await check(client, "ipAddress=45.142.212.61&maxAgeInDays=365")).json()["data"]
    assert short["totalReports"] < long["totalReports"]


async def test_recorded_samples_follow_the_verbose_flag(client: httpx.AsyncClient) -> None:
    """118.25.6.39 is the docs sample with verbose, and loses its verbose fields without it."""
    verbose = (await check(client, "ipAddress=118.25.6.39&verbose")).json()
    plain = (await check(client, "ipAddress=118.25.6.39")).json()["data"]
    assert verbose == sample("abuseipdb_check_malicious.json")
    assert "reports" not in plain and "countryName" not in plain


async def test_missing_key_is_401_json_or_html_by_accept(client: httpx.AsyncClient) -> None:
    """A missing key is the recorded 401 as JSON with Accept: application/json, else HTML."""
    as_json = await check(client, "ipAddress=8.8.8.8", Accept="application/json")
    as_html = await check(client, "ipAddress=8.8.8.8", Accept="*/*")
    assert as_json.status_code == as_html.status_code == 401
    assert as_json.json() == sample("abuseipdb_error_401.json")
    assert as_html.headers["content-type"].startswith("text/html")
    assert "<html" in as_html.text


async def test_wrong_key_is_401(client: httpx.AsyncClient, simulator: Simulator) -> None:
    """With an explicit key set, another key is refused."""
    simulator.config.abuseipdb.keys = {"right"}
    response = await check(client, "ipAddress=8.8.8.8", Key="wrong", Accept="application/json")
    assert response.status_code == 401


async def test_key_query_parameter_is_accepted_and_logged(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """The documented `key` query parameter works and the log says where the key came from."""
    response = await client.get(f"{CHECK}?ipAddress=8.8.8.8&key=qk")
    assert response.status_code == 200
    record = simulator.log.last("abuseipdb")
    assert record is not None and (record.key, record.key_source) == ("qk", "query")


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("ipAddress=not-an-ip", "abuseipdb_error_422.json"),
        ("ipAddress=", "abuseipdb_error_422.json"),
        ("ipAddress=8.8.8.8&maxAgeInDays=0", "abuseipdb_error_422_maxage.json"),
        ("ipAddress=8.8.8.8&maxAgeInDays=366", "abuseipdb_error_422_maxage.json"),
        ("ipAddress=8.8.8.8&maxAgeInDays=ten", "abuseipdb_error_422_maxage.json"),
    ],
)
async def test_invalid_parameters_are_422(client: httpx.AsyncClient, query: str, name: str) -> None:
    """Bad ipAddress and out-of-range maxAgeInDays give the recorded 422 bodies."""
    response = await check(client, query)
    assert response.status_code == 422
    assert response.json() == sample(name)


async def test_422_is_html_without_json_accept(client: httpx.AsyncClient) -> None:
    """Validation errors are an HTML page when Accept is not application/json."""
    response = await check(client, "ipAddress=nope", Key="k")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")


async def test_private_address_is_reserved(client: httpx.AsyncClient) -> None:
    """Private space answers 200 with isPublic false and usageType Reserved."""
    data = (await check(client, "ipAddress=10.0.0.5")).json()["data"]
    assert data["isPublic"] is False and data["usageType"] == "Reserved"
    assert data["countryCode"] is None and data["domain"] is None
    assert list(data) == list(sample("abuseipdb_check_private.json")["data"])


async def test_ipv6_and_clean_truths(client: httpx.AsyncClient, simulator: Simulator) -> None:
    """An IPv6 address reports ipVersion 6; a clean one scores 0 with isWhitelisted null."""
    value = "2001:4860:4860::8844"
    simulator.config.scenario = Scenario({value: IndicatorSpec(Truth.CLEAN)})
    response = await client.get(CHECK, params={"ipAddress": value}, headers=JSON)
    data = response.json()["data"]
    assert data["ipVersion"] == 6 and data["ipAddress"] == value
    assert data["abuseConfidenceScore"] == 0 and data["isWhitelisted"] is None
    assert data["totalReports"] == 0 and data["lastReportedAt"] is None


async def test_noisy_is_whitelisted_with_zero_score(client: httpx.AsyncClient) -> None:
    """8.8.8.8 (noisy) is whitelisted and scores 0."""
    data = (await check(client, "ipAddress=8.8.8.8&maxAgeInDays=365")).json()["data"]
    assert data["isWhitelisted"] is True and data["abuseConfidenceScore"] == 0
    assert data["totalReports"] > 0


async def test_daily_quota_429_headers_and_midnight_reset(
    client: httpx.AsyncClient, simulator: Simulator, clock: ManualClock
) -> None:
    """Over the daily limit: 429 with Retry-After and X-RateLimit-*; it resets at 00:00 UTC."""
    simulator.config.abuseipdb.windows = (Window.per_day(2),)
    for _ in range(2):
        assert (await check(client, "ipAddress=8.8.8.8")).status_code == 200
    refused = await check(client, "ipAddress=8.8.8.8")
    start = clock.now
    midnight = datetime.fromtimestamp(start, UTC).replace(hour=0, minute=0, second=0)
    reset_at = int(midnight.timestamp()) + 86_400
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit"] == "2"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["x-ratelimit-reset"] == str(reset_at)
    assert refused.headers["retry-after"] == str(reset_at - int(start))
    assert refused.json()["errors"][0]["detail"].startswith("Daily rate limit of 2 requests")
    clock.now = reset_at - 1
    assert (await check(client, "ipAddress=8.8.8.8")).status_code == 429
    clock.now = reset_at
    assert (await check(client, "ipAddress=8.8.8.8")).status_code == 200
