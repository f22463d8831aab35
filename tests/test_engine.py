"""The engine over real HTTP against the simulator: routing, statuses, dedupe, degradation."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest

import threatintel
from support import TEST_KEYS, sim_settings
from threatintel.engine import Engine
from threatintel.errors import ConfigError, NoIndicators, RequestError, UnknownProvider
from threatintel.indicators import parse_indicator
from threatintel.models import Indicator, IndicatorType, SourceResult, SourceStatus
from threatintel.providers.virustotal import url_id
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig, Window

S = SourceStatus
MakeEngine = Callable[..., Engine]


# --- routing: every indicator type goes to the right endpoint of every source -------------

ROUTES: list[tuple[str, dict[str, str | None]]] = [
    (
        "45.142.212.61",
        {
            "virustotal": "/virustotal/api/v3/ip_addresses/45.142.212.61",
            "otx": "/otx/api/v1/indicators/IPv4/45.142.212.61/general",
            "abuseipdb": "/abuseipdb/api/v2/check",
            "ipinfo": "/ipinfo/45.142.212.61/json",
        },
    ),
    (
        "2a0d:5600:24:aa::12",
        {
            "virustotal": "/virustotal/api/v3/ip_addresses/2a0d:5600:24:aa::12",
            "otx": "/otx/api/v1/indicators/IPv6/2a0d:5600:24:aa::12/general",
            "abuseipdb": "/abuseipdb/api/v2/check",
            "ipinfo": "/ipinfo/2a0d:5600:24:aa::12/json",
        },
    ),
    (
        "cdn-update-check.net",
        {
            "virustotal": "/virustotal/api/v3/domains/cdn-update-check.net",
            "otx": "/otx/api/v1/indicators/domain/cdn-update-check.net/general",
            "abuseipdb": None,
            "ipinfo": None,
        },
    ),
    (
        "update.cdn-update-check.net",
        {
            "virustotal": "/virustotal/api/v3/domains/update.cdn-update-check.net",
            "otx": "/otx/api/v1/indicators/hostname/update.cdn-update-check.net/general",
            "abuseipdb": None,
            "ipinfo": None,
        },
    ),
    (
        "http://45.142.212.61:8080/gate.php?id=77",
        {
            "virustotal": "/virustotal/api/v3/urls/"
            + url_id("http://45.142.212.61:8080/gate.php?id=77"),
            "otx": "/otx/api/v1/indicators/url/http://45.142.212.61:8080/gate.php%3Fid=77/general",
            "abuseipdb": None,
            "ipinfo": None,
        },
    ),
    (
        "8a89e1c96867a475f6306aa971c2cce5",
        {
            "virustotal": "/virustotal/api/v3/files/8a89e1c96867a475f6306aa971c2cce5",
            "otx": "/otx/api/v1/indicators/file/8a89e1c96867a475f6306aa971c2cce5/general",
            "abuseipdb": None,
            "ipinfo": None,
        },
    ),
    (
        "6c5360d41bd2b14b1565f5b18e5c203cf512e493",
        {
            "virustotal": "/virustotal/api/v3/files/6c5360d41bd2b14b1565f5b18e5c203cf512e493",
            "otx": "/otx/api/v1/indicators/file/6c5360d41bd2b14b1565f5b18e5c203cf512e493/general",
            "abuseipdb": None,
            "ipinfo": None,
        },
    ),
    (
        "001015AAFCAE8A6942366CBB0E7D39C0738752A7800C41EA1C655D47B0A4D04C",
        {
            "virustotal": "/virustotal/api/v3/files/"
            "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c",
            "otx": "/otx/api/v1/indicators/file/"
            "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c/general",
            "abuseipdb": None,
            "ipinfo": None,
        },
    ),
]


@pytest.mark.parametrize(("value", "routes"), ROUTES, ids=[r[0][:30] for r in ROUTES])
async def test_each_type_reaches_the_right_endpoint_of_each_source(
    engine: Engine, sim: SimulatorServer, value: str, routes: dict[str, str | None]
) -> None:
    """Each indicator type is sent to each vendor's documented path, and nowhere else."""
    analysis = await engine.analyze([value])
    (enrichment,) = analysis.enrichments
    for vendor, path in routes.items():
        records = sim.log.filter(vendor=vendor)
        result = enrichment.sources[vendor]
        if path is None:
            assert records == [], vendor
            assert result.status is S.NOT_APPLICABLE
            continue
        assert len(records) == 1, vendor
        # Raw paths: OTX takes a URL unencoded but for `?`, which is percent-encoded so the
        # whole URL (query included) stays inside the path instead of becoming our query.
        assert records[0].path == path, vendor
        assert result.status in (S.OK, S.NOT_FOUND), (vendor, result)
    assert sim.log.filter(vendor="otx")[0].query == ""


