from __future__ import annotations

import base64
import hashlib

import httpx
import pytest

from threatintel.simulator import IndicatorSpec, Scenario, Simulator, Truth
from threatintel.simulator.bodies import sample

VT = "/virustotal/api/v3"
KEY = {"x-apikey": "test-key"}
NETWORK_STATS = {"harmless", "malicious", "suspicious", "undetected", "timeout"}
FILE_STATS = NETWORK_STATS | {"confirmed-timeout", "failure", "type-unsupported"}


def b64_id(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


@pytest.fixture(autouse=True)
def unlimited(simulator: Simulator) -> None:
    simulator.config.virustotal.windows = ()


def with_truth(simulator: Simulator, value: str, truth: Truth) -> None:
    simulator.config.scenario = Scenario({value: IndicatorSpec(truth)})


async def test_malicious_ip_has_flagged_engines_and_consistent_stats(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A malicious IP answers 200 with 9-15 malicious engines, stats matching the results."""
    with_truth(simulator, "45.142.212.61", Truth.MALICIOUS)
    response = await client.get(f"{VT}/ip_addresses/45.142.212.61", headers=KEY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()["data"]
    assert data["type"] == "ip_address" and data["id"] == "45.142.212.61"
    assert data["links"]["self"] == "https://www.virustotal.com/api/v3/ip_addresses/45.142.212.61"
    attributes = data["attributes"]
    stats = attributes["last_analysis_stats"]
    assert set(stats) == NETWORK_STATS
    assert 9 <= stats["malicious"] <= 15
    assert sum(stats.values()) == len(attributes["last_analysis_results"])
    assert attributes["reputation"] < 0
    assert isinstance(attributes["asn"], int) and attributes["country"]


async def test_recorded_ip_samples_are_served_verbatim(client: httpx.AsyncClient) -> None:
    """1.1.1.1 and 142.251.220.110 come back exactly as recorded."""
    noisy = await client.get(f"{VT}/ip_addresses/1.1.1.1", headers=KEY)
    clean = await client.get(f"{VT}/ip_addresses/142.251.220.110", headers=KEY)
    assert noisy.json() == sample("vt_ip_malicious.json")
    assert clean.json() == sample("vt_ip_clean.json")


async def test_unknown_ip_is_404_not_found(client: httpx.AsyncClient, simulator: Simulator) -> None:
    """An indicator no source has seen is a 404 NotFoundError with the vendor's message shape."""
    with_truth(simulator, "1.2.3.4", Truth.UNKNOWN)
    response = await client.get(f"{VT}/ip_addresses/1.2.3.4", headers=KEY)
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "NotFoundError", "message": 'IP address "1.2.3.4" not found'}
    }


async def test_missing_key_is_authentication_required(client: httpx.AsyncClient) -> None:
    """Without x-apikey the answer is the documented 401 AuthenticationRequiredError body."""
    response = await client.get(f"{VT}/ip_addresses/8.8.8.8")
    assert response.status_code == 401
    assert response.json() == sample("vt_authrequired.json")


