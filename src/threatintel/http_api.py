"""The HTTP door: the REST API, /health, /ready, /metrics and MCP's streamable HTTP at /mcp,
all over one Service.

    app = build_app(settings)                     # an ASGI app; the Service lives in its lifespan
    uvicorn.run(app, host="127.0.0.1", port=8000, lifespan="on", log_config=None)

Layers, outermost first (each pure ASGI, see ``_asgi``): request timing for the metrics, the
bearer token (THREATINTEL_API_TOKEN; the probes and the docs stay open), the per-client
request limit (API_RATE_LIMIT per minute on /api/ and /mcp, counted in the engine's quota
store, so REDIS_URL shares it across instances), the body cap (API_MAX_BODY, API_MAX_JOB_BODY
for POST /api/v1/jobs and /mcp), gzip (COMPRESS_RESPONSES), then FastAPI's routes and /mcp.

Every 4xx and 5xx body is ``{"error": code, "detail": one sentence}`` (ErrorBody): the
caller's mistakes (``RequestError``) are 4xx, a store that cannot be reached is 503, anything
else a 500 with no traceback. Validation problems give their place and message, never the
input. fastapi loads here, so only ``threatintel server`` imports this module; fastmcp loads
on the first request to /mcp (``_lazy_mount``), so a REST-only server never pays for it.
"""

from __future__ import annotations

import http
import importlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from threatintel._asgi import BearerAuth, BodyLimit, RateLimit, Timing
from threatintel._keyguard import KeyGuard
from threatintel._lazy_mount import LazyMount
from threatintel._redaction import url_secrets
from threatintel._version import __version__
from threatintel.errors import (
    InvalidIndicator,
    NoIndicators,
    RequestError,
    ThreatIntelError,
    UnknownProvider,
)
from threatintel.http_models import (
    API,
    AnalyzeRequest,
    ErrorBody,
    Health,
    JobCreated,
    JobRequest,
    JobStatus,
    Readiness,
    links,
)
from threatintel.jobs.base import UnknownJob
from threatintel.mcp_views import IocItem, typed_values
from threatintel.models import Analysis, Enrichment
from threatintel.quota.base import Window
from threatintel.reports import FORMATS
from threatintel.service import Service, ServiceStatus
from threatintel.settings import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Scope

logger = logging.getLogger("threatintel.http")

#: Longest ``detail`` sentence: an error quoting the caller's input stays short.
MAX_DETAIL: Final = 300
#: Methods named in the metrics; any other is counted as "other".
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: Longest long poll on a job (GET /api/v1/jobs/{id}?wait=): under common proxy timeouts.
MAX_WAIT: Final = 30.0
#: Seconds one /ready answer is reused.
READY_REUSE: Final = 1.0
#: The query parameters of GET /api/v1/indicators/{value}; an error quotes QUOTED chars of another.
INDICATOR_PARAMETERS: Final = frozenset({"providers", "deadline"})
QUOTED: Final = 40
#: Compressed only above this size: gzip costs more than it saves on small answers.
GZIP_MINIMUM: Final = 500


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Malformed request (e.g. the body is not JSON)",
        401: "Missing or wrong bearer token",
        404: "No such job or endpoint",
        409: "The job has not finished (ask with partial=true for what is there)",
        413: "Body or indicator count over the documented cap",
        415: "The body is not sent as application/json",
        422: "The request is well-formed but unusable (see 'problems')",
        429: "Over the per-client request limit (see Retry-After)",
        503: "A store this instance needs cannot be reached",
    }
    return {c: {"model": ErrorBody, "description": described[c]} for c in codes}


COMMON = (400, 401, 422, 429)

FormatName = Annotated[
    str, Query(description="Report format.", json_schema_extra={"enum": list(FORMATS)})
]
JobId = Annotated[str, Path(max_length=128, description="The id POST /api/v1/jobs returned.")]


