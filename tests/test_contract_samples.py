"""Every recorded or documented vendor body in the contracts parses into the right result.

The bodies are served byte for byte through httpx.MockTransport to the real provider clients,
so the whole path runs: request building, status mapping, JSON decoding, parsing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import httpx
import pytest

from threatintel.errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    QuotaExhausted,
    RateLimited,
)
from threatintel.indicators import parse_indicator
from threatintel.models import SourceResult, SourceStatus
from threatintel.providers import OTX, AbuseIPDB, HttpProvider, IPinfo, VirusTotal
from threatintel.simulator import SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

SAMPLES = resources.files("threatintel.simulator") / "samples"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "contracts"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


Check = Callable[[SourceResult], None]


def _vt_ip_malicious(r: SourceResult) -> None:
    assert r.detections is not None
    assert (r.detections.malicious, r.detections.total) == (4, 94)
    assert "CMC Threat Intelligence" in r.detections.flagged_by
    assert r.reputation == 134
    assert r.geo is not None and r.geo.asn == 13335


def _vt_file_malicious(r: SourceResult) -> None:
    assert r.detections is not None
    # 53 malicious + 9 undetected; type-unsupported engines are not counted.
    assert (r.detections.malicious, r.detections.total) == (53, 62)
    # The dict key "Lionic" holds engine_name "AegisLab": names come from the values.
    assert "AegisLab" in r.detections.flagged_by
    assert r.threat_label == "virus.hill/w97m"
    assert r.first_seen is not None and r.first_seen.tzinfo is not None


def _otx_ipv4(r: SourceResult) -> None:
    assert r.pulse_count == 2
    assert "T1071" in r.attack_ids
    assert r.adversaries and r.malware_families
    assert r.first_seen is not None and r.first_seen.tzinfo is not None
    assert r.geo is not None and r.geo.asn == 36647


def _otx_domain(r: SourceResult) -> None:
    assert r.allowlisted_by and "Whitelisted domain" in r.allowlisted_by[0]


def _abuse_malicious(r: SourceResult) -> None:
    assert r.abuse is not None
    assert r.abuse.confidence == 100 and r.abuse.total_reports == 1
    assert r.abuse.last_reported is not None and r.abuse.last_reported.utcoffset() is not None


def _abuse_private(r: SourceResult) -> None:
    assert r.abuse is not None and r.abuse.is_public is False


def _ipinfo(r: SourceResult) -> None:
    assert r.geo is not None
    assert (r.geo.asn, r.geo.organization, r.geo.country) == (14618, "Amazon.com, Inc.", "US")
    assert r.geo.latitude == pytest.approx(47.5846)


def _ipinfo_anycast(r: SourceResult) -> None:
    assert r.geo is not None and r.geo.anycast and r.geo.asn == 13335


def _ipinfo_lite(r: SourceResult) -> None:
    assert r.geo is not None and (r.geo.asn, r.geo.country) == (15169, "US")


def _bogon(r: SourceResult) -> None:
    assert "bogon" in r.tags and r.geo is None


def _none(r: SourceResult) -> None:
    pass


OK = SourceStatus.OK
NOT_FOUND = SourceStatus.NOT_FOUND

#: sample → (provider, indicator, HTTP status, expected status or error class, extra check)
CASES: dict[str, tuple[type[HttpProvider], str, int, SourceStatus | type[ProviderError], Check]] = {
    "vt_ip_malicious.json": (VirusTotal, "1.1.1.1", 200, OK, _vt_ip_malicious),
    "vt_ip_clean.json": (VirusTotal, "142.251.220.110", 200, OK, _none),
    "vt_domain.json": (VirusTotal, "haiku-os.org", 200, OK, _none),
    "vt_domain_flagged.json": (VirusTotal, "tucows.com", 200, OK, _none),
    "vt_url.json": (VirusTotal, "http://218.54.47.76/", 200, OK, _none),
    "vt_file_malicious.json": (
        VirusTotal,
        "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c",
        200,
        OK,
        _vt_file_malicious,
    ),
    "vt_file_clean.json": (
        VirusTotal,
        "ddecc35aa198f401948c73a0d53fd93c4ecb770198ad7db308de026745c56b71",
        200,
        OK,
        _none,
    ),
    "vt_notfound.json": (VirusTotal, "0" * 64, 404, NOT_FOUND, _none),
    "vt_notfound_url.json": (VirusTotal, "http://nothing.example.com/", 404, NOT_FOUND, _none),
    "vt_wrongcredentials.json": (VirusTotal, "8.8.8.8", 401, AuthenticationFailed, _none),
    "vt_authrequired.json": (VirusTotal, "8.8.8.8", 401, AuthenticationFailed, _none),
    "vt_quota.json": (VirusTotal, "8.8.8.8", 429, RateLimited, _none),
    "otx_ipv4_general.json": (OTX, "98.136.103.23", 200, OK, _otx_ipv4),
    "otx_ipv4_general_2023_shape.json": (OTX, "8.8.4.4", 200, OK, _none),
    "otx_notfound_or_empty.json": (OTX, "8.8.88.8", 200, NOT_FOUND, _none),
    "otx_domain_general.json": (OTX, "otx.alienvault.com", 200, OK, _otx_domain),
    "otx_url_general.json": (
        OTX,
        "http://www.fotoidea.com/sport/4x4_san_ponso/slides/IMG_0068.html",
        200,
        NOT_FOUND,
        _none,
    ),
    "otx_file_general.json": (
        OTX,
        "6c5360d41bd2b14b1565f5b18e5c203cf512e493",
        200,
        NOT_FOUND,
        _none,
    ),
    "abuseipdb_check_malicious.json": (AbuseIPDB, "118.25.6.39", 200, OK, _abuse_malicious),
    "abuseipdb_check_clean.json": (AbuseIPDB, "54.240.77.24", 200, OK, _none),
    "abuseipdb_check_clean_ipv6.json": (AbuseIPDB, "2001:4860:4860::8888", 200, OK, _none),
    "abuseipdb_check_private.json": (AbuseIPDB, "8.8.8.8", 200, OK, _abuse_private),
    "abuseipdb_error_401.json": (AbuseIPDB, "8.8.8.8", 401, AuthenticationFailed, _none),
    "abuseipdb_error_422.json": (AbuseIPDB, "8.8.8.8", 422, BadRequest, _none),
    "abuseipdb_error_422_maxage.json": (AbuseIPDB, "8.8.8.8", 422, BadRequest, _none),
    "abuseipdb_error_429.json": (AbuseIPDB, "8.8.8.8", 429, QuotaExhausted, _none),
    "ipinfo_ip.json": (IPinfo, "54.240.77.24", 200, OK, _ipinfo),
    "ipinfo_ip_unauthenticated.json": (IPinfo, "1.1.1.1", 200, OK, _ipinfo_anycast),
    "ipinfo_lite.json": (IPinfo, "8.8.8.8", 200, OK, _ipinfo_lite),
    # Served for a public address to exercise the parser; real bogons never leave the client.
    "ipinfo_bogon.json": (IPinfo, "8.8.8.8", 200, OK, _bogon),
    "ipinfo_404_wrong_ip.json": (IPinfo, "8.8.8.8", 404, BadRequest, _none),
    "ipinfo_429.txt": (IPinfo, "8.8.8.8", 429, QuotaExhausted, _none),
}
#: Documented for completeness; threatintel does not use IPinfo's batch endpoint (paid tier).
UNUSED = {"ipinfo_batch_request.json", "ipinfo_batch_response.json"}


def test_every_packaged_sample_has_a_case() -> None:
    """No contract sample is left without a parsing test."""
    names = {p.name for p in SAMPLES.iterdir() if p.name.endswith((".json", ".txt"))}
    assert names == set(CASES) | UNUSED


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/contracts not present beside the repo")
def test_packaged_samples_match_the_shared_contracts() -> None:
    """The package ships the contracts' samples unchanged (no drift from the recorded bodies)."""
    shared = {p.name for p in SHARED.iterdir() if p.suffix in (".json", ".txt")}
    assert shared == set(CASES) | UNUSED
    for name in shared:
        assert (SHARED / name).read_bytes() == sample(name), name