async def test_bare_domain_goes_to_domains_never_urls(engine: Engine, sim: SimulatorServer) -> None:
    """A bare domain is a domain: VirusTotal /domains/, never /urls/."""
    await engine.analyze(["Example.COM."])
    (record,) = sim.log.filter(vendor="virustotal")
    assert record.path == "/virustotal/api/v3/domains/example.com"


async def test_abuseipdb_gets_ipv6_encoded_with_json_accept(
    engine: Engine, sim: SimulatorServer
) -> None:
    """AbuseIPDB receives the IPv6 address URL-encoded, maxAgeInDays, verbose and Accept: json."""
    await engine.analyze(["2a0d:5600:24:aa::12"])
    (record,) = sim.log.filter(vendor="abuseipdb")
    assert "ipAddress=2a0d%3A5600%3A24%3Aaa%3A%3A12" in record.query
    assert "maxAgeInDays=90" in record.query and "verbose" in record.query
    assert record.headers["accept"] == "application/json"
    assert record.headers["key"] == TEST_KEYS["abuseipdb"]


async def test_ipinfo_token_travels_as_bearer_header(engine: Engine, sim: SimulatorServer) -> None:
    """IPinfo's token goes in Authorization: Bearer, never in the query string."""
    await engine.analyze(["45.142.212.61"])
    (record,) = sim.log.filter(vendor="ipinfo")
    assert record.key_source == "bearer"
    assert "token" not in record.query


# --- scope: private addresses and internal names go nowhere -------------------------------


@pytest.mark.parametrize(
    "value",
    ["10.0.0.5", "192.168.1.10", "fd00::1", "fileserver.corp.local", "http://10.1.2.3/admin"],
)
async def test_non_public_indicators_are_never_sent(
    engine: Engine, sim: SimulatorServer, value: str
) -> None:
    """Private addresses, internal names and URLs on them make no request at all."""
    analysis = await engine.analyze([value])
    assert len(sim.log) == 0
    (enrichment,) = analysis.enrichments
    statuses = {r.status for r in enrichment.sources.values()}
    assert statuses <= {S.NOT_QUERIED_PRIVATE, S.NOT_APPLICABLE}
    assert S.NOT_QUERIED_PRIVATE in statuses
    assert enrichment.verdict.label.value == "unknown"
    assert any("not queried" in reason for reason in enrichment.verdict.reasons)


async def test_query_private_opt_in_sends_them(
    make_engine: MakeEngine, sim: SimulatorServer
) -> None:
    """QUERY_PRIVATE=true sends private addresses, except to IPinfo, which knows bogons."""
    async with make_engine(query_private=True) as engine:
        analysis = await engine.analyze(["10.0.0.5"])
    assert {r.vendor for r in sim.log.records()} == {"virustotal", "otx", "abuseipdb"}
    ipinfo = analysis.enrichments[0].sources["ipinfo"]
    assert ipinfo.status is S.OK and "bogon" in ipinfo.tags


# --- every status, from real HTTP exchanges -----------------------------------------------


async def test_missing_keys_are_not_configured_and_others_still_run(
    make_engine: MakeEngine, sim: SimulatorServer
) -> None:
    """Without keys VT and AbuseIPDB say not_configured; OTX and IPinfo answer keyless."""
    async with make_engine(
        virustotal_api_key="", abuseipdb_api_key="", otx_api_key="", ipinfo_api_key=""
    ) as engine:
        analysis = await engine.analyze(["45.142.212.61"])
    sources = analysis.enrichments[0].sources
    assert sources["virustotal"].status is S.NOT_CONFIGURED
    assert sources["abuseipdb"].status is S.NOT_CONFIGURED
    assert "VIRUSTOTAL_API_KEY" in (sources["virustotal"].message or "")
    assert sources["otx"].status is S.OK
    assert sources["ipinfo"].status is S.OK
    assert sim.log.count(vendor="virustotal") == 0
    (otx,) = sim.log.filter(vendor="otx")
    assert "x-otx-api-key" not in otx.headers


