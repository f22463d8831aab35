from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from random import Random

import httpx
import pytest

import threatintel.simulator as simulator_package
from threatintel.simulator import (
    FaultKind,
    IndicatorSpec,
    ManualClock,
    Scenario,
    ScenarioError,
    Simulator,
    SimulatorConfig,
    Truth,
    VendorConfig,
    demo_sample,
)
from threatintel.simulator.bodies import sample
from threatintel.simulator.scenario import DEFAULT_WEIGHTS, hash_truth, normalise

CONTRACTS = Path("/work/shared/contracts")
SAMPLES = Path(simulator_package.__file__).parent / "samples"


def test_public_surface_is_pinned() -> None:
    """The package exports exactly the documented names."""
    assert simulator_package.__all__ == [
        "VENDORS", "FaultKind", "IndicatorSpec", "ManualClock", "RequestLog", "RequestRecord",
        "Scenario", "ScenarioError", "Simulator", "SimulatorConfig", "SimulatorServer", "Truth",
        "VendorConfig", "Window", "build_app", "demo_sample", "serve",
    ]  # fmt: skip
    assert simulator_package.VENDORS == ("virustotal", "otx", "abuseipdb", "ipinfo")


def test_toml_entries_parse_with_overrides() -> None:
    """String and table entries parse, and lookups normalise case and spelling."""
    scenario = Scenario.from_toml(
        """
        [indicators]
        "45.142.212.61" = "malicious"
        "HTTP://Evil.com" = "noisy"
        "ABCDEF0123456789ABCDEF0123456789" = "clean"

        [indicators."Evil.COM"]
        truth = "suspicious"
        pulse_name = "<b>x</b>"
        fault = "hang"
        fault_vendors = ["otx"]
        adversary = "TA542"
        malware = ["Emotet"]
        attack_ids = ["T1071"]
        """
    )
    assert scenario.truth("45.142.212.61") is Truth.MALICIOUS
    spec = scenario.spec("evil.com.")
    assert spec.truth is Truth.SUSPICIOUS and spec.pulse_name == "<b>x</b>"
    assert spec.fault_for("otx") is FaultKind.HANG and spec.fault_for("virustotal") is None
    assert (spec.adversary, spec.malware, spec.attack_ids) == ("TA542", ("Emotet",), ("T1071",))
    assert scenario.truth("http://evil.com/") is Truth.NOISY
    assert scenario.truth("abcdef0123456789abcdef0123456789") is Truth.CLEAN
    assert scenario.urls() == ("http://evil.com/",)


@pytest.mark.parametrize(
    "text",
    [
        '[indicators]\n"a.com" = "evil"',
        '[indicators]\n"a.com" = { truth = "clean", colour = "red" }',
        '[indicators]\n"a.com" = { truth = "clean", fault = "explode" }',
        '[indicators]\n"a.com" = { truth = "clean", fault = "5xx", fault_vendors = ["shodan"] }',
        '[indicators]\n"a.com" = { truth = "clean", malware = "Emotet" }',
        "[defaults]\nmalicious = -1",
        "not toml [",
    ],
)
def test_invalid_scenarios_raise(text: str) -> None:
    """Unknown truths, keys, faults or vendors, bad types and bad TOML are ScenarioErrors."""
    with pytest.raises(ScenarioError):
        Scenario.from_toml(text)


def test_hash_default_is_stable_and_follows_the_weights() -> None:
    """Unlisted values get a stable bucket, spread roughly by the default weights."""
    values = [f"host-{i}.example.net" for i in range(4_000)]
    assert [hash_truth(v) for v in values[:50]] == [hash_truth(v) for v in values[:50]]
    counts = Counter(hash_truth(v) for v in values)
    for truth, weight in DEFAULT_WEIGHTS.items():
        assert abs(counts[truth] / len(values) - weight) < 0.03
    only_clean = Scenario(weights={Truth.CLEAN: 1.0})
    assert {only_clean.truth(v) for v in values[:100]} == {Truth.CLEAN}


def test_recorded_samples_keep_their_truth_unless_listed() -> None:
    """Sample indicators default to the truth their recording shows; a listing overrides it."""
    assert Scenario().truth("1.1.1.1") is Truth.NOISY
    assert Scenario({"1.1.1.1": IndicatorSpec(Truth.MALICIOUS)}).truth("1.1.1.1") is Truth.MALICIOUS