async def test_wrong_key_is_wrong_credentials_and_header_name_is_case_insensitive(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """An unknown key gets WrongCredentialsError; X-Apikey in any case is accepted."""
    simulator.config.virustotal.keys = {"good"}
    wrong = await client.get(f"{VT}/ip_addresses/8.8.8.8", headers={"x-apikey": "bad"})
    right = await client.get(f"{VT}/ip_addresses/8.8.8.8", headers={"X-APIKEY": "good"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "WrongCredentialsError"
    assert right.status_code == 200


async def test_url_id_base64_and_sha256_forms_agree(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A URL is found by unpadded base64url and, once known, by its SHA-256 id."""
    url = "http://cdn-update-check.net/payload/stage2.bin?x=1"
    with_truth(simulator, url, Truth.MALICIOUS)
    url_id = hashlib.sha256(url.encode()).hexdigest()
    by_b64 = await client.get(f"{VT}/urls/{b64_id(url)}", headers=KEY)
    by_sha = await client.get(f"{VT}/urls/{url_id}", headers=KEY)
    assert by_b64.status_code == by_sha.status_code == 200
    assert by_b64.json() == by_sha.json()
    data = by_b64.json()["data"]
    assert data["id"] == url_id and data["attributes"]["url"] == url
    assert data["links"]["self"].endswith(f"/api/v3/urls/{url_id}")


async def test_recorded_url_sample_is_found_by_both_id_forms(client: httpx.AsyncClient) -> None:
    """The recorded URL object answers to its documented base64 id and to its SHA-256."""
    by_b64 = await client.get(f"{VT}/urls/aHR0cDovLzIxOC41NC40Ny43Ni8", headers=KEY)
    assert by_b64.json() == sample("vt_url.json")
    url_id = "19e1199c6aa6e817845cc025cd7c8979cec22f8c94bc7416ff16b8808706cd54"
    by_sha = await client.get(f"{VT}/urls/{url_id}", headers=KEY)
    assert by_sha.json() == sample("vt_url.json")


async def test_url_without_scheme_is_canonicalised(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """VT canonicalises the base64 form: a bare host gains http:// and a trailing slash."""
    simulator.config.scenario = Scenario({"http://example.org/": IndicatorSpec(Truth.CLEAN)})
    response = await client.get(f"{VT}/urls/{b64_id('EXAMPLE.org')}", headers=KEY)
    expected = hashlib.sha256(b"http://example.org/").hexdigest()
    assert response.json()["data"]["id"] == expected


@pytest.mark.parametrize("url_id", ["thisurlidmakesnosenseatall", "f" * 64])
async def test_unresolvable_url_id_is_the_documented_404(
    client: httpx.AsyncClient, url_id: str
) -> None:
    """Garbage ids and unseen SHA-256 ids give 404 NotFoundError naming the id as sent."""
    response = await client.get(f"{VT}/urls/{url_id}", headers=KEY)
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "NotFoundError", "message": f'URL "{url_id}" not found'}
    }


@pytest.mark.parametrize(
    "file_id",
    [
        "b214da9f6b0d6e6de5090b3f9672defe",
        "B7162DFCBCAC2724C71C03385ABE577E1AB0CD8D",
        "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c",
    ],
)
async def test_recorded_file_is_indexed_by_every_hash(
    client: httpx.AsyncClient, file_id: str
) -> None:
    """The recorded file answers to its MD5, SHA-1 and SHA-256 (any case), always id = SHA-256."""
    response = await client.get(f"{VT}/files/{file_id}", headers=KEY)
    assert response.json() == sample("vt_file_malicious.json")
    attributes = response.json()["data"]["attributes"]
    assert set(attributes["last_analysis_stats"]) == FILE_STATS
    assert attributes["last_analysis_results"]["Lionic"]["engine_name"] == "AegisLab"


@pytest.mark.parametrize("truth", [Truth.MALICIOUS, Truth.SUSPICIOUS, Truth.NOISY, Truth.CLEAN])
async def test_generated_file_keeps_the_file_object_shape(
    client: httpx.AsyncClient, simulator: Simulator, truth: Truth
) -> None:
    """A fabricated file has id = SHA-256, the queried MD5, 8 hyphenated stats keys that add up."""
    md5 = hashlib.md5(truth.encode()).hexdigest()
    simulator.config.scenario = Scenario({md5: IndicatorSpec(truth)})
    response = await client.get(f"{VT}/files/{md5}", headers=KEY)
    data = response.json()["data"]
    attributes = data["attributes"]
    assert data["id"] == attributes["sha256"] and len(data["id"]) == 64
    assert attributes["md5"] == md5 and len(attributes["sha1"]) == 40
    stats = attributes["last_analysis_stats"]
    assert set(stats) == FILE_STATS
    assert sum(stats.values()) == len(attributes["last_analysis_results"])
    expected = {Truth.MALICIOUS: (40, 58), Truth.SUSPICIOUS: (3, 6), Truth.NOISY: (1, 1)}
    low, high = expected.get(truth, (0, 0))
    assert low <= stats["malicious"] <= high
    flagged = [
        r for r in attributes["last_analysis_results"].values() if r["category"] == "malicious"
    ]
    assert all(r["result"] and {"engine_version", "engine_update"} <= set(r) for r in flagged)


async def test_unknown_file_is_404_with_the_recorded_message(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """An unknown hash yields the vt_notfound.json shape for that hash."""
    digest = "fffdddd2c3dc06d147c5ddddddd5c7e6acda4d1f1369fbc994cddd3c19a2de88"
    simulator.config.scenario = Scenario({digest: IndicatorSpec(Truth.UNKNOWN)})
    response = await client.get(f"{VT}/files/{digest}", headers=KEY)
    assert response.status_code == 404
    assert response.json() == sample("vt_notfound.json")


@pytest.mark.parametrize("path", ["/files/not-a-hash", "/ip_addresses/999.1.1.1", "/domains/a_b!"])
async def test_invalid_ids_are_400_invalid_argument(client: httpx.AsyncClient, path: str) -> None:
    """Ids that cannot name an object are 400 InvalidArgumentError."""
    response = await client.get(f"{VT}{path}", headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidArgumentError"


async def test_noisy_domain_has_one_engine_and_high_reputation(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A noisy domain: exactly one malicious engine, positive reputation, popularity ranks."""
    simulator.config.scenario = Scenario({"windowsupdate.com": IndicatorSpec(Truth.NOISY)})
    response = await client.get(f"{VT}/domains/windowsupdate.com", headers=KEY)
    data = response.json()["data"]
    attributes = data["attributes"]
    assert data["type"] == "domain" and data["id"] == "windowsupdate.com"
    assert attributes["last_analysis_stats"]["malicious"] == 1
    assert attributes["reputation"] > 0 and attributes["popularity_ranks"]
    assert attributes["tld"] == "com"
    assert "haiku-os.org" not in response.text


async def test_recorded_domains_are_served_verbatim(client: httpx.AsyncClient) -> None:
    """haiku-os.org and tucows.com come back exactly as recorded."""
    haiku = await client.get(f"{VT}/domains/haiku-os.org", headers=KEY)
    tucows = await client.get(f"{VT}/domains/TUCOWS.com", headers=KEY)
    assert haiku.json() == sample("vt_domain.json")
    assert tucows.json() == sample("vt_domain_flagged.json")


async def test_private_ip_gets_a_sparse_object(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A private address answers without network ownership attributes."""
    simulator.config.scenario = Scenario({"10.0.0.5": IndicatorSpec(Truth.CLEAN)})
    attributes = (await client.get(f"{VT}/ip_addresses/10.0.0.5", headers=KEY)).json()["data"][
        "attributes"
    ]
    assert "asn" not in attributes and "as_owner" not in attributes
    assert attributes["last_analysis_stats"]["malicious"] == 0