async def test_wrong_key_is_auth_failed(engine: Engine, sim: SimulatorServer) -> None:
    """A key the vendor does not know gives auth_failed for that source only."""
    sim.config.virustotal = VendorConfig(keys={"the-only-valid-key"})
    analysis = await engine.analyze(["45.142.212.61"])
    sources = analysis.enrichments[0].sources
    assert sources["virustotal"].status is S.AUTH_FAILED
    assert sources["otx"].status is S.OK and sources["abuseipdb"].status is S.OK


async def test_short_window_429_is_rate_limited(engine: Engine, sim: SimulatorServer) -> None:
    """Past VirusTotal's per-minute quota the source reports rate_limited."""
    sim.config.virustotal = VendorConfig(windows=(Window.per_minute(1),))
    analysis = await engine.analyze(["45.142.212.61", "185.220.101.4"])
    statuses = sorted(e.sources["virustotal"].status.value for e in analysis.enrichments)
    assert statuses == ["ok", "rate_limited"]
    assert sim.log.count(vendor="virustotal", status=429) == 1


async def test_daily_quota_is_quota_exhausted_with_reset_time(
    engine: Engine, sim: SimulatorServer
) -> None:
    """AbuseIPDB's spent daily quota gives quota_exhausted with the reset time; others go on."""
    sim.config.abuseipdb = VendorConfig(windows=(Window.per_day(1),))
    analysis = await engine.analyze(["45.142.212.61", "185.220.101.4"])
    exhausted = [e.sources["abuseipdb"] for e in analysis.enrichments]
    assert sorted(r.status.value for r in exhausted) == ["ok", "quota_exhausted"]
    spent = next(r for r in exhausted if r.status is S.QUOTA_EXHAUSTED)
    assert spent.reset_at is not None and spent.retry_after is not None
    for enrichment in analysis.enrichments:
        assert enrichment.sources["virustotal"].status is S.OK


async def test_hanging_source_times_out_alone(
    make_engine: MakeEngine, sim: SimulatorServer
) -> None:
    """A source that never answers gives timeout after REQUEST_TIMEOUT; the rest answer."""
    sim.simulator.faults.fail_next("otx", FaultKind.HANG)
    async with make_engine(request_timeout=0.5) as engine:
        analysis = await engine.analyze(["45.142.212.61"])
    sources = analysis.enrichments[0].sources
    assert sources["otx"].status is S.TIMEOUT
    assert sources["virustotal"].status is S.OK


@pytest.mark.parametrize("kind", [FaultKind.SERVER_ERROR, FaultKind.MALFORMED, FaultKind.RESET])
async def test_broken_answers_are_errors(
    engine: Engine, sim: SimulatorServer, kind: FaultKind
) -> None:
    """A 5xx, a malformed body or a dropped connection gives status error with a safe message."""
    sim.simulator.faults.fail_next("virustotal", kind)
    analysis = await engine.analyze(["45.142.212.61"])
    result = analysis.enrichments[0].sources["virustotal"]
    assert result.status is S.ERROR
    assert result.message is not None and "VirusTotal" in result.message
    assert analysis.enrichments[0].sources["abuseipdb"].status is S.OK


async def test_breaker_opens_after_failures_and_stops_calling(
    make_engine: MakeEngine, sim: SimulatorServer
) -> None:
    """After CIRCUIT_FAILURE_THRESHOLD failed calls the source is circuit_open and not called."""
    sim.simulator.faults.fail_next("virustotal", FaultKind.SERVER_ERROR, n=2)
    # No waiting for the probe (CIRCUIT_PROBE_WAIT=0): this engine runs on real time.
    async with make_engine(
        circuit_failure_threshold=2, circuit_probe_wait=0, max_workers=1
    ) as engine:
        first = await engine.analyze(["45.142.212.61"])
        second = await engine.analyze(["185.220.101.4"])
        third = await engine.analyze(["91.240.118.172"])
    assert first.enrichments[0].sources["virustotal"].status is S.ERROR
    assert second.enrichments[0].sources["virustotal"].status is S.ERROR
    opened = third.enrichments[0].sources["virustotal"]
    assert opened.status is S.CIRCUIT_OPEN and opened.retry_after
    assert sim.log.count(vendor="virustotal") == 2
    assert third.enrichments[0].sources["otx"].status is S.OK


