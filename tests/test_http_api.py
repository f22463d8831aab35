"""The HTTP API against a real uvicorn server on loopback, wired to the simulator: every
endpoint, the token, the caps and limits, gzip, the metrics text and the OpenAPI document."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from http_server import serving, serving_here
from support import sim_settings
from threatintel.http_api import build_app
from threatintel.jobs import JobStoreError, UnknownJob
from threatintel.metrics import Metrics
from threatintel.reports import FORMATS
from threatintel.service import Service
from threatintel.simulator import SimulatorServer

TOKEN = "http-test-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def api(sim: SimulatorServer, **overrides: Any) -> Iterator[httpx.Client]:
    """A client (with the token) of a server over the simulator, with ``overrides``."""
    settings = sim_settings(sim, cache_backend="memory", threatintel_api_token=TOKEN, **overrides)
    with (
        serving(build_app(settings)) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=30) as client,
    ):
        yield client


@pytest.fixture
def client(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with api(sim) as made:
        yield made


def error_of(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- auth ---------------------------------------------------------------------------------------
PROTECTED = [
    ("GET", "/metrics"),
    ("POST", "/mcp"),
    ("GET", "/api/v1/providers"),
    ("GET", "/api/v1/indicators/8.8.8.8"),
    ("POST", "/api/v1/analyze"),
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/20260101-000000-abcdef"),
    ("GET", "/no/such/route"),
]


def test_only_the_probes_and_docs_answer_without_the_token(
    client: httpx.Client, sim: SimulatorServer
) -> None:
    """/health, /ready and the documentation (/docs, /redoc, /openapi.json: a browser's
    Swagger UI sends no token) are open; everything else, /mcp and unknown routes included,
    is a 401 JSON with WWW-Authenticate for a missing, wrong or non-bearer token."""
    base = str(client.base_url)
    with httpx.Client(base_url=base) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        assert anonymous.get("/ready").json() == {"ready": True, "problems": []}
        assert anonymous.get("/openapi.json").json()["openapi"].startswith("3.")
        for page in ("/docs", "/redoc"):
            assert "text/html" in anonymous.get(page).headers["content-type"], page
        for method, path in PROTECTED:
            for headers in (
                {},
                {"Authorization": "Bearer not-the-token"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": TOKEN},
                {"Authorization": f"Bearer {TOKEN}x"},
            ):
                refused = anonymous.request(
                    method, path, headers=headers, json={"iocs": ["1.1.1.1"]}
                )
                error_of(refused, 401, "unauthorized")
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in refused.text
    assert not sim.log, "a refused request reached a provider"
    for path in ("/metrics", "/openapi.json", "/docs", "/api/v1/providers"):
        assert client.get(path).status_code == 200, path


# --- analysis -----------------------------------------------------------------------------------
def test_analyze_takes_strings_typed_items_and_text(client: httpx.Client) -> None:
    """POST /api/v1/analyze analyses string items, {value, type} items and free text together,
    in one Analysis; a source selection is honoured."""
    answer = client.post(
        "/api/v1/analyze",
        json={
            "iocs": [
                "8.8.8.8",
                {"value": "evil[.]example", "type": "domain"},
                {"value": "1.1.1.1"},
            ],
            "text": "beacon to hxxp://bad[.]example/x seen",
            "deadline": 10,
        },
    )
    assert answer.status_code == 200, answer.text
    analysis = answer.json()
    values = [e["indicator"]["value"] for e in analysis["enrichments"]]
    assert values == ["8.8.8.8", "evil.example", "1.1.1.1", "http://bad.example/x"]
    assert set(analysis["enrichments"][0]["sources"]) == {
        "virustotal",
        "otx",
        "abuseipdb",
        "ipinfo",
    }
    assert analysis["enrichments"][0]["verdict"]["label"]

    only = client.post("/api/v1/analyze", json={"iocs": ["8.8.4.4"], "providers": ["otx"]})
    assert only.json()["providers"] == ["otx"]
    assert set(only.json()["enrichments"][0]["sources"]) == {"otx"}


def test_a_typed_item_must_read_as_its_type(client: httpx.Client) -> None:
    """As in MCP's analyze_iocs: an item whose value is not of its type is rejected saying
    why ("ip" and "hash" are accepted type names); a job refuses it up front."""
    answer = client.post(
        "/api/v1/analyze",
        json={
            "iocs": [{"value": "evil.example", "type": "md5"}, {"value": "1.1.1.1", "type": "ip"}]
        },
    )
    assert answer.status_code == 200, answer.text
    assert [e["indicator"]["value"] for e in answer.json()["enrichments"]] == ["1.1.1.1"]
    assert answer.json()["rejected"][0] == {
        "candidate": "evil.example",
        "reason": "given as md5 but it is domain",
    }
    only_bad = {"iocs": [{"value": "evil.example", "type": "ip"}]}
    body = error_of(client.post("/api/v1/analyze", json=only_bad), 422, "no_indicators")
    assert "given as ip" in body["detail"]
    body = error_of(client.post("/api/v1/jobs", json=only_bad), 422, "invalid_indicator")
    assert "given as ip" in body["detail"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("8.8.8.8", "8.8.8.8"),
        (quote("http://evil.example/a/b?q=1", safe=""), "http://evil.example/a/b?q=1"),
        ("http://evil.example/a/b", "http://evil.example/a/b"),
        ("hxxp://evil[.]example/a", "http://evil.example/a"),
        ("evil[.]example", "evil.example"),
    ],
)
def test_one_indicator_by_its_path(client: httpx.Client, path: str, expected: str) -> None:
    """GET /api/v1/indicators/{value} takes IPs, URLs (slashes and all, percent-encoded or
    not) and defanged values."""
    answer = client.get(f"/api/v1/indicators/{path}", params={"deadline": 10})
    assert answer.status_code == 200, answer.text
    assert answer.json()["indicator"]["value"] == expected
    assert answer.json()["sources"]


def test_an_unencoded_question_mark_in_an_indicator_is_refused(client: httpx.Client) -> None:
    """A URL indicator's unencoded '?' would cut it short and make its query ours: any query
    parameter but providers and deadline is a 422 saying to percent-encode it (quoted short),
    while those two still work."""
    body = error_of(
        client.get("/api/v1/indicators/http://evil.example/a?b=c"), 422, "unknown_parameter"
    )
    assert body["detail"] == (
        "unknown query parameter 'b': percent-encode '?' in the indicator as %3F"
    )
    long = error_of(
        client.get("/api/v1/indicators/http://evil.example/a", params={"q" * 2000: "1"}),
        422,
        "unknown_parameter",
    )
    assert len(long["detail"]) < 150
    error_of(
        client.get("/api/v1/indicators/http://evil.example/a?deadline=5&x=1"),
        422,
        "unknown_parameter",
    )
    only = client.get("/api/v1/indicators/8.8.8.8", params={"providers": "otx", "deadline": 10})
    assert only.status_code == 200, only.text
    assert set(only.json()["sources"]) == {"otx"}


def test_providers_status_lists_every_source_without_keys(client: httpx.Client) -> None:
    """GET /api/v1/providers names every source, its circuit and key fingerprints only."""
    status = client.get("/api/v1/providers")
    assert status.status_code == 200
    assert {p["provider"] for p in status.json()["providers"]} == {
        "virustotal",
        "otx",
        "abuseipdb",
        "ipinfo",
    }
    assert "SECRET" not in status.text


# --- jobs ---------------------------------------------------------------------------------------
def test_a_job_runs_to_done_and_reports_in_every_format(client: httpx.Client) -> None:
    """POST /api/v1/jobs answers 202 with links; the job is polled to done with its counts,
    and its results come in each format with that format's content type."""
    created = client.post(
        "/api/v1/jobs", json={"iocs": ["8.8.8.8", "1.1.1.1"], "text": "evil[.]example"}
    )
    assert created.status_code == 202, created.text
    job = created.json()
    assert created.headers["location"] == job["links"]["self"] == f"/api/v1/jobs/{job['id']}"

    status = client.get(job["links"]["self"], params={"wait": 20}).json()
    assert status["state"] == "done" and status["finished"]
    assert (status["done"], status["total"], status["progress"]) == (3, 3, 1.0)
    assert sum(status["verdicts"].values()) == 3
    assert status["input_complete"]

    for fmt, spec in FORMATS.items():
        report = client.get(job["links"]["results"], params={"format": fmt})
        assert report.status_code == 200, (fmt, report.text)
        assert report.headers["content-type"].split(";")[0] == spec.media_type
        assert report.headers["x-job-state"] == "done"
        if fmt == "json":
            assert len(report.json()["enrichments"]) == 3
        elif fmt == "jsonl":
            assert len([json.loads(line) for line in report.text.splitlines()]) == 3
        elif fmt == "csv":
            assert len(list(csv.DictReader(io.StringIO(report.text)))) == 3
        elif fmt == "stix":
            assert report.json()["type"] == "bundle"
    default = client.get(job["links"]["results"])
    assert default.headers["content-type"] == "application/json"


