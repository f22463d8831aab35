"""Two `threatintel server --transport http` processes sharing REDIS_URL behave as one: a job
submitted to one is polled to completion and reported by the other, and the per-client
request limit counts across both; cache and quotas are one too."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from http_server import ServerProcess
from support import emptied_redis_database, sim_env
from threatintel.simulator import SimulatorServer

TOKEN = "instances-token-4d8e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A database of its own on the local Redis: the servers use their default key prefixes, and
#: this test clears them before and after (no other test uses this database).
REDIS_DB = 13
VALUES = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "evil.example.com", "http://bad.example.net/x"]


@pytest.fixture
def shared_redis() -> Iterator[str]:
    """REDIS_URL of an emptied database of its own; skips when no Redis answers."""
    with emptied_redis_database(REDIS_DB, "the two-instance test") as url:
        yield url


def test_a_job_submitted_to_one_instance_finishes_on_the_other(
    sim: SimulatorServer, shared_redis: str
) -> None:
    """A job posted to instance A is long-polled to done and reported on instance B, and the
    request limit (6 per minute here) is one budget across both instances."""
    env = sim_env(sim, THREATINTEL_API_TOKEN=TOKEN, REDIS_URL=shared_redis, API_RATE_LIMIT="6")
    with ServerProcess(env) as a, ServerProcess(env) as b:
        assert a.url != b.url
        with httpx.Client(headers=AUTH, timeout=30) as client:
            created = client.post(f"{a.url}/api/v1/jobs", json={"iocs": VALUES})  # 1
            assert created.status_code == 202, created.text
            links = created.json()["links"]

            status = client.get(f"{b.url}{links['self']}", params={"wait": 25}).json()  # 2
            assert status["state"] == "done", status
            assert (status["done"], status["total"]) == (len(VALUES), len(VALUES))

            report = client.get(f"{b.url}{links['results']}", params={"format": "jsonl"})  # 3
            assert report.status_code == 200
            assert [
                json.loads(line)["indicator"]["value"] for line in report.text.splitlines()
            ] == [
                "8.8.8.8",
                "1.1.1.1",
                "9.9.9.9",
                "evil.example.com",
                "http://bad.example.net/x",
            ]

            for url in (a.url, b.url, a.url):  # 4, 5, 6
                assert client.get(f"{url}/api/v1/providers").status_code == 200
            refused = client.get(f"{b.url}/api/v1/providers")
            assert refused.status_code == 429, refused.text
            assert client.get(f"{b.url}/health").status_code == 200


def test_cache_and_quotas_are_shared_across_instances(
    sim: SimulatorServer, shared_redis: str
) -> None:
    """An indicator looked up on instance A is answered from the cache on instance B without
    a request upstream, and B's quota report counts the calls A made."""
    env = sim_env(sim, THREATINTEL_API_TOKEN=TOKEN, REDIS_URL=shared_redis, API_RATE_LIMIT="0")
    with (
        ServerProcess(env) as a,
        ServerProcess(env) as b,
        httpx.Client(headers=AUTH, timeout=30) as client,
    ):
        first = client.get(f"{a.url}/api/v1/indicators/45.1.2.3").json()
        assert not any(s["cached"] for s in first["sources"].values())
        asked = sim.log.count()
        assert asked >= 4  # every source was asked once, by A

        used = {
            p["provider"]: sum(w["used"] for k in p["keys"] for w in k["windows"])
            for p in client.get(f"{b.url}/api/v1/providers").json()["providers"]
        }
        assert used["virustotal"] >= 1 and used["abuseipdb"] >= 1, used

        again = client.get(f"{b.url}/api/v1/indicators/45.1.2.3").json()
        assert all(
            s["cached"] for s in again["sources"].values() if s["status"] in ("ok", "not_found")
        )
        assert sim.log.count() == asked  # B asked nobody