async def test_every_status_can_be_produced(make_engine: MakeEngine, sim: SimulatorServer) -> None:
    """One batch over the simulator yields every documented status at least once."""
    sim.config.virustotal = VendorConfig(windows=(Window.per_minute(2),))
    sim.config.abuseipdb = VendorConfig(windows=(Window.per_day(1),))
    sim.config.ipinfo = VendorConfig(keys={"not-our-key"})
    sim.simulator.faults.fail_next("otx", FaultKind.HANG)
    sim.simulator.faults.fail_next("otx", FaultKind.SERVER_ERROR)
    seen: set[SourceStatus] = set()
    async with make_engine(request_timeout=0.5, max_workers=1) as engine:
        for batch in (
            ["45.142.212.61", "fresh-domain-2024.xyz", "10.0.0.5", "j.doe@acme-corp.com"],
            ["185.220.101.4", "91.240.118.172"],
        ):
            analysis = await engine.analyze(batch)
            seen |= {r.status for e in analysis.enrichments for r in e.sources.values()}
    async with make_engine(
        virustotal_api_key="", circuit_failure_threshold=1, circuit_probe_wait=0
    ) as engine:
        sim.simulator.faults.fail_next("otx", FaultKind.SERVER_ERROR)
        analysis = await engine.analyze(["45.142.212.61", "185.220.101.4"])
        seen |= {r.status for e in analysis.enrichments for r in e.sources.values()}
        analysis = await engine.analyze(["77.91.124.55"])
        seen |= {r.status for e in analysis.enrichments for r in e.sources.values()}
        # A deadline already over: every source that had to be asked is pending.
        analysis = await engine.analyze(["8.8.4.4"], deadline=0)
        seen |= {r.status for e in analysis.enrichments for r in e.sources.values()}
    assert seen == set(SourceStatus), set(SourceStatus) - seen


# --- merging, dedupe, inputs --------------------------------------------------------------


async def test_duplicates_are_merged_and_asked_once(engine: Engine, sim: SimulatorServer) -> None:
    """Different spellings of one indicator give one enrichment and one call per source."""
    analysis = await engine.analyze(
        ["hxxp://cdn-update-check[.]net", "cdn-update-check.net", "CDN-UPDATE-CHECK.NET."]
    )
    domains = [e for e in analysis.enrichments if e.indicator.type is IndicatorType.DOMAIN]
    assert len(domains) == 1
    assert len(domains[0].inputs) == 2
    assert sim.log.count(vendor="virustotal", indicator="cdn-update-check.net") == 1


async def test_unqueryable_types_are_reported_not_dropped(
    engine: Engine, sim: SimulatorServer
) -> None:
    """Emails, CVEs, ASNs and CIDRs appear in the answer as not_applicable, without calls."""
    analysis = await engine.analyze(["a@b-corp.com", "CVE-2021-44228", "AS15169", "8.8.8.0/24"])
    assert [e.indicator.type for e in analysis.enrichments] == [
        IndicatorType.EMAIL,
        IndicatorType.CVE,
        IndicatorType.ASN,
        IndicatorType.CIDR,
    ]
    for enrichment in analysis.enrichments:
        assert {r.status for r in enrichment.sources.values()} == {S.NOT_APPLICABLE}
    assert len(sim.log) == 0


async def test_free_text_is_extracted_with_rejects(engine: Engine) -> None:
    """analyze_text finds defanged indicators in prose and lists what it skipped and why."""
    analysis = await engine.analyze_text(
        "Beacon to hxxps://login-microsoft-verify[.]com/owa from 185.220.101[.]4; "
        "dropped invoice.pdf and 999.1.1.1."
    )
    values = [e.indicator.value for e in analysis.enrichments]
    assert values == ["https://login-microsoft-verify.com/owa", "185.220.101.4"]
    reasons = {r.candidate: r.reason for r in analysis.rejected}
    assert "invoice.pdf" in reasons


async def test_garbage_values_are_rejected_with_a_reason(
    engine: Engine, sim: SimulatorServer
) -> None:
    """Input with no indicator is a request error listing each rejected value and its reason;
    nothing is asked."""
    with pytest.raises(NoIndicators) as caught:
        await engine.analyze(["not an indicator at all", "999.1.1.1"])
    assert {r.candidate for r in caught.value.rejected} >= {"not an indicator at all", "999.1.1.1"}
    assert isinstance(caught.value, RequestError) and "999.1.1.1" in str(caught.value)
    assert len(sim.log) == 0


async def test_a_stream_of_nothing_is_the_same_request_error(
    engine: Engine, sim: SimulatorServer
) -> None:
    """Engine.stream, the verb every door uses, raises NoIndicators listing what was skipped
    when its text holds no indicator, as analyze does; nothing is asked."""
    with pytest.raises(NoIndicators) as caught:
        async for _ in engine.stream(text=["prose only\n", "and 999.1.1.1\n"]):
            pass
    assert [r.candidate for r in caught.value.rejected] == ["999.1.1.1"]
    assert len(sim.log) == 0