def test_a_running_job_answers_409_partial_results_and_cancels(sim: SimulatorServer) -> None:
    """Results of an unfinished job are 409 unless partial=true; cancel stops it, after which
    its results are served."""
    sim.simulator.faults.fail_next("virustotal", "hang")
    with api(sim, request_timeout=25) as client:
        job = client.post("/api/v1/jobs", json={"iocs": ["9.9.9.9"], "providers": ["virustotal"]})
        links = job.json()["links"]
        assert client.get(links["self"]).json()["state"] in ("queued", "running")

        refused = error_of(client.get(links["results"]), 409, "job_not_finished")
        assert "partial=true" in refused["detail"]
        partial = client.get(links["results"], params={"partial": "true"})
        assert partial.status_code == 200
        assert partial.headers["x-job-state"] in ("queued", "running")

        cancelled = client.post(links["cancel"])
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        assert client.get(links["results"]).headers["x-job-state"] == "cancelled"


def test_unknown_jobs_and_formats(client: httpx.Client) -> None:
    """An unknown job is a 404, an unknown report format a 422 naming the choices."""
    error_of(client.get("/api/v1/jobs/20260101-000000-abcdef"), 404, "unknown_job")
    error_of(client.post("/api/v1/jobs/nope/cancel"), 404, "unknown_job")
    error_of(client.get("/api/v1/jobs/nope/results"), 404, "unknown_job")
    body = error_of(
        client.get("/api/v1/jobs/nope/results", params={"format": "pdf"}), 422, "unknown_format"
    )
    assert "markdown" in body["detail"]


