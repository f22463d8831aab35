"""Logs: one API_CALL line per request sent upstream with its fields and no key, "rate limit"
on a 429, one "completed in" line per analysis and job, JSON lines that parse, third-party
loggers handed to our handler, and the CLI writing them to stderr only."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from support import ENDPOINTS_NOTE, TEST_KEYS, VENDOR_NAMES, sim_env, sim_settings
from threatintel import logs
from threatintel._redaction import fingerprint
from threatintel.cache import MemoryCache
from threatintel.clock import LockstepClock, VirtualClock
from threatintel.engine import Engine
from threatintel.jobs import MemoryJobStore
from threatintel.service import Service
from threatintel.simulator import FaultKind, SimulatorServer, VendorConfig
from threatintel.simulator import Window as SimWindow

IPS = ["45.142.212.61", "8.8.8.8"]
START = 1_700_000_000.0


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Whatever configure() changes (root handlers and level, the adopted and quieted
    loggers) is put back after the test."""
    root = logging.getLogger()
    names = (*logs.ADOPTED, *logs.QUIETED, *logs.NEVER_CHATTY, logs.API_LOGGER)
    saved = {
        n: (lg.handlers[:], lg.propagate, lg.level) for n in names if (lg := logging.getLogger(n))
    }
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (kept, propagate, lvl) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:], lg.propagate = kept, propagate
        lg.setLevel(lvl)


def api_calls(caplog: pytest.LogCaptureFixture, cache: str = "miss") -> list[logging.LogRecord]:
    return [
        r for r in caplog.records
        if "API_CALL" in r.getMessage() and getattr(r, "cache", None) == cache
    ]  # fmt: skip


def assert_no_key(text: str) -> None:
    for secret in TEST_KEYS.values():
        assert secret not in text and secret[:12] not in text