async def test_one_indicator_among_garbage_is_analysed(engine: Engine) -> None:
    """One usable value is enough: the rest are listed as rejected, no error."""
    analysis = await engine.analyze(["not an indicator at all", "8.8.8.8"])
    assert [e.indicator.value for e in analysis.enrichments] == ["8.8.8.8"]
    assert [r.candidate for r in analysis.rejected] == ["not an indicator at all"]


async def test_provider_selection(engine: Engine, sim: SimulatorServer) -> None:
    """--providers limits the sources asked, whatever the case of the names."""
    analysis = await engine.analyze(["45.142.212.61"], providers=["otx", "IPINFO"])
    assert list(analysis.enrichments[0].sources) == ["otx", "ipinfo"]
    assert {r.vendor for r in sim.log.records()} == {"otx", "ipinfo"}


@pytest.mark.parametrize("verb", ["analyze", "analyze_text"])
async def test_unknown_provider_is_a_request_error(
    engine: Engine, sim: SimulatorServer, verb: str
) -> None:
    """An unknown provider name is a RequestError naming it as given, not a ConfigError,
    raised before any lookup."""
    chosen = ["otx", " Shodan "]
    with pytest.raises(RequestError) as caught:
        if verb == "analyze":
            await engine.analyze(["45.142.212.61"], providers=chosen)
        else:
            await engine.analyze_text("seen 45.142.212.61", providers=chosen)
    assert isinstance(caught.value, UnknownProvider)
    assert not isinstance(caught.value, ConfigError)
    assert caught.value.name == "Shodan"
    assert caught.value.choices == tuple(engine.providers)
    assert str(caught.value) == (
        "unknown provider 'Shodan'; choose from virustotal, otx, abuseipdb, ipinfo"
    )
    assert len(sim.log) == 0


def test_request_errors_are_not_configuration_errors() -> None:
    """The request branch of the tree is apart from ConfigError, and holds the input errors."""
    assert not issubclass(RequestError, ConfigError)
    assert not issubclass(ConfigError, RequestError)
    assert issubclass(threatintel.InvalidIndicator, RequestError)
    assert issubclass(threatintel.NoIndicators, RequestError)
    assert issubclass(RequestError, threatintel.ThreatIntelError)


async def test_raw_bodies_on_request(engine: Engine, sim: SimulatorServer) -> None:
    """include_raw keeps each vendor's body on its result; by default it is left out."""
    plain = await engine.analyze(["45.142.212.61"])
    assert plain.enrichments[0].sources["virustotal"].raw is None
    async with Engine(sim_settings(sim), include_raw=True) as raw_engine:
        raw = await raw_engine.analyze(["45.142.212.61"])
    body = raw.enrichments[0].sources["virustotal"].raw
    assert body is not None and body["data"]["id"] == "45.142.212.61"


class ExplodingProvider:
    """A provider whose parser has a bug: the engine must contain it."""

    name: ClassVar[str] = "virustotal"
    title: ClassVar[str] = "Exploding"
    supports: ClassVar[frozenset[IndicatorType]] = frozenset(IndicatorType)
    requires_key: ClassVar[bool] = False
    cache_scope = "exploding"

    async def lookup(self, indicator: Indicator, api_key: str | None) -> SourceResult:
        raise RuntimeError(f"bug while reading {api_key}")


async def test_a_provider_bug_becomes_an_error_status(sim: SimulatorServer) -> None:
    """An unexpected exception in a provider is one error status, not a crashed batch."""
    settings = sim_settings(sim)
    async with Engine(settings, providers={"virustotal": ExplodingProvider()}) as engine:
        analysis = await engine.analyze(["45.142.212.61"])
    result = analysis.enrichments[0].sources["virustotal"]
    assert result.status is S.ERROR and result.message == "internal error"


def test_synchronous_api_for_scripts(sim: SimulatorServer) -> None:
    """threatintel.analyze() runs its own loop and returns the same models."""
    analysis = threatintel.analyze(["45.142.212.61"], settings=sim_settings(sim))
    (enrichment,) = analysis.enrichments
    assert enrichment.indicator == parse_indicator("45.142.212.61")
    assert enrichment.verdict.label.value == "malicious"
    assert set(enrichment.sources) == {"virustotal", "otx", "abuseipdb", "ipinfo"}
