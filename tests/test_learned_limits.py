"""Limits learned, not guessed: a key's real quotas from the vendor, against the simulator.

VirusTotal states a key's allowances at ``/users/{key}/overall_quotas`` (asked once per key, the
first time the limiter would make a lookup wait); AbuseIPDB states its daily limit in the
X-RateLimit-Limit header of every answer. A variable the user set beats a learned limit, which
beats the free-tier default, and `threatintel quota` says which one each limit is. Time is a
LockstepClock shared with the simulator, so a minute's wait shows as virtual time, never sleep.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from typer.testing import CliRunner

from support import TEST_KEYS, VENDOR_NAMES, sim_env
from threatintel._redaction import fingerprint
from threatintel.cli import app
from threatintel.clock import LockstepClock, VirtualClock
from threatintel.engine import Engine
from threatintel.models import SourceStatus
from threatintel.quota import (
    CONFIGURED,
    DEFAULT,
    LEARNED,
    MAX_LEARNED_LIMIT,
    KeyUsage,
    MemoryQuotaStore,
    RateLimiter,
    Window,
)
from threatintel.settings import Settings
from threatintel.simulator import SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

START = 1_700_000_000.0  # 22:13:20 UTC: a few minutes stay inside one UTC day
VT_KEY = TEST_KEYS["virustotal"]
ABUSE_KEY = TEST_KEYS["abuseipdb"]
FREE_VT = (SimWindow.per_minute(4), SimWindow.per_day(500), SimWindow.per_month(15_500))
PAID_VT = (SimWindow.per_minute(1_000), SimWindow.per_day(300_000), SimWindow.per_month(9_000_000))
ANSWERED = {SourceStatus.OK, SourceStatus.NOT_FOUND}

runner = CliRunner()


def ips(n: int) -> list[str]:
    return [f"45.{i // 250 + 10}.{i % 250 + 1}.9" for i in range(n)]


def learning_settings(sim: SimulatorServer, **overrides: Any) -> Settings:
    """The simulator's endpoints and keys, every limit left at its default unless overridden
    (tests/support.sim_settings sets them all, which would pin them)."""
    values: dict[str, Any] = {"cache_backend": "memory", "max_retries": 0, "request_timeout": 5.0}
    for name in VENDOR_NAMES:
        values[f"{name}_base_url"] = sim.base_urls[name]
        values[f"{name}_api_key"] = TEST_KEYS[name]
    return Settings.load(**(values | overrides))


def windows(usage: list[KeyUsage]) -> dict[str, tuple[int, str]]:
    (key,) = usage
    return {w.window: (w.limit, w.source) for w in key.windows}


async def vt_usage(engine: Engine) -> dict[str, tuple[int, str]]:
    return windows(await engine.pipelines["virustotal"].limiter.usage())


@pytest.fixture
def clock(sim: SimulatorServer) -> LockstepClock:
    clock = LockstepClock(START)
    sim.config.clock = clock
    return clock


def overall_quota_calls(sim: SimulatorServer) -> int:
    records = sim.log.filter(vendor="virustotal")
    return sum(1 for r in records if r.path.endswith("/overall_quotas"))


async def test_a_paid_virustotal_key_learns_its_per_minute_limit(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """A key VT says allows 60,000 an hour runs 20 lookups without the free tier's minute wait."""
    sim.config.virustotal = VendorConfig(windows=FREE_VT, key_windows={VT_KEY: PAID_VT})
    async with Engine(learning_settings(sim), clock=clock) as engine:
        analysis = await engine.analyze(ips(20), providers=["virustotal"])
        learned = await vt_usage(engine)
    assert {e.sources["virustotal"].status for e in analysis.enrichments} <= ANSWERED
    assert clock.now - START < 60, "a paid key must not wait out the free tier's minute"
    assert sim.log.count(vendor="virustotal", status=429) == 0
    assert overall_quota_calls(sim) == 1
    assert learned == {
        "minute": (1_000, LEARNED),
        "day": (300_000, LEARNED),
        "month": (9_000_000, LEARNED),
    }