class _State:
    """Where the routes find the Service once the lifespan has started it."""

    def __init__(self, service: Service | None) -> None:
        self.service = service
        #: When /ready last asked the service, and its answer.
        self.readiness: tuple[float, list[str]] | None = None

    def get(self) -> Service:
        if self.service is None:
            raise RuntimeError("the service is not running (outside the app's lifespan)")
        return self.service


def build_app(settings: Settings, *, service: Service | None = None) -> ASGIApp:
    """The whole HTTP server over ``service`` (default: one made from ``settings`` when the
    app starts and closed when it stops; a given one is left open)."""
    from starlette.middleware.gzip import GZipMiddleware

    state = _State(service)
    mcp = LazyMount(_mcp_builder(settings, state), name="MCP at /mcp", scrub=_scrubber(settings))

    @asynccontextmanager
    async def service_lifespan() -> AsyncIterator[None]:
        if service is not None:
            yield
            return
        async with Service(settings) as started:
            state.service = started
            try:
                yield
            finally:
                state.service = None

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        async with service_lifespan(), mcp.running():  # MCP (if loaded) stops first
            yield

    api = FastAPI(
        title="threatintel",
        version=__version__,
        summary="Indicator enrichment from VirusTotal, OTX, AbuseIPDB and IPinfo.",
        description=(
            "Every endpoint but /health, /ready and the documentation needs `Authorization: Bearer "
            "<THREATINTEL_API_TOKEN>` when the server has a token. Errors are "
            '`{"error": code, "detail": sentence}`. MCP (streamable HTTP) is served at /mcp.'
        ),
        lifespan=lifespan,
    )
    _add_routes(api, state, settings)
    _add_error_handlers(api)
    api.router.routes.append(Route("/mcp", endpoint=mcp, methods=["GET", "POST", "DELETE"]))
    _document_auth(api)
    if settings.compress_responses:  # GZipMiddleware leaves text/event-stream alone
        api.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM)

    def body_limit(scope: Scope) -> int:
        path = scope["path"]
        if path == "/mcp" or (scope["method"] == "POST" and path == f"{API}/jobs"):
            return settings.api_max_job_body  # MCP's batch tools take a job's worth of text
        return settings.api_max_body

    app: ASGIApp = BodyLimit(api, body_limit)
    if settings.api_rate_limit:
        window = (Window.per_minute(settings.api_rate_limit),)

        async def acquire(client: str) -> float | None:
            engine = state.get().engine
            grant = await engine.quota_store.acquire(
                f"http-api:{client}", window, engine.clock.time()
            )
            return None if grant.granted else grant.wait

        app = RateLimit(app, acquire, lambda path: path.startswith("/api/") or path == "/mcp")
    token = settings.threatintel_api_token
    if token is not None and token.get_secret_value():
        app = BearerAuth(app, token.get_secret_value())

    def observe(scope: Scope, status: int, seconds: float) -> None:
        if state.service is not None:
            method = scope["method"] if scope["method"] in METHODS else "other"
            state.service.metrics.observe_http(method, _template(api, scope), status, seconds)

    return Timing(app, observe)


def _mcp_builder(settings: Settings, state: _State) -> Callable[[], Awaitable[Starlette]]:
    """What /mcp serves, made on its first request: fastmcp and fastmcp-tasks (about 60 MB
    and a second or more of imports) are loaded only by a server that is asked for MCP.

    Not loaded at start-up even with REDIS_URL, where Docket's workers share one queue of
    background tasks: a task is only ever submitted through /mcp, so the instance that took it
    has loaded MCP and runs a worker, and an instance polling a task loads MCP on that poll."""

    async def build() -> Starlette:
        from threatintel import logs

        if logs.configured():
            # Else fastmcp's import gives its logger a rich handler of its own (propagate off),
            # long after logs.configure() adopted it: its lines must reach ours (our format,
            # keys and token scrubbed).
            os.environ["FASTMCP_LOG_ENABLED"] = "false"
        # Imported in a thread: the REST API keeps answering meanwhile.
        await anyio.to_thread.run_sync(importlib.import_module, "threatintel.mcp_server")
        from threatintel import mcp_server

        mcp = mcp_server.build_mcp(state.get, tasks_url=mcp_server.tasks_url_for(settings))
        return mcp_server.http_app(mcp)

    return build