# --- bad input ----------------------------------------------------------------------------------
JSON, FORM = "application/json", "application/x-www-form-urlencoded"
BAD_BODIES = [
    (b"{bad json", JSON, 400, "malformed_json"),
    (b"\xff\xfe\x00garbage", JSON, 400, "malformed_json"),
    (b'{"iocs": ["8.8.8.8\xff"]}', JSON, 400, "malformed_json"),
    (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "malformed_json"),
    (b"\xff\xfe\x00garbage", "application/octet-stream", 415, "unsupported_media_type"),
    (b'{"iocs": ["8.8.8.8"]}', FORM, 415, "unsupported_media_type"),
    (b'{"iocs": ["8.8.8.8"]}', "text/plain", 415, "unsupported_media_type"),
    (b"[1, 2]", JSON, 422, "invalid_request"),
    (b'{"iocs": "8.8.8.8"}', JSON, 422, "invalid_request"),
    (b'{"iocs": [1]}', JSON, 422, "invalid_request"),
    (b'{"iocs": ["8.8.8.8"], "deadline": 0}', JSON, 422, "invalid_request"),
    (b'{"iocs": ["8.8.8.8"], "surprise": 1}', JSON, 422, "invalid_request"),
    (b"{}", JSON, 422, "no_indicators"),
    (b'{"iocs": ["not an indicator"]}', JSON, 422, "no_indicators"),
    (b'{"iocs": ["8.8.8.8"], "providers": ["nope"]}', JSON, 422, "unknown_provider"),
]


@pytest.mark.parametrize(("content", "content_type", "status", "error"), BAD_BODIES)
def test_bad_bodies_are_4xx_json_without_the_input(
    client: httpx.Client, content: bytes, content_type: str, status: int, error: str
) -> None:
    """Malformed JSON, wrong types and unusable requests are 4xx JSON errors; validation
    problems give place, message and type only, never the input."""
    body = error_of(
        client.post("/api/v1/analyze", content=content, headers={"content-type": content_type}),
        status,
        error,
    )
    for problem in body.get("problems") or []:
        assert set(problem) == {"loc", "msg", "type"}


@pytest.mark.parametrize("path", ["/api/v1/analyze", "/api/v1/jobs"])
@pytest.mark.parametrize("request_body", [{}, {"iocs": [], "text": ""}])
def test_an_empty_request_is_no_indicators_on_both_endpoints(
    client: httpx.Client, path: str, request_body: dict[str, Any]
) -> None:
    """A request with neither indicators nor text is the same 422 no_indicators whether it
    asks for an analysis or a job."""
    error_of(client.post(path, json=request_body), 422, "no_indicators")