async def test_one_api_call_line_per_upstream_request(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request the simulator received has one INFO API_CALL line with the provider, the
    key's fingerprint, status and latency; a second, cached run adds only DEBUG hit lines."""
    caplog.set_level(logging.DEBUG)
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        await service.analyze(IPS)
        calls = api_calls(caplog)
        assert len(calls) == len(sim.log) == len(IPS) * len(VENDOR_NAMES)
        for name in VENDOR_NAMES:
            mine = [r for r in calls if r.provider == name]  # type: ignore[attr-defined]
            assert len(mine) == sim.log.count(vendor=name) == len(IPS)
            for record in mine:
                assert record.levelno == logging.INFO
                assert record.key == fingerprint(TEST_KEYS[name])  # type: ignore[attr-defined]
                assert record.status in ("ok", "not_found")  # type: ignore[attr-defined]
                assert record.latency >= 0  # type: ignore[attr-defined]
                message = record.getMessage()
                assert f"provider={name}" in message and "cache=miss" in message
                assert "latency=" in message and "status=" in message
        caplog.clear()
        await service.analyze(IPS)
        assert api_calls(caplog) == []
        hits = api_calls(caplog, cache="hit")
        assert len(hits) == len(IPS) * len(VENDOR_NAMES)
        assert all(r.levelno == logging.DEBUG for r in hits)
    assert_no_key(caplog.text)


async def test_a_429_logs_rate_limit(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A vendor's 429 is one WARNING API_CALL line saying "rate limit", with the HTTP code."""
    caplog.set_level(logging.INFO)
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_minute(1),))
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        await service.analyze(IPS, providers=["virustotal"])
    assert sim.log.count(vendor="virustotal", status=429) == 1
    limited = [r for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(limited) == 1
    assert "API_CALL" in limited[0].getMessage() and "http=429" in limited[0].getMessage()
    assert limited[0].levelno == logging.WARNING
    assert_no_key(caplog.text)


async def test_a_retried_failure_warns_and_a_final_one_is_an_error(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing source with one retry: its first call logs a WARNING API_CALL saying it is
    retried, its second an ERROR one (what `grep ERROR` finds); backoff on a virtual clock."""
    caplog.set_level(logging.INFO)
    sim.config.otx = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.SERVER_ERROR,))
    clock = VirtualClock(START)
    async with Engine(sim_settings(sim, max_retries=1), clock=clock) as engine:
        await engine.analyze(IPS[:1], providers=["otx"])
    calls = api_calls(caplog)
    assert len(calls) == len(sim.log) == 2
    assert [r.levelno for r in calls] == [logging.WARNING, logging.ERROR]
    assert calls[0].getMessage().endswith("attempt=1 retrying")
    assert "status=error http=5" in calls[1].getMessage()


async def test_a_wait_for_quota_logs_rate_limit_once(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten lookups at VirusTotal's 4/min wait for quota: one "rate limit" line names the
    provider, the key's fingerprint, the window and its setting (virtual time: no sleep)."""
    caplog.set_level(logging.INFO)
    clock = LockstepClock(START)
    sim.config.clock = clock
    sim.config.virustotal = VendorConfig(windows=(SimWindow.per_minute(4),))
    settings = sim_settings(sim, virustotal_rate_limit=4, max_quota_wait=None)
    async with Engine(settings, clock=clock, cache=MemoryCache(clock=clock)) as engine:
        await engine.analyze([f"45.10.{i}.9" for i in range(1, 11)], providers=["virustotal"])
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rate limit")]
    key = fingerprint(TEST_KEYS["virustotal"])
    assert waits == [
        f"rate limit: virustotal {key} waits 61s: its minute window is full "
        "(VIRUSTOTAL_RATE_LIMIT=4)"
    ]
    assert sim.log.count(vendor="virustotal", status=429) == 0


async def test_analyses_and_jobs_log_completed_in(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An analysis that asks upstream logs one INFO "completed in" line with its indicator and
    verdict counts, one the cache answered whole logs it at DEBUG only; a job logs one when it
    finishes."""
    caplog.set_level(logging.INFO)
    async with Service(sim_settings(sim), store=MemoryJobStore()) as service:
        await service.analyze(IPS)
        done = [r.getMessage() for r in caplog.records if "completed in" in r.getMessage()]
        assert len(done) == 1
        assert done[0].startswith("analysis: 2 indicators completed in ")
        assert done[0].split("completed in ")[1].split("s ")[0].replace(".", "").isdigit()
        caplog.clear()
        await service.analyze(IPS)  # all from the cache now: the line drops to DEBUG
        done_again = [r for r in caplog.records if "completed in" in r.getMessage()]
        assert done_again == []
        caplog.clear()
        job = await service.submit(["1.1.1.1"])
        await service.wait(job.id, timeout=30)
        await service.aclose()  # the job's task has ended, and logged, once this returns
    done = [r.getMessage() for r in caplog.records if "completed in" in r.getMessage()]
    assert done[-1].startswith(f"job {job.id} done: 1 indicator completed in ")


async def test_json_lines_parse_with_their_fields(
    sim: SimulatorServer, restored_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOG_FORMAT=json writes one object per line to stderr (time, level, logger, message and
    the structured fields), nothing to stdout, and no key."""
    stderr, stdout = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "stdout", stdout)
    settings = sim_settings(sim, log_format="json")
    logs.configure(settings, server=True)
    assert logs.configured()
    logging.getLogger("threatintel.test").info("hostile \x1b[31mtext\u202e here")
    async with Service(settings, store=MemoryJobStore()) as service:
        await service.analyze(IPS)
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert stdout.getvalue() == ""
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert "\x1b" not in stderr.getvalue() and "\u202e" not in stderr.getvalue()
    assert lines[0]["message"] == "hostile \x1b[31mtext\u202e here"  # kept, escaped by JSON
    calls = [line for line in lines if line.get("event") == "API_CALL"]
    assert len(calls) == len(sim.log)
    assert all(
        {"provider", "key", "status", "latency", "cache"} <= c.keys() and c["level"] == "INFO"
        for c in calls
    )
    completed = [line for line in lines if "completed in" in line["message"]]
    assert len(completed) == 1 and completed[0]["indicators"] == 2
    assert_no_key(stderr.getvalue())


def test_the_cli_stays_at_warning_unless_log_level_is_set(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server defaults to INFO; the CLI to WARNING, and to LOG_LEVEL once it is set (from
    the environment before the settings load, or from the settings)."""
    root = logging.getLogger()
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    logs.configure(None, server=True)
    assert root.level == logging.INFO
    calls = logging.getLogger(logs.API_LOGGER)
    assert calls.isEnabledFor(logging.INFO)
    logs.configure(None, server=False)
    assert root.level == logging.WARNING
    assert not calls.isEnabledFor(logging.ERROR)  # the CLI's output shows failures already
    assert sum(isinstance(h, logging.StreamHandler) and logs.configured() for h in root.handlers)
    monkeypatch.setenv("LOG_LEVEL", "debug")
    logs.configure(None, server=False)
    assert root.level == logging.DEBUG and calls.isEnabledFor(logging.DEBUG)
    from threatintel.settings import Settings

    logs.configure(Settings.load(log_level="ERROR"), server=False)
    assert root.level == logging.ERROR
    monkeypatch.delenv("LOG_LEVEL")
    logs.configure(Settings.load(), server=False)
    assert root.level == logging.WARNING
    ours = [h for h in root.handlers if type(h).__name__ == "_OurHandler"]
    assert len(ours) == 1  # each call replaced the last one's handler


def test_third_party_handlers_give_way_to_ours(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fastmcp (a rich handler, propagate=False, at import) and uvicorn (its Config installs
    handlers) log through our root handler, at our level, once configure() has run."""
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    import fastmcp  # noqa: F401
    import uvicorn

    uvicorn.Config(app=lambda scope, receive, send: None)  # configures uvicorn's loggers
    assert logging.getLogger("uvicorn.access").handlers
    logs.configure(None, server=True)
    for name in logs.ADOPTED:
        adopted = logging.getLogger(name)
        assert adopted.handlers == [] and adopted.propagate, name
        if name not in logs.NEVER_CHATTY:
            assert adopted.level == logging.NOTSET, name
    assert not logging.getLogger("docket").isEnabledFor(logging.INFO)
    logs.configure(None, server=False)
    assert not logging.getLogger("fastmcp").isEnabledFor(logging.INFO)  # the CLI's WARNING


def run_cli(sim: SimulatorServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "LOG_FORMAT")}
    return subprocess.run(
        [sys.executable, "-m", "threatintel", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=base | sim_env(sim) | env,
        check=False,
    )


def test_the_cli_writes_log_lines_to_stderr_only(sim: SimulatorServer) -> None:
    """`threatintel analyze` is quiet by default, even when a source fails; with
    LOG_LEVEL=INFO its API_CALL and "completed in" lines go to stderr (JSON with
    LOG_FORMAT=json) and stdout holds only the report."""
    sim.config.otx = VendorConfig(fault_rate=1.0, fault_kinds=(FaultKind.SERVER_ERROR,))
    quiet = run_cli(sim, "analyze", "--format", "csv", "45.142.212.61")
    assert quiet.returncode == 0, quiet.stderr
    assert ENDPOINTS_NOTE.sub("", quiet.stderr) == ""
    assert any(r.status and r.status >= 500 for r in sim.log.filter(vendor="otx"))
    sim.config.otx = VendorConfig()
    sim.log.clear()
    loud = run_cli(sim, "analyze", "--format", "csv", "45.142.212.62", LOG_LEVEL="INFO")
    assert loud.returncode == 0, loud.stderr
    lines = ENDPOINTS_NOTE.sub("", loud.stderr).splitlines()
    calls = [line for line in lines if "API_CALL" in line]
    assert len(calls) == len(sim.log) and all(line.startswith("INFO ") for line in calls)
    assert sum("completed in" in line for line in lines) == 1
    assert "API_CALL" not in loud.stdout and "completed in" not in loud.stdout
    assert loud.stdout.splitlines()[0] == quiet.stdout.splitlines()[0]  # the same CSV header
    as_json = run_cli(
        sim, "analyze", "--format", "csv", "45.142.212.63", LOG_FORMAT="json", LOG_LEVEL="info"
    )
    parsed = [json.loads(line) for line in ENDPOINTS_NOTE.sub("", as_json.stderr).splitlines()]
    assert any(line.get("event") == "API_CALL" for line in parsed)
    for run in (quiet, loud, as_json):
        assert_no_key(run.stdout + run.stderr)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_line_loses_our_keys_and_token(
    sim: SimulatorServer, restored_logging: None, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Whoever logs a configured key or the API token (fastmcp logs tool arguments at DEBUG,
    uvicorn the request path), the line written shows its label and fingerprint instead."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    token = "server-token-0123456789abcdef"
    settings = sim_settings(sim, log_level="DEBUG", log_format=fmt, threatintel_api_token=token)
    logs.configure(settings, server=True)
    vt_key = TEST_KEYS["virustotal"]
    logging.getLogger("fastmcp.server").debug("call_tool analyze_iocs with %r", {"ioc": vt_key})
    logging.getLogger("uvicorn.access").info('"GET /api/v1/indicators/%s HTTP/1.1" 422', token)
    written = stderr.getvalue()
    assert vt_key not in written and token not in written
    assert "[VIRUSTOTAL_API_KEY" in written and "[THREATINTEL_API_TOKEN" in written
