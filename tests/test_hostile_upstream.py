"""The CLI against a hostile upstream (tests/hostile.py), as a real process on loopback.

Each mode's run must finish within the subprocess timeout, inside an address-space limit, print
no control character, and report the attacked sources as failed while the others answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from typing import Any

import httpx
import pytest

from hostile import HUGE, HostileServer
from support import TEST_KEYS
from threatintel.models import Indicator, IndicatorType, SourceStatus
from threatintel.providers import PROVIDERS
from threatintel.providers.base import MAX_RAW_DEPTH, MAX_RETRY_AFTER
from threatintel.providers.otx import MAX_PULSES
from threatintel.providers.values import MAX_LIST
from threatintel.providers.virustotal import MAX_ENGINES
from threatintel.quota import MAX_BLOCK

#: Global addresses (nothing leaves loopback: every base URL points at the hostile server).
IPS = ("45.9.148.1", "45.9.148.2", "45.9.148.3", "45.9.148.4", "45.9.148.5")
#: Bounded time is the subprocess timeout; bounded memory is the address-space limit.
CLI_TIMEOUT = 60
MEMORY_LIMIT = 1024 * 1024 * 1024
VENDORS = ("virustotal", "otx", "abuseipdb", "ipinfo")

pytestmark = pytest.mark.timeout(4 * CLI_TIMEOUT)


#: The CLI's entry point behind an address-space limit. Set in the child itself: preexec_fn is
#: unsafe here, as the hostile server runs in a thread of this process.
LIMITED = (
    "import resource, runpy;"
    f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}));"
    "runpy.run_module('threatintel', run_name='__main__', alter_sys=True)"
)


def run_cli(server: HostileServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``threatintel *args`` with all four vendors pointed at ``server``, limits generous."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("FORCE_COLOR", None)
    env |= {f"{name.upper()}_BASE_URL": url for name, url in server.base_urls.items()}
    env |= {f"{name.upper()}_API_KEY": key for name, key in TEST_KEYS.items()}
    env |= {
        "VIRUSTOTAL_RATE_LIMIT": "10000",
        "VIRUSTOTAL_DAILY_LIMIT": "100000",
        "VIRUSTOTAL_MONTHLY_LIMIT": "1000000",
        "MAX_QUOTA_WAIT": "0",
        "LOOKUP_TIMEOUT": "20",
    }
    return subprocess.run(
        [sys.executable, "-c", LIMITED, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=env,
    )


def analyze(server: HostileServer, *extra: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(server, "analyze", *IPS, *extra)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def control_characters(text: str) -> set[str]:
    """Characters of Unicode category C (controls, bidi and zero-width formats...) but newline."""
    return {ch for ch in text if ch != "\n" and unicodedata.category(ch).startswith("C")}


def sources(result: subprocess.CompletedProcess[str]) -> dict[str, list[dict[str, Any]]]:
    """Each vendor's results, one per indicator, from JSON output."""
    analysis = json.loads(result.stdout)
    assert [e["indicator"]["value"] for e in analysis["enrichments"]] == list(IPS)
    return {name: [e["sources"][name] for e in analysis["enrichments"]] for name in VENDORS}


def statuses(found: list[dict[str, Any]]) -> set[SourceStatus]:
    return {SourceStatus(item["status"]) for item in found}


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert control_characters(result.stdout + result.stderr) == set()


# --- escape sequences ------------------------------------------------------------------------


def test_escape_mode_answers_are_read() -> None:
    """Bodies full of ESC/OSC/bidi strings are still parsed: every source answers, in bounds,
    and short lists are kept whole (nothing counted as truncated)."""
    with HostileServer("escape") as server:
        found = sources(analyze(server, "--format", "json"))
        analyze(server, "--format", "table")
    for name in VENDORS:
        assert statuses(found[name]) == {SourceStatus.OK}, name
        assert all(item["truncated"] == {} for item in found[name]), name


@pytest.mark.parametrize("output", ["json", "table"])
def test_escape_mode_prints_no_control_character(output: str) -> None:
    """Escape sequences and bidi controls from upstream strings never reach the output."""
    with HostileServer("escape") as server:
        assert_clean(analyze(server, "--format", output))


# --- huge lists ------------------------------------------------------------------------------