def test_demo_scenario_covers_the_demo_sample_with_every_truth() -> None:
    """Every value the demo scenario lists appears in the refanged demo text; all truths occur."""
    text = demo_sample().replace("hxxp", "http").replace("[.]", ".")
    tokens = {normalise(token.strip(",()")) for token in re.split(r"\s+", text) if token}
    scenario = Scenario.default()
    listed = set(scenario.indicators)
    # Domains may appear only inside a URL or an e-mail address.
    assert all(value in tokens or value in text.lower() for value in listed)
    assert len(listed) >= 45
    assert set(Counter(spec.truth for spec in scenario.indicators.values())) == set(Truth)


def test_config_load_reads_vendor_settings(tmp_path: Path) -> None:
    """[vendors.*] tables and the seed configure the vendors; unknown settings are refused."""
    path = tmp_path / "s.toml"
    path.write_text(
        'seed = 9\n[indicators]\n"a.com" = "clean"\n'
        '[vendors.otx]\nlatency = 0.25\nfault_rate = 0.5\nfault_kinds = ["reset"]\nkeys = ["k"]\n'
    )
    config = SimulatorConfig.load(path, clock=ManualClock(0.0))
    assert config.seed == 9 and config.otx.latency == 0.25
    assert config.otx.fault_kinds == (FaultKind.RESET,) and config.otx.accepts("k")
    assert config.virustotal.latency == 0.0 and len(config.virustotal.windows) == 3
    path.write_text("[vendors.otx]\nspeed = 1\n")
    with pytest.raises(ScenarioError):
        SimulatorConfig.load(path)


def test_latency_jitter_stays_within_its_bounds_and_varies(tmp_path: Path) -> None:
    """A delay is latency +- jitter, drawn afresh per answer; jitter above latency is refused."""
    path = tmp_path / "s.toml"
    path.write_text("[vendors.ipinfo]\nlatency = 0.1\njitter = 0.03\n")
    config = SimulatorConfig.load(path)
    rng = Random(1)
    delays = [config.ipinfo.delay(rng) for _ in range(200)]
    assert all(0.07 <= d <= 0.13 for d in delays)
    assert max(delays) - min(delays) > 0.03
    assert config.otx.delay(rng) == 0.0
    with pytest.raises(ValueError, match="jitter"):
        VendorConfig(latency=0.01, jitter=0.02)


@pytest.mark.skipif(not CONTRACTS.is_dir(), reason="shared contracts not present")
def test_packaged_samples_are_copies_of_the_contracts() -> None:
    """samples/ holds every contract sample byte for byte (README and headers excluded)."""
    expected = {p.name for p in CONTRACTS.iterdir()} - {"README.md", "headers.md"}
    assert {p.name for p in SAMPLES.iterdir()} == expected
    for name in expected:
        assert (SAMPLES / name).read_bytes() == (CONTRACTS / name).read_bytes()


REQUESTS = {
    "virustotal": ("/virustotal/api/v3/ip_addresses/{v}", {"x-apikey": "k"}),
    "otx": ("/otx/api/v1/indicators/IPv4/{v}/general", {}),
    "abuseipdb": ("/abuseipdb/api/v2/check?ipAddress={v}",
                  {"Key": "k", "Accept": "application/json"}),
    "ipinfo": ("/ipinfo/{v}/json", {"Authorization": "Bearer k"}),
}  # fmt: skip
TEMPLATES = {
    "virustotal": "vt_ip_clean.json",
    "otx": "otx_notfound_or_empty.json",
    "abuseipdb": "abuseipdb_check_clean.json",
    "ipinfo": "ipinfo_ip.json",
}


@pytest.mark.parametrize("truth", list(Truth))
async def test_bodies_per_truth_keep_the_sample_structure(truth: Truth) -> None:
    """For every truth each vendor's body has the keys of its recorded template, repeatably."""
    value = "203.0.114.9"  # just outside TEST-NET-3: public, never a recorded sample
    config = SimulatorConfig(clock=ManualClock(1_700_000_000.0))
    config.scenario = Scenario({value: IndicatorSpec(truth)})
    config.virustotal.windows = ()
    simulator = Simulator(config)
    transport = httpx.ASGITransport(app=simulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        for vendor, (path, headers) in REQUESTS.items():
            first = await client.get(path.format(v=value), headers=headers)
            again = await client.get(path.format(v=value), headers=headers)
            assert first.content == again.content
            if vendor == "virustotal" and truth is Truth.UNKNOWN:
                assert first.status_code == 404
                continue
            body = first.json()
            template = sample(TEMPLATES[vendor])
            if vendor == "virustotal":
                body, template = body["data"]["attributes"], template["data"]["attributes"]
            elif vendor == "abuseipdb":
                body, template = body["data"], template["data"]
            optional = {"hostname", "anycast"} if vendor == "ipinfo" else set()
            assert set(template) - optional <= set(body), vendor