@pytest.mark.parametrize("name", sorted(CASES))
async def test_sample_parses_to_expected_result(name: str) -> None:
    """Each vendor body maps to the documented status (or error) and its fields parse."""
    provider_cls, value, http_status, expected, check = CASES[name]
    body = sample(name)
    headers = {"content-type": "application/json"}
    if http_status == 429 and provider_cls is AbuseIPDB:
        headers |= {"retry-after": "29241", "x-ratelimit-reset": "1545973200"}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(http_status, content=body, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = provider_cls(client, "https://vendor.invalid/api", include_raw=True)
        indicator = parse_indicator(value)
        if isinstance(expected, SourceStatus):
            result = await provider.lookup(indicator, "k" * 64)
            assert result.status is expected
            assert result.source == provider.name
            if expected is OK:
                assert result.raw == json.loads(body)
            check(result)
        else:
            with pytest.raises(expected) as caught:
                await provider.lookup(indicator, "k" * 64)
            # The exact class: a VT QuotaExceededError is rate_limited, not quota_exhausted.
            assert type(caught.value) is expected
            assert caught.value.provider == provider.name
            assert "k" * 16 not in str(caught.value)
            if expected is QuotaExhausted and provider_cls is AbuseIPDB:
                assert isinstance(caught.value, QuotaExhausted)
                assert caught.value.retry_after == 29241
                assert caught.value.reset_at is not None


# --- limits stated by the vendor (documented, unverified: tests/fixtures/contracts/) -----------

DOCUMENTED = Path(__file__).resolve().parent / "fixtures" / "contracts"
FREE_VT_WINDOWS = (SimWindow.per_minute(4), SimWindow.per_day(500), SimWindow.per_month(15_500))


async def test_documented_overall_quotas_sample_gives_the_lower_allowances() -> None:
    """VT's documented overall_quotas body: per period the lower of user and group allowances,
    the minute as an hour's sixtieth; asked with the key as user id and in x-apikey."""
    body = (DOCUMENTED / "virustotal_overall_quotas.json").read_bytes()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = VirusTotal(client, "https://vendor.invalid/api/v3")
        limits = await provider.account_limits("k" * 64)
    assert limits == {
        "hour": 3_300_000,
        "day": 99_000_000,
        "month": 1_000_000_000,
        "minute": 55_000,
    }
    (request,) = seen
    assert request.url.path == f"/api/v3/users/{'k' * 64}/overall_quotas"
    assert request.headers["x-apikey"] == "k" * 64


async def test_simulated_overall_quotas_has_the_documented_shape(
    sim: SimulatorServer,
) -> None:
    """The simulator's overall_quotas answer has the documented periods, each user's allowed
    and used as integers: the shape the client was written against."""
    documented = json.loads((DOCUMENTED / "virustotal_overall_quotas.json").read_bytes())
    sim.config.virustotal = VendorConfig(windows=FREE_VT_WINDOWS)
    url = f"{sim.base_urls['virustotal']}/users/a-key/overall_quotas"
    async with httpx.AsyncClient() as client:
        answer = (await client.get(url, headers={"x-apikey": "a-key"})).json()
    assert set(answer["data"]) == set(documented["data"])
    for period in answer["data"].values():
        assert {type(v) for v in period["user"].values()} == {int}
        assert set(period["user"]) == {"allowed", "used"}
    assert answer["data"]["api_requests_hourly"]["user"]["allowed"] == 240


@pytest.mark.parametrize(
    ("header", "stated"),
    [("1000", {"day": 1000}), ("5000", {"day": 5000}), ("-5", None), ("1e9", None), ("", None)],
)
async def test_abuseipdb_answers_state_the_daily_limit(
    header: str, stated: dict[str, int] | None
) -> None:
    """X-RateLimit-Limit on a /check answer is told to the limiter as the key's daily limit;
    anything but plain digits is ignored."""
    body = sample("abuseipdb_check_clean.json")
    headers = {"content-type": "application/json", "x-ratelimit-limit": header}
    told: list[tuple[str | None, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = AbuseIPDB(client, "https://vendor.invalid/api/v2")
        provider.on_limits = lambda key, limits: told.append((key, dict(limits)))
        await provider.lookup(parse_indicator("8.8.8.8"), "k" * 64)
    assert told == ([("k" * 64, stated)] if stated else [])