def test_unknown_routes_methods_and_parameters_are_json(client: httpx.Client) -> None:
    """Unknown routes (404), wrong methods (405) and bad query parameters (422) answer JSON."""
    error_of(client.get("/api/v2/nothing"), 404, "not_found")
    error_of(client.delete("/health"), 405, "method_not_allowed")
    error_of(
        client.get("/api/v1/indicators/8.8.8.8", params={"deadline": "soon"}),
        422,
        "invalid_request",
    )
    error_of(client.get("/api/v1/jobs/x", params={"wait": -1}), 422, "invalid_request")


def test_body_caps_count_declared_and_chunked_bodies(sim: SimulatorServer) -> None:
    """A body over API_MAX_BODY is a 413 whether its length is declared or it comes chunked;
    POST /api/v1/jobs and /mcp take bodies up to API_MAX_JOB_BODY instead."""
    big = json.dumps({"iocs": ["8.8.8.8"], "text": "x" * 3000}).encode()
    with api(sim, api_max_body=2048, api_max_job_body=8192) as client:
        declared = client.post(
            "/api/v1/analyze", content=big, headers={"content-type": "application/json"}
        )
        error_of(declared, 413, "body_too_large")
        chunked = client.post(
            "/api/v1/analyze",
            content=iter([big[:1000], big[1000:2000], big[2000:]]),
            headers={"content-type": "application/json"},
        )
        assert "content-length" not in chunked.request.headers
        error_of(chunked, 413, "body_too_large")
        assert not sim.log, "an oversized body was analysed"
        assert (
            client.post(
                "/api/v1/jobs", content=big, headers={"content-type": "application/json"}
            ).status_code
            == 202
        )
        error_of(
            client.post(
                "/api/v1/jobs", content=big * 3, headers={"content-type": "application/json"}
            ),
            413,
            "body_too_large",
        )
        # MCP's batch tools take a job's worth of text: /mcp has the job cap too.
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "extract_iocs", "arguments": {"text": "x" * 5000}},
        }
        mcp_headers = {"accept": "application/json, text/event-stream"}
        answered = client.post("/mcp", json=call, headers=mcp_headers)
        assert answered.status_code == 200, answered.text
        call["params"]["arguments"]["text"] = "x" * 9000  # type: ignore[index]
        error_of(client.post("/mcp", json=call, headers=mcp_headers), 413, "body_too_large")


def test_too_many_indicators_for_a_synchronous_answer(sim: SimulatorServer) -> None:
    """More than API_MAX_INDICATORS indicators (items plus those in the text) is a 413 that
    points at jobs, before any lookup."""
    with api(sim, api_max_indicators=2) as client:
        body = error_of(
            client.post("/api/v1/analyze", json={"iocs": ["8.8.8.8", "1.1.1.1", "9.9.9.9"]}),
            413,
            "too_many_indicators",
        )
        assert "job" in body["detail"]
        error_of(
            client.post(
                "/api/v1/analyze", json={"iocs": ["8.8.8.8"], "text": "1.1.1.1 and 9.9.9.9"}
            ),
            413,
            "too_many_indicators",
        )
        assert not sim.log
        assert (
            client.post("/api/v1/analyze", json={"iocs": ["8.8.8.8", "1.1.1.1"]}).status_code == 200
        )


