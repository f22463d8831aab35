"""Scenario entries that state each vendor's evidence, and the wire bodies that carry it."""

from __future__ import annotations

import httpx
import pytest

from threatintel.simulator import Scenario, ScenarioError, Simulator

KEYS = {
    "virustotal": {"x-apikey": "k"},
    "abuseipdb": {"Key": "k", "Accept": "application/json"},
}
STATED = """
[indicators."8.8.8.8"]
truth = "noisy"
vt = { malicious = 2, harmless = 60, reputation = 530, votes = [220, 31] }
otx = { context_pulses = 4, validation = ["whitelist"] }
ipinfo = { anycast = true, org = "AS15169 Google LLC" }

[indicators."8.8.8.8".abuseipdb]
confidence = 3
reports = 14
reporters = 11
last_days = 2
usage = "Content Delivery Network"

[indicators."evil.example"]
truth = "malicious"
vt = { malicious = 7, rank = 12 }

[[indicators."evil.example".otx.pulses]]
name = "Emotet C2 evil.example"
age_days = 12
indicators = 14
malware = ["Emotet"]

[indicators."79f5e62bf4831894f1a207bb9d9f20de5b5db9130e184356f1c985fbee04b88d"]
truth = "noisy"
vt = { malicious = 1, trusted = "Google LLC" }
"""


@pytest.fixture(autouse=True)
def stated(simulator: Simulator) -> None:
    simulator.config.scenario = Scenario.from_toml(STATED)
    for name in ("virustotal", "otx", "abuseipdb", "ipinfo"):
        getattr(simulator.config, name).windows = ()


async def test_virustotal_serves_the_stated_counts_reputation_votes_and_rank(
    client: httpx.AsyncClient,
) -> None:
    """Stated engine counts, reputation, votes and popularity rank reach the VirusTotal body."""
    ip = await client.get("/virustotal/api/v3/ip_addresses/8.8.8.8", headers=KEYS["virustotal"])
    attributes = ip.json()["data"]["attributes"]
    stats = attributes["last_analysis_stats"]
    assert (stats["malicious"], stats["suspicious"], stats["harmless"]) == (2, 0, 60)
    assert attributes["reputation"] == 530
    assert attributes["total_votes"] == {"harmless": 220, "malicious": 31}
    domain = await client.get("/virustotal/api/v3/domains/evil.example", headers=KEYS["virustotal"])
    attributes = domain.json()["data"]["attributes"]
    assert attributes["last_analysis_stats"]["malicious"] == 7
    assert attributes["popularity_ranks"]["Tranco"]["rank"] == 12


async def test_virustotal_marks_a_stated_trusted_file_as_goodware(
    client: httpx.AsyncClient,
) -> None:
    """A file with a stated trusted publisher carries VirusTotal's trusted_verdict."""
    digest = "79f5e62bf4831894f1a207bb9d9f20de5b5db9130e184356f1c985fbee04b88d"
    body = await client.get(f"/virustotal/api/v3/files/{digest}", headers=KEYS["virustotal"])
    attributes = body.json()["data"]["attributes"]
    assert attributes["trusted_verdict"]["organization"] == "Google LLC"
    assert attributes["trusted_verdict"]["verdict"] == "goodware"
    assert attributes["last_analysis_stats"]["malicious"] == 1


async def test_otx_serves_stated_pulses_then_big_context_pulses_and_validation(
    client: httpx.AsyncClient,
) -> None:
    """Stated pulses keep their name, size and age; context pulses are large lists."""
    body = (await client.get("/otx/api/v1/indicators/domain/evil.example/general")).json()
    (pulse,) = body["pulse_info"]["pulses"]
    assert pulse["name"] == "Emotet C2 evil.example"
    assert pulse["indicator_count"] == 14
    assert [f["display_name"] for f in pulse["malware_families"]] == ["Emotet"]
    resolver = (await client.get("/otx/api/v1/indicators/IPv4/8.8.8.8/general")).json()
    assert resolver["pulse_info"]["count"] == 4
    assert all(p["indicator_count"] >= 400 for p in resolver["pulse_info"]["pulses"])
    assert [v["source"] for v in resolver["validation"]] == ["whitelist"]


async def test_abuseipdb_and_ipinfo_serve_the_stated_report_numbers_and_owner(
    client: httpx.AsyncClient,
) -> None:
    """Confidence, report and reporter counts, usage type, anycast and owner are as stated."""
    check = await client.get(
        "/abuseipdb/api/v2/check",
        params={"ipAddress": "8.8.8.8", "maxAgeInDays": "90"},
        headers=KEYS["abuseipdb"],
    )
    data = check.json()["data"]
    assert (data["abuseConfidenceScore"], data["totalReports"], data["numDistinctUsers"]) == (
        3,
        14,
        11,
    )
    assert data["usageType"] == "Content Delivery Network"
    assert data["isWhitelisted"] is None
    info = (await client.get("/ipinfo/8.8.8.8/json", params={"token": "t"})).json()
    assert info["org"] == "AS15169 Google LLC" and info["anycast"] is True


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("vt = { engines = 3 }", "vt: unknown keys ['engines']"),
        ("vt = { votes = [1] }", "vt.votes must be [harmless, malicious]"),
        ("abuseipdb = { confidence = 300 }", "abuseipdb.confidence must be 0..100"),
        ('ipinfo = { org = "Google" }', "ipinfo.org must read 'AS<number> <name>'"),
        ("ipinfo = { anycat = true }", "ipinfo: unknown keys ['anycat']"),
        ("otx = { pulses = [{ age_days = 3 }] }", "every otx pulse needs a name"),
    ],
)
def test_malformed_evidence_is_a_scenario_error_naming_the_entry(entry: str, message: str) -> None:
    """A wrong evidence key or value is rejected with the indicator and the key in the message."""
    text = f'[indicators."1.2.3.4"]\ntruth = "malicious"\n{entry}\n'
    with pytest.raises(ScenarioError, match=r"'1\.2\.3\.4'") as caught:
        Scenario.from_toml(text)
    assert message in str(caught.value)