def _scrubber(settings: Settings) -> Callable[[str], str]:
    """Masks REDIS_URL's password (the tasks' store) in a message about a failed start."""
    secrets = url_secrets(settings.redis_url.get_secret_value()) if settings.redis_url else []

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return scrub


def _template(api: FastAPI, scope: Scope) -> str:
    """The route's path template as the OpenAPI document spells it (``/api/v1/jobs/{job_id}``),
    never the raw path; "unmatched" for a path no route takes."""
    path: str | None = getattr(scope.get("route"), "path", None)
    if path is None:
        for candidate in api.router.routes:  # refused before routing (401, 413, 429), or /mcp
            if candidate.matches(scope)[0] != Match.NONE:
                path = getattr(candidate, "path", None)
                break
    return "unmatched" if path is None else path.replace(":path}", "}")


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # Serialised by pydantic-core at once: FastAPI would validate the model again first.
    return Response(model.model_dump_json(), status, headers=headers, media_type="application/json")


# --- routes -----------------------------------------------------------------------------------
def _add_routes(api: FastAPI, state: _State, settings: Settings) -> None:
    formats = list(FORMATS)
    guard = KeyGuard(settings)  # our own keys are masked in what a rejection shows

    @api.get("/health", tags=["probes"], response_model=Health)
    async def health() -> Response:
        """Liveness: the process answers. Cheap, and open without a token."""
        return _json(Health())

    @api.get(
        "/ready",
        tags=["probes"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: see problems"}},
    )
    async def ready() -> Response:
        """Readiness: the job store answers and at least one source is usable. Open without
        a token (for load balancers and Kubernetes probes); the answer is reused for a second,
        so anonymous callers cannot turn it into load on the stores."""
        service = state.get()
        now = service.engine.clock.time()
        if state.readiness is None or now - state.readiness[0] >= READY_REUSE:
            state.readiness = (now, await service.ready())
        problems = state.readiness[1]
        return _json(Readiness(ready=not problems, problems=problems), 503 if problems else 200)

    @api.get(
        "/metrics",
        tags=["probes"],
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        service = state.get()
        body, content_type = await service.metrics.exposition(service)
        return Response(body, headers={"content-type": content_type})

    @api.post(
        f"{API}/analyze",
        tags=["analysis"],
        response_model=Analysis,
        responses=_errors(*COMMON, 413, 415, 503),
    )
    async def analyze(request: AnalyzeRequest) -> Response:
        """Analyse indicators and/or free text synchronously: the answer comes within
        ``deadline`` seconds, sources still waiting then marked 'pending'. At most
        API_MAX_INDICATORS indicators (items plus those found in the text) and API_MAX_BODY
        bytes; use /api/v1/jobs for more."""
        service = state.get()
        values, rejected = typed_values(_items(request.iocs), guard.scrub)
        if not values and not request.text:
            raise NoIndicators(rejected)
        count = len(values) + (len(service.extract(request.text).indicators) if request.text else 0)
        if count > settings.api_max_indicators:
            raise _TooMany(count, settings.api_max_indicators)
        analysis = await service.analyze(
            values, text=request.text, providers=request.providers, deadline=request.deadline
        )
        if rejected:
            analysis = analysis.model_copy(update={"rejected": [*rejected, *analysis.rejected]})
        return _json(analysis)

    @api.get(
        f"{API}/indicators/{{value:path}}",
        tags=["analysis"],
        response_model=Enrichment,
        responses=_errors(*COMMON, 503),
    )
    async def indicator(
        value: Annotated[
            str,
            Path(
                description="One indicator, raw or defanged; percent-encode a URL's '?' and '#'.",
                max_length=4096,
            ),
        ],
        request: Request,
        providers: Annotated[list[str] | None, Query(max_length=16)] = None,
        deadline: Annotated[float, Query(gt=0, le=120)] = 20.0,
    ) -> Response:
        """Look up one indicator: every source's answer and the verdict with its reasons."""
        _no_stray_query(request)
        return _json(await state.get().lookup(value, providers=providers, deadline=deadline))

    @api.post(
        f"{API}/jobs",
        tags=["jobs"],
        status_code=202,
        response_model=JobCreated,
        responses=_errors(*COMMON, 413, 415, 503),
    )
    async def submit(request: JobRequest) -> Response:
        """Start a batch job over indicators and/or text (up to API_MAX_JOB_BODY bytes); it
        runs on this instance, or with REDIS_URL on the job queue's workers, and any instance
        can report on it."""
        values, rejected = typed_values(_items(request.iocs), guard.scrub)
        if not values and not rejected and not request.text:  # as analyze answers it
            raise NoIndicators()
        if rejected:  # a job has no place to list them: refused up front
            raise InvalidIndicator(rejected[0].candidate, rejected[0].reason)
        job = await state.get().submit(
            [v if isinstance(v, str) else v.value for v in values],
            text=request.text,
            providers=request.providers,
        )
        created = JobCreated(id=job.id, state=job.state.value, links=links(job.id))
        return _json(created, 202, headers={"location": created.links.self})

    @api.get(
        f"{API}/jobs/{{job_id}}",
        tags=["jobs"],
        response_model=JobStatus,
        responses=_errors(*COMMON, 404, 503),
    )
    async def job(
        job_id: JobId,
        wait: Annotated[
            float,
            Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the job to finish first."),
        ] = 0,
    ) -> Response:
        """A job's state and progress: done of total indicators, verdict counts, message.
        With ``wait``, answers as soon as the job finishes or when the wait is over (a long
        poll)."""
        service = state.get()
        found = await (service.wait(job_id, timeout=wait) if wait else service.job(job_id))
        return _json(JobStatus.of(found))

    @api.post(
        f"{API}/jobs/{{job_id}}/cancel",
        tags=["jobs"],
        response_model=JobStatus,
        responses=_errors(*COMMON, 404, 503),
    )
    async def cancel(job_id: JobId) -> Response:
        """Stop a job (its results so far are kept); a finished job is left as it is."""
        return _json(JobStatus.of(await state.get().cancel(job_id)))

    @api.get(
        f"{API}/jobs/{{job_id}}/results",
        tags=["jobs"],
        responses={
            200: {
                "description": "The report; its content type follows the format",
                "content": {FORMATS[f].media_type: {} for f in formats},
            },
            **_errors(*COMMON, 404, 409, 503),
        },
    )
    async def results(
        job_id: JobId,
        format: FormatName = "json",
        partial: Annotated[
            bool, Query(description="Answer with the results so far while it runs.")
        ] = False,
    ) -> Response:
        """A job's results in one report format. A job still running answers 409 unless
        partial=true; the X-Job-State header always says the job's state."""
        if format not in FORMATS:
            raise _Refused(
                422, "unknown_format", f"unknown format; choose from {', '.join(formats)}"
            )
        service = state.get()
        current = await service.job(job_id)
        headers = {"x-job-state": current.state.value}
        if not current.finished and not partial:
            raise _Refused(
                409,
                "job_not_finished",
                f"the job is {current.state.value} ({current.done}/{current.total}); poll it, "
                "or add partial=true",
                headers,
            )
        body = await service.report(job_id, format)
        return Response(body, headers=headers, media_type=FORMATS[format].media_type)

    @api.get(
        f"{API}/providers",
        tags=["status"],
        response_model=ServiceStatus,
        responses=_errors(401, 429, 503),
    )
    async def providers() -> Response:
        """Sources configured, quota left per key (fingerprints only), circuit state, cache
        counts."""
        return _json(await state.get().status())


def _no_stray_query(request: Request) -> None:
    """Refuses the rest of a URL whose '?' was not percent-encoded (not a shorter lookup)."""
    stray = next((n for n in request.query_params if n not in INDICATOR_PARAMETERS), None)
    if stray is not None:
        shown = "".join(c if c.isprintable() else "?" for c in stray[:QUOTED])
        detail = f"unknown query parameter '{shown}': percent-encode '?' in the indicator as %3F"
        raise _Refused(422, "unknown_parameter", detail)


def _items(items: Sequence[str | IocItem]) -> list[IocItem]:
    """Every item as {value, type?}: a string is an item without a type."""
    return [IocItem(value=item) if isinstance(item, str) else item for item in items]


# --- errors -----------------------------------------------------------------------------------
class _Refused(Exception):
    """An answer refused with a status, a code and a sentence."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class _TooMany(_Refused):
    def __init__(self, count: int, cap: int) -> None:
        super().__init__(
            413,
            "too_many_indicators",
            f"{count} indicators is over the synchronous cap of {cap} (API_MAX_INDICATORS); "
            "submit a job instead",
        )


def _error(
    status: int,
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "…"
    return JSONResponse({"error": error, "detail": detail, **extra}, status, headers=headers)


_REQUEST_ERRORS: Final[dict[type[RequestError], tuple[int, str]]] = {
    UnknownJob: (404, "unknown_job"),
    UnknownProvider: (422, "unknown_provider"),
    NoIndicators: (422, "no_indicators"),
    InvalidIndicator: (422, "invalid_indicator"),
}


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(_Refused)
    async def refused(_: Request, exc: _Refused) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @api.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        status, code = next(
            (v for k, v in _REQUEST_ERRORS.items() if isinstance(exc, k)), (400, "bad_request")
        )
        if isinstance(exc, UnknownJob):  # its own message points at the CLI
            return _error(status, code, "no job has this id (or it has expired)")
        return _error(status, code, str(exc))

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only loc/msg/type: the input may be bytes (unserialisable) or huge.
        problems = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()[:20]
        ]
        if any(p["type"] == "json_invalid" for p in problems):
            return _error(400, "malformed_json", "the request body is not valid JSON")
        if problems and problems[0]["loc"] == ["body"] and not _json_sent(request):
            # FastAPI reads only JSON media types as JSON (a form post is not an API call).
            return _error(
                415, "unsupported_media_type", "send the body as Content-Type: application/json"
            )
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return _error(
            422,
            "invalid_request",
            f"{where}: {first['msg']}" if where else str(first["msg"]),
            problems=problems,
        )

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        phrase = http.HTTPStatus(exc.status_code).phrase
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        if exc.status_code == 400:  # FastAPI could not read the JSON (bad UTF-8, too deep)
            return _error(400, "malformed_json", "the request body is not valid JSON")
        if exc.status_code == 404:
            detail = "no such endpoint (see /docs)"
        elif exc.status_code == 405:
            detail = "this endpoint does not take that method"
        else:
            detail = exc.detail if isinstance(exc.detail, str) else phrase
        return _error(exc.status_code, code, detail, exc.headers)

    @api.exception_handler(ThreatIntelError)
    async def unavailable(_: Request, exc: ThreatIntelError) -> JSONResponse:
        # A store or backend failed (their messages name no key and no URL).
        logger.warning("request failed: %s: %s", type(exc).__name__, exc)
        return _error(503, "unavailable", str(exc), {"retry-after": "5"})

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette raises it on after this answer: uvicorn logs the traceback.
        return _error(500, "internal_error", "an unexpected error; the server log has the details")


def _json_sent(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _document_auth(api: FastAPI) -> None:
    """Name the bearer scheme in /openapi.json (the check itself is BearerAuth, in ASGI)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title,
                version=api.version,
                summary=api.summary,
                description=api.description,
                routes=api.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            for path in ("/health", "/ready"):
                for operation in schema["paths"].get(path, {}).values():
                    operation["security"] = []
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


__all__ = ["build_app"]