# --- limits, gzip, metrics, OpenAPI -------------------------------------------------------------
def test_a_client_over_its_request_limit_gets_429_at_once(sim: SimulatorServer) -> None:
    """API_RATE_LIMIT requests per minute per client on /api/; the next is a 429 with
    Retry-After, while probes and metrics stay uncounted."""
    with api(sim, api_rate_limit=3) as client:
        for _ in range(3):
            assert client.get("/api/v1/providers").status_code == 200
            assert client.get("/health").status_code == 200
            assert client.get("/metrics").status_code == 200
        refused = error_of(client.get("/api/v1/indicators/8.8.8.8"), 429, "rate_limited")
        assert refused
        retry_after = int(client.get("/api/v1/providers").headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert client.get("/ready").status_code == 200


@pytest.mark.parametrize("compress", [True, False])
def test_gzip_follows_compress_responses(sim: SimulatorServer, compress: bool) -> None:
    """COMPRESS_RESPONSES gzips answers for clients that accept gzip, and only for them."""
    with api(sim, compress_responses=compress) as client:
        gz = client.get("/openapi.json", headers={"accept-encoding": "gzip"})
        assert gz.headers.get("content-encoding") == ("gzip" if compress else None)
        assert gz.json()["openapi"].startswith("3.")
        plain = client.get("/openapi.json", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    """GET /metrics is Prometheus text that prometheus-client's parser reads, with the
    upstream request counter fed by a lookup."""
    client.get("/api/v1/indicators/8.8.8.8")
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    upstream = families["threatintel_upstream_requests"]
    assert {s.labels["provider"] for s in upstream.samples} >= {"virustotal", "otx"}


def test_openapi_describes_every_endpoint(client: httpx.Client) -> None:
    """/openapi.json lists every endpoint with its error bodies and the bearer scheme, and
    /docs serves the interactive page."""
    from openapi_pydantic import parse_obj

    document = client.get("/openapi.json").json()
    parse_obj(document)  # a valid OpenAPI 3.1 document
    assert set(document["paths"]) == {
        "/health",
        "/ready",
        "/metrics",
        "/api/v1/analyze",
        "/api/v1/indicators/{value}",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/results",
        "/api/v1/providers",
    }
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/health"]["get"]["security"] == []
    analyze = document["paths"]["/api/v1/analyze"]["post"]["responses"]
    assert analyze["413"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "text/html" in client.get("/docs").headers["content-type"]


# --- the server's own failures ------------------------------------------------------------------
class BrokenJobStore:
    """A job store whose reads fail: JobStoreError for ids starting with 'down', a plain bug
    for the rest (and the readiness probe)."""

    def __init__(self) -> None:
        self.probes = 0

    async def get(self, job_id: str) -> Any:
        self.probes += job_id == "readiness-probe"
        if job_id.startswith("down"):
            raise JobStoreError("the job store is unreachable")
        if job_id == "gone":
            raise UnknownJob(job_id)
        raise RuntimeError("internal detail /secret/path that must not leak")

    async def aclose(self) -> None:
        return None


async def test_store_failures_are_503_and_bugs_500_without_a_traceback(
    sim: SimulatorServer,
) -> None:
    """A store that cannot be reached gives 503 JSON with Retry-After, a bug a 500 JSON that
    names nothing internal; /ready says not ready (asking the store once a second at most)."""
    settings = sim_settings(sim, cache_backend="memory", job_retention=0)
    async with (
        Service(settings, store=(store := BrokenJobStore())) as service,
        serving_here(build_app(settings, service=service)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        down = await client.get("/api/v1/jobs/down-1")
        error_of(down, 503, "unavailable")
        assert down.headers["retry-after"]
        error_of(await client.get("/api/v1/jobs/gone"), 404, "unknown_job")
        bug = await client.get("/api/v1/jobs/other")
        error_of(bug, 500, "internal_error")
        assert "secret" not in bug.text and "Traceback" not in bug.text
        for _ in range(3):
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["problems"] == ["job store unreachable (RuntimeError)"]
        assert store.probes == 1  # one answer reused for READY_REUSE seconds


class RecordingMetrics(Metrics):
    """The real metrics, also keeping each observe_http call."""

    def __init__(self) -> None:
        super().__init__()
        self.http: list[tuple[str, str, int]] = []

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        assert 0 < seconds < 30
        self.http.append((method, route, status))


async def test_every_request_is_timed_under_its_route_template(sim: SimulatorServer) -> None:
    """Each request, refused ones included, reaches the metrics once with its method, the
    route's template (never the raw path) and its status."""
    settings = sim_settings(sim, cache_backend="memory", threatintel_api_token=TOKEN)
    async with Service(settings) as service:
        service.metrics = metrics = RecordingMetrics()
        async with (
            serving_here(build_app(settings, service=service)) as url,
            httpx.AsyncClient(base_url=url, headers=AUTH) as client,
        ):
            await client.get("/api/v1/indicators/hxxp://evil[.]example/a/b")
            await client.get("/api/v1/jobs/20260101-000000-abcdef")
            await client.get("/no/such/path")
            await client.get("/api/v1/providers", headers={"Authorization": "Bearer wrong"})
            await client.post("/mcp", headers={"Authorization": ""}, json={})
            await client.get("/health")
    assert metrics.http == [
        ("GET", "/api/v1/indicators/{value}", 200),
        ("GET", "/api/v1/jobs/{job_id}", 404),
        ("GET", "unmatched", 404),
        ("GET", "/api/v1/providers", 401),
        ("POST", "/mcp", 401),
        ("GET", "/health", 200),
    ]