async def test_a_free_key_asks_once_and_keeps_the_free_tier(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """A free key's overall_quotas confirms 4/min: the fifth lookup waits a minute, no 429."""
    sim.config.virustotal = VendorConfig(windows=FREE_VT)
    async with Engine(learning_settings(sim), clock=clock) as engine:
        analysis = await engine.analyze(ips(6), providers=["virustotal"])
        learned = await vt_usage(engine)
    assert {e.sources["virustotal"].status for e in analysis.enrichments} <= ANSWERED
    assert clock.now - START >= 60
    assert sim.log.count(vendor="virustotal", status=429) == 0
    assert overall_quota_calls(sim) == 1
    assert learned["minute"] == (4, LEARNED)


async def test_an_explicit_rate_limit_beats_the_learned_one(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """VIRUSTOTAL_RATE_LIMIT set by the user stays, even on a key VT says allows far more."""
    sim.config.virustotal = VendorConfig(windows=FREE_VT, key_windows={VT_KEY: PAID_VT})
    settings = learning_settings(sim, virustotal_rate_limit=4)
    async with Engine(settings, clock=clock) as engine:
        analysis = await engine.analyze(ips(6), providers=["virustotal"])
        learned = await vt_usage(engine)
    assert {e.sources["virustotal"].status for e in analysis.enrichments} <= ANSWERED
    assert clock.now - START >= 60, "the user's 4/min holds: the fifth lookup waits"
    assert learned["minute"] == (4, CONFIGURED)
    assert learned["day"] == (300_000, LEARNED)


@pytest.mark.parametrize("daily", [300, 5_000])
async def test_abuseipdb_headers_set_the_daily_limit(
    sim: SimulatorServer, clock: LockstepClock, daily: int
) -> None:
    """AbuseIPDB's X-RateLimit-Limit lowers or raises the key's daily limit from the default."""
    sim.config.abuseipdb = VendorConfig(
        windows=(SimWindow.per_day(1_000),), key_windows={ABUSE_KEY: (SimWindow.per_day(daily),)}
    )
    async with Engine(learning_settings(sim), clock=clock) as engine:
        before = windows(await engine.pipelines["abuseipdb"].limiter.usage())
        analysis = await engine.analyze(ips(3), providers=["abuseipdb"])
        after = windows(await engine.pipelines["abuseipdb"].limiter.usage())
    assert {e.sources["abuseipdb"].status for e in analysis.enrichments} <= ANSWERED
    assert before == {"day": (1_000, DEFAULT)}
    assert after == {"day": (daily, LEARNED)}


async def test_an_explicit_abuseipdb_limit_ignores_the_headers(
    sim: SimulatorServer, clock: LockstepClock
) -> None:
    """ABUSEIPDB_RATE_LIMIT set by the user is kept whatever the headers say."""
    sim.config.abuseipdb = VendorConfig(windows=(SimWindow.per_day(5_000),))
    settings = learning_settings(sim, abuseipdb_rate_limit=1_000)
    async with Engine(settings, clock=clock) as engine:
        await engine.analyze(ips(2), providers=["abuseipdb"])
        after = windows(await engine.pipelines["abuseipdb"].limiter.usage())
    assert after == {"day": (1_000, CONFIGURED)}


@pytest.mark.parametrize("answer", ["unauthorized", "not_found", "error", "garbage"])
async def test_a_failing_quota_endpoint_leaves_the_defaults(
    sim: SimulatorServer, clock: LockstepClock, answer: str
) -> None:
    """overall_quotas answering 401, 404, 5xx or garbage: defaults stay, every lookup answers."""
    sim.config.virustotal = VendorConfig(
        windows=FREE_VT, key_windows={VT_KEY: PAID_VT}, account_answer=answer
    )
    async with Engine(learning_settings(sim), clock=clock) as engine:
        analysis = await engine.analyze(ips(6), providers=["virustotal"])
        learned = await vt_usage(engine)
    assert {e.sources["virustotal"].status for e in analysis.enrichments} <= ANSWERED
    assert overall_quota_calls(sim) == 1, "asked once, not on every wait"
    assert learned == {"minute": (4, DEFAULT), "day": (500, DEFAULT), "month": (15_500, DEFAULT)}
    assert clock.now - START >= 60, "the free-tier default still paces the key"


def test_quota_command_says_where_each_limit_came_from(sim: SimulatorServer) -> None:
    """`threatintel quota` labels each limit configured, learned or default, in JSON and table."""
    sim.config.virustotal = VendorConfig(windows=FREE_VT, key_windows={VT_KEY: PAID_VT})
    env = {
        name: value
        for name, value in sim_env(sim).items()
        if not name.endswith(("_LIMIT", "_DAILY_LIMIT", "_MONTHLY_LIMIT"))
    }
    env |= {"VIRUSTOTAL_RATE_LIMIT": "7", "CACHE_BACKEND": "memory"}
    result = runner.invoke(app, ["quota", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = {entry["provider"]: entry for entry in json.loads(result.stdout)}
    (vt_key,) = report["virustotal"]["keys"]
    vt = {w["window"]: (w["limit"], w["limit_from"]) for w in vt_key["windows"]}
    assert vt == {
        "minute": (7, "configured"),
        "day": (300_000, "learned"),
        "month": (9_000_000, "learned"),
    }
    (otx_key,) = report["otx"]["keys"]
    assert [(w["window"], w["limit_from"]) for w in otx_key["windows"]] == [("hour", "default")]
    assert VT_KEY not in result.stdout
    table = runner.invoke(app, ["quota"], env=env)
    assert table.exit_code == 0, table.output
    assert {"configured", "learned", "default"} <= set(table.stdout.split())
    assert max(len(line) for line in table.stdout.splitlines()) <= 80


async def test_the_limiter_takes_believable_limits_for_one_key_only() -> None:
    """Stated limits replace the defaults of that key only; a pinned window, unknown names,
    zero, negatives, booleans and fractions are ignored; absurd numbers are clamped."""
    limiter = RateLimiter(
        "virustotal",
        ["k1", "k2", "k3"],
        [Window.per_minute(4), Window.per_day(500)],
        MemoryQuotaStore(),
        VirtualClock(START),
        pinned={"day"},
    )
    assert limiter.learned("k1", {"minute": 1_000, "day": 9, "hour": 5})
    for bad in (0, -3, True, 2.5, "7"):
        assert not limiter.learned("k1", {"minute": bad})  # type: ignore[dict-item]
    assert limiter.learned("k2", {"minute": 10**15})
    shown = {
        k.key: {w.window: (w.limit, w.source) for w in k.windows} for k in await limiter.usage()
    }
    assert shown[fingerprint("k1")] == {"minute": (1_000, LEARNED), "day": (500, CONFIGURED)}
    assert shown[fingerprint("k2")] == {
        "minute": (MAX_LEARNED_LIMIT, LEARNED),
        "day": (500, CONFIGURED),
    }
    assert shown[fingerprint("k3")] == {"minute": (4, DEFAULT), "day": (500, CONFIGURED)}


async def test_the_key_in_the_account_path_never_reaches_a_log(
    sim: SimulatorServer, clock: LockstepClock, caplog: pytest.LogCaptureFixture
) -> None:
    """overall_quotas carries the key in its path: our side's logs (httpx's request line
    included) show it masked."""
    caplog.set_level(logging.DEBUG)
    sim.config.virustotal = VendorConfig(windows=FREE_VT, key_windows={VT_KEY: PAID_VT})
    async with Engine(learning_settings(sim), clock=clock) as engine:
        await engine.analyze(ips(6), providers=["virustotal"])
    assert overall_quota_calls(sim) == 1
    # uvicorn's access log is the simulator's, i.e. the vendor's side: ours is everything else.
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("uvicorn"))
    assert "/users/***/overall_quotas" in ours
    assert VT_KEY not in ours
