from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from threatintel.simulator import IndicatorSpec, Scenario, Simulator, Truth, Window
from threatintel.simulator.bodies import sample

OTX = "/otx/api/v1/indicators"


def general(slug: str, value: str) -> str:
    return f"{OTX}/{slug}/{value}/general"


async def test_malicious_ip_has_attributed_pulses(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """Malicious pulses carry the adversary, malware-family objects and ATT&CK objects."""
    spec = IndicatorSpec(
        Truth.MALICIOUS, adversary="TA542", malware=("Emotet",), attack_ids=("T1071",)
    )
    simulator.config.scenario = Scenario({"45.142.212.61": spec})
    response = await client.get(general("IPv4", "45.142.212.61"))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(sample("otx_notfound_or_empty.json"))
    info = body["pulse_info"]
    assert info["count"] == len(info["pulses"]) >= 3
    first = info["pulses"][0]
    assert set(first) == set(sample("otx_ipv4_general.json")["pulse_info"]["pulses"][1])
    assert first["adversary"] == "TA542"
    assert first["malware_families"] == [{"id": "Emotet", "display_name": "Emotet", "target": None}]
    assert first["attack_ids"] == [
        {
            "id": "T1071",
            "name": "Application Layer Protocol",
            "display_name": "T1071 - Application Layer Protocol",
        }
    ]
    created = datetime.fromisoformat(first["created"])
    assert created.tzinfo is None and "." in first["created"]
    related = info["related"]["alienvault"]["adversary"] + info["related"]["other"]["adversary"]
    assert "TA542" in related
    assert body["base_indicator"]["indicator"] == "45.142.212.61"


async def test_recorded_ipv4_sample_is_served_verbatim(client: httpx.AsyncClient) -> None:
    """98.136.103.23 returns the recorded general body."""
    response = await client.get(general("IPv4", "98.136.103.23"))
    assert response.json() == sample("otx_ipv4_general.json")


async def test_unknown_indicator_is_200_with_zero_pulses(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """An unknown but valid IP is the empty-sample shape rewritten for the value, not a 404."""
    simulator.config.scenario = Scenario({"1.2.3.4": IndicatorSpec(Truth.UNKNOWN)})
    body = (await client.get(general("IPv4", "1.2.3.4"))).json()
    empty = sample("otx_notfound_or_empty.json")
    assert list(body) == list(empty)
    assert body["indicator"] == "1.2.3.4" and body["whois"].endswith("/1.2.3.4")
    assert body["pulse_info"] == empty["pulse_info"]
    assert body["base_indicator"] == {} and body["validation"] == []


async def test_ipv6_under_the_ipv4_slug_is_400_json(client: httpx.AsyncClient) -> None:
    """A value that does not fit its slug is a 400 with a JSON body."""
    response = await client.get(general("IPv4", "2a0d:5600:24:aa::12"))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()


async def test_ipv6_slug_answers_with_ipv6_type(client: httpx.AsyncClient) -> None:
    """The IPv6 slug serves IPv6 values with type IPv6 and no http_scans section."""
    body = (await client.get(general("IPv6", "2a0d:5600:24:aa::12"))).json()
    assert body["type"] == body["type_title"] == "IPv6"
    assert "http_scans" not in body["sections"]


async def test_url_goes_unencoded_in_the_path(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A URL with :// and a percent-encoded query string is read whole; the section is last."""
    url = "https://login-microsoft-verify.com/owa/auth/logon.aspx?client=outlook&ref=finance"
    simulator.config.scenario = Scenario({url: IndicatorSpec(Truth.MALICIOUS)})
    response = await client.get(general("url", url.replace("?", "%3F")))
    body = response.json()
    assert response.status_code == 200
    assert body["indicator"] == url and body["type"] == "url"
    assert body["domain"] == "login-microsoft-verify.com"
    assert body["hostname"] == "login-microsoft-verify.com"
    assert body["pulse_info"]["count"] >= 3
    assert "unique_indicators" in body["pulse_info"]["related"]["other"]


async def test_subdomain_under_domain_slug_is_served_and_noted(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """A sub-domain under `domain` still answers 200, and the request log notes the mismatch."""
    response = await client.get(general("domain", "update.cdn-update-check.net"))
    assert response.status_code == 200
    assert response.json()["type"] == "domain"
    record = simulator.log.last("otx")
    assert record is not None and record.note == "sub-domain under the domain slug"


async def test_hostname_slug_has_hostname_type(client: httpx.AsyncClient) -> None:
    """The hostname slug answers with type hostname."""
    body = (await client.get(general("hostname", "update.cdn-update-check.net"))).json()
    assert body["type"] == "hostname" and body["indicator"] == "update.cdn-update-check.net"


async def test_key_is_optional_for_general_but_must_be_valid(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """No key works for general; a wrong key is 403; a valid key is accepted and logged."""
    simulator.config.otx.keys = {"otx-key"}
    anonymous = await client.get(general("IPv4", "8.8.8.8"))
    wrong = await client.get(general("IPv4", "8.8.8.8"), headers={"X-OTX-API-KEY": "nope"})
    right = await client.get(general("IPv4", "8.8.8.8"), headers={"X-OTX-API-KEY": "otx-key"})
    assert (anonymous.status_code, wrong.status_code, right.status_code) == (200, 403, 200)
    assert [r.key for r in simulator.log] == [None, "nope", "otx-key"]


async def test_other_sections_need_a_key(client: httpx.AsyncClient) -> None:
    """Sections other than general refuse anonymous callers with 403."""
    response = await client.get(f"{OTX}/IPv4/8.8.8.8/passive_dns")
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("value", "kind", "title"),
    [
        ("8a89e1c96867a475f6306aa971c2cce5", "md5", "FileHash-MD5"),
        ("319830229df46687aada4a1b062707de5d1fe55b", "sha1", "FileHash-SHA1"),
        ("f" * 64, "sha256", "FileHash-SHA256"),
    ],
)
async def test_file_slug_reports_the_hash_type(
    client: httpx.AsyncClient, value: str, kind: str, title: str
) -> None:
    """One `file` slug for every hash; the body's type names the hash that matched."""
    body = (await client.get(general("file", value))).json()
    assert (body["type"], body["type_title"], body["indicator"]) == (kind, title, value)
    assert body["sections"] == ["general", "analysis"]


async def test_noisy_ip_has_whitelist_validation_and_no_attribution(
    client: httpx.AsyncClient,
) -> None:
    """8.8.8.8 (noisy in the demo scenario) has a few unattributed pulses and a whitelist entry."""
    body = (await client.get(general("IPv4", "8.8.8.8"))).json()
    pulses = body["pulse_info"]["pulses"]
    assert 2 <= len(pulses) <= 3
    assert all(p["adversary"] == "" and p["malware_families"] == [] for p in pulses)
    assert body["validation"][0]["name"] == "Whitelisted IP"


async def test_pulse_name_override_carries_hostile_text(client: httpx.AsyncClient) -> None:
    """A scenario pulse_name reaches the first pulse unchanged, for escaping tests downstream."""
    body = (await client.get(general("domain", "secure-docs-share.net"))).json()
    assert body["pulse_info"]["pulses"][0]["name"] == "<script>alert(1)</script>"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"{OTX}/ipv4/8.8.8.8/general", 404),
        (f"{OTX}/cve/CVE-20-1/general", 400),
        (f"{OTX}/domain/not a domain/general", 400),
        (f"{OTX}/url/no-scheme.example.org/general", 400),
        (f"{OTX}/IPv4/8.8.8.8/nonsense", 403),
    ],
)
async def test_bad_slugs_and_values_are_refused(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    """Slugs are case-sensitive and values are checked against their slug."""
    response = await client.get(path)
    assert response.status_code == status


async def test_cve_general_is_served(client: httpx.AsyncClient) -> None:
    """A CVE answers with the general envelope and CVE types."""
    body = (await client.get(general("cve", "CVE-2023-23397"))).json()
    assert body["type"] == "CVE" and body["indicator"] == "CVE-2023-23397"
    assert body["pulse_info"]["pulses"][0]["adversary"] == "APT28"


async def test_hourly_quota_when_configured(
    client: httpx.AsyncClient, simulator: Simulator
) -> None:
    """With an hourly window configured, the next request is a 429; without one, none are."""
    simulator.config.otx.windows = (Window.per_hour(2),)
    statuses = [(await client.get(general("IPv4", "8.8.8.8"))).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