def test_huge_lists_are_capped_and_counted() -> None:
    """40,000 engines, pulses and families finish quickly, capped, with what was dropped counted."""
    with HostileServer("huge") as server:
        found = sources(analyze(server, "--format", "json"))
        assert_clean(analyze(server, "--format", "table"))
    for vt in found["virustotal"]:
        assert vt["status"] == "ok"
        assert len(vt["detections"]["flagged_by"]) == MAX_ENGINES
        assert vt["truncated"]["flagged_by"] == HUGE - MAX_ENGINES
        assert len(vt["tags"]) <= MAX_LIST
    for otx in found["otx"]:
        assert otx["status"] == "ok"
        assert len(otx["pulses"]) == MAX_PULSES
        assert otx["truncated"]["pulses"] == HUGE - MAX_PULSES
        assert len(otx["allowlisted_by"]) == MAX_LIST
        assert otx["truncated"]["allowlisted_by"] == HUGE - MAX_LIST
        assert all(len(p["malware_families"]) <= MAX_LIST for p in otx["pulses"])
    assert statuses(found["abuseipdb"]) == statuses(found["ipinfo"]) == {SourceStatus.OK}


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after", ["1e300", "inf", "nan", "3e9", "-5", "Fri, 31 Dec 9999 23:59:59 GMT"]
)
def test_hostile_retry_after_never_blocks_forever(retry_after: str) -> None:
    """A hostile Retry-After becomes a bounded block: quota and later lookups keep working."""
    with HostileServer("retry_after", retry_after=retry_after) as server:
        first = sources(analyze(server, "--format", "json"))
        quota = run_cli(server, "quota", "--json")
        assert_clean(analyze(server, "--format", "table"))
        again = sources(analyze(server, "--format", "json"))
    assert quota.returncode == 0, quota.stderr
    assert "Traceback" not in quota.stderr
    for found in (first, again):
        for name in VENDORS:
            assert all(s.failed for s in statuses(found[name])), name
            for item in found[name]:
                assert item["retry_after"] is None or item["retry_after"] <= MAX_BLOCK
    json.loads(quota.stdout)
    assert all(
        item["retry_after"] is None or item["retry_after"] <= MAX_RETRY_AFTER
        for item in first["virustotal"]
    )


# --- deep JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True])
def test_deep_json_is_the_source_error_not_a_crash(raw: bool) -> None:
    """A 900-deep success body is read (its raw body replaced by a note); 100,000-deep errors
    are those sources' error status while the others answer."""
    extra = ("--raw",) if raw else ()
    with HostileServer("deep") as server:
        found = sources(analyze(server, "--format", "json", *extra))
        assert_clean(analyze(server, "--format", "table", *extra))
    assert statuses(found["virustotal"]) == {SourceStatus.OK}
    assert statuses(found["ipinfo"]) == {SourceStatus.OK}
    assert statuses(found["otx"]) == statuses(found["abuseipdb"]) == {SourceStatus.ERROR}
    for vt in found["virustotal"]:
        if raw:
            assert vt["raw"] == {"omitted": f"the body nests deeper than {MAX_RAW_DEPTH} levels"}
        else:
            assert vt["raw"] is None


# --- compression bomb ------------------------------------------------------------------------


def test_compression_bomb_is_refused_as_it_inflates() -> None:
    """1 GB of gzip (1 MB on the wire) fails those sources within the memory limit; the others
    answer."""
    with HostileServer("bomb") as server:
        found = sources(analyze(server, "--format", "json"))
        assert_clean(analyze(server, "--format", "table"))
    for name in ("virustotal", "otx"):
        assert all(s.failed for s in statuses(found[name])), name
    assert statuses(found["abuseipdb"]) == statuses(found["ipinfo"]) == {SourceStatus.OK}


async def test_compressed_answers_are_read() -> None:
    """gzip, zlib deflate and raw deflate bodies are inflated by our capped reader and parsed."""
    indicator = Indicator(type=IndicatorType.IPV4, value=IPS[0])
    with HostileServer("compressed") as server:
        async with httpx.AsyncClient() as client:
            for name in VENDORS:
                provider = PROVIDERS[name](client, server.base_urls[name])
                result = await provider.lookup(indicator, TEST_KEYS[name])
                assert result.status is SourceStatus.OK, name
                assert result.reputation is not None or result.abuse or result.geo, name
