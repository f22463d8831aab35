"""The MCP door: every MCP import of the project lives in this module (fastmcp 4, mcp 2).

    mcp = build_mcp(lambda: service)          # tools, prompts, resources over one Service
    await serve_stdio(settings)               # `threatintel server` (desktop clients)
    app = http_app(mcp)                       # streamable HTTP, mounted at /mcp by http_api

Each tool is a few lines over the Service; what reaches the model is made safe in
``mcp_views`` (upstream text defanged and capped). Errors reach the client as one sentence:
a RequestError's own message (written to be shown), a ToolError we raise, or, for anything
else, fastmcp's masked "Error calling tool ..." (``mask_error_details``); the traceback stays in
the server's stderr log. No call waits past its ``deadline_seconds``: sources still waiting
for quota come back ``pending`` and the answer says how to get them.

Long analyses run as MCP background tasks (the ``io.modelcontextprotocol/tasks`` extension,
fastmcp-tasks on Docket): ``analyze_batch`` submits a Service job and follows it, so a task and
a batch job are the same job underneath. Importing fastmcp costs about 3 s and 80 MB, so nothing
but `threatintel server` imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal

# Before fastmcp is imported: no update check, no banner on stdout, our own logging.
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

import mcp_types
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ResourceError, ToolError
from fastmcp.exceptions import ValidationError as FastMCPValidationError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from fastmcp_tasks import TasksExtension
from mcp_types import TextContent, ToolAnnotations
from pydantic import Field

from threatintel import mcp_views as views
from threatintel._keyguard import KeyGuard
from threatintel._visible import one_line
from threatintel.errors import NoIndicators, RequestError
from threatintel.jobs.base import Job, JobStoreError, UnknownJob
from threatintel.mcp_views import MAX_VALUE
from threatintel.models import Analysis, Enrichment, Extraction
from threatintel.reports.audience import defang_text
from threatintel.service import Service, ServiceStatus
from threatintel.settings import Settings

if TYPE_CHECKING:
    from fastmcp.server.http import StarletteWithLifespan

ServiceSource = Callable[[], Service]

#: A tool answers within this many seconds unless told otherwise (deadline_seconds).
DEFAULT_DEADLINE = 25.0
MAX_DEADLINE = 120.0
#: Inputs one synchronous call takes; larger ones go to submit_batch.
MAX_IOCS = 1_000
MAX_TEXT_INPUT = 1_000_000
#: How long a background task follows its job (a client polls it meanwhile).
TASK_WAIT = 6 * 3600.0
#: The formats a finished job's report resource serves (reports.FORMATS minus the terminal one).
REPORT_FORMATS = ("json", "jsonl", "csv", "markdown", "html", "stix", "misp")

#: The level fastmcp logs a tool or resource error at when the caller asked for something wrong.
CALLER_MISTAKE = logging.WARNING

LOCAL = ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True)
ASKS_SOURCES = ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=True)
STARTS_JOB = ToolAnnotations(read_only_hint=False, open_world_hint=True, idempotent_hint=False)

INSTRUCTIONS = (
    "threatintel enriches indicators of compromise (IPs, domains, URLs, hashes) from "
    "VirusTotal, AlienVault OTX, AbuseIPDB and IPinfo with one cache and quota budget. "
    "extract_iocs finds indicators in text; analyze_iocs analyses up to 1,000 at once; "
    "lookup_ioc gives one indicator's full detail; submit_batch / batch_status / batch_results "
    "(or the task tool analyze_batch) handle larger inputs. Calls answer within "
    "deadline_seconds: sources still waiting for quota are reported pending. " + views.UNTRUSTED
)

Deadline = Annotated[
    float,
    Field(
        ge=1,
        le=MAX_DEADLINE,
        description=(
            f"Answer within this many seconds (default {DEFAULT_DEADLINE:g}): sources still "
            "waiting for quota then come back 'pending' and keep filling the cache."
        ),
    ),
]

#: A batch's input: as many indicators or as much text as the HTTP API's job body allows.
BatchIocs = Annotated[
    list[Annotated[str, Field(max_length=MAX_VALUE)]] | None,
    Field(max_length=100_000, description="Indicators, one per item (raw or defanged)."),
]
BatchText = Annotated[
    str | None,
    Field(max_length=20_000_000, description="Free text to find indicators in."),
]


@contextlib.contextmanager
def safe_errors() -> Iterator[None]:
    """The caller's mistakes as their own one-sentence message, logged below ERROR (`grep ERROR`
    finds failures and bugs, not a client's typo); the job store's failure as a sentence
    naming nothing; anything else masked by fastmcp."""
    try:
        yield
    except UnknownJob as exc:  # its own message points at a CLI command the model cannot run
        raise ToolError(
            f"no job {exc.job_id!r}: it never existed or has expired; submit_batch starts one",
            log_level=CALLER_MISTAKE,
        ) from exc
    except RequestError as exc:
        raise ToolError(one_line(str(exc), 500), log_level=CALLER_MISTAKE) from exc
    except JobStoreError as exc:
        raise ToolError("the job store is unavailable; try again later") from exc


class OneLineArgumentErrors(Middleware):
    """Arguments that fail validation come back as one sentence naming each argument and
    what is wrong with it, not pydantic's multi-line dump quoting the value given."""

    async def on_call_tool(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        try:
            return await call_next(context)
        except FastMCPValidationError as exc:
            raise ToolError(
                views.argument_problems(context.message.name, exc.__cause__),
                log_level=CALLER_MISTAKE,
            ) from None


class Progress:
    """Progress notifications from synchronous hooks: ``push`` queues, one task sends in order.

    async with Progress(ctx) as progress:
        await service.wait(job_id, on_progress=lambda job: progress.push(job.done, job.total))
    """

    def __init__(self, ctx: Context | None) -> None:
        self.ctx = ctx
        self._queue: asyncio.Queue[tuple[float, float | None, str] | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    def push(self, done: float, total: float | None, message: str) -> None:
        if self.ctx is not None:
            self._queue.put_nowait((done, total, message))

    async def _send(self) -> None:
        while (item := await self._queue.get()) is not None:
            if self.ctx is not None:
                await self.ctx.report_progress(*item)

    async def __aenter__(self) -> Progress:
        self._sender = asyncio.create_task(self._send())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._queue.put_nowait(None)
        if self._sender is not None:
            await self._sender


async def follow(service: Service, job_id: str, ctx: Context | None, timeout: float) -> Job:
    """Wait for the job up to ``timeout`` s, reporting its progress to the client."""
    seen = -1

    def changed(job: Job) -> None:
        nonlocal seen
        if job.done != seen:
            seen = job.done
            progress.push(job.done, job.total or None, views.job_line(job))

    async with Progress(ctx) as progress:
        return await service.wait(job_id, timeout=timeout, on_progress=changed)


def report_of(analysis: Analysis, fmt: str, settings: Settings) -> str:
    from threatintel.reports import render

    return render(analysis, fmt, internal_domains=settings.internal_domains)


def lookup_text(safe: Enrichment, deadline: float) -> str:
    """One indicator's answer as Markdown: verdict, reasons, each source's facts or failure."""
    verdict = safe.verdict
    lines = [
        f"# {defang_text(safe.indicator.value)} ({safe.indicator.type.value})",
        "",
        f"**{verdict.label.value}**: score {verdict.score}, confidence {verdict.confidence}",
        "",
        *[f"- {reason}" for reason in verdict.reasons],
        "",
    ]
    facts = views.indicator_row(safe).facts
    for name, result in safe.sources.items():
        if result.status.answered:
            lines.append(f"- {name}: {result.status.value}; {facts[name]}")
        elif result.status.failed or result.status.value == "pending":
            lines.append(f"- {name}: {views.failure_sentence(result)}")
        else:
            lines.append(f"- {name}: {result.status.value}")
    note = views.pending_note(views.pending_of([safe]), deadline)
    return "\n".join([*lines, *(["", note] if note else []), "", views.UNTRUSTED])


def build_mcp(service: ServiceSource, *, tasks_url: str = "memory://") -> FastMCP:
    """The MCP server over the Service ``service()`` returns when a tool runs. ``tasks_url``
    holds background tasks: memory:// for one process, REDIS_URL for several (``tasks_url_for``)."""
    mcp = FastMCP("threatintel", instructions=INSTRUCTIONS, mask_error_details=True)
    mcp.add_middleware(OneLineArgumentErrors())
    # Docket re-runs a task its worker has not finished within redelivery_timeout.
    mcp.add_extension(
        TasksExtension(
            url=tasks_url,
            name="threatintel",
            redelivery_timeout=timedelta(seconds=TASK_WAIT + 60),
        )
    )

    @mcp.tool(annotations=LOCAL, title="Extract indicators from text")
    def extract_iocs(
        text: Annotated[
            str,
            Field(max_length=MAX_TEXT_INPUT, description="Free text: an alert, an email, a report"),
        ],
    ) -> Extraction:
        """The indicators found in the text, refanged and typed, with the rejected candidates
        and why; nothing is looked up."""
        return service().extract(text)

    @mcp.tool(
        annotations=ASKS_SOURCES,
        title="Analyse indicators",
        output_schema=views.AnalysisView.model_json_schema(),
    )
    async def analyze_iocs(
        ioc_string: Annotated[
            str | None,
            Field(
                max_length=MAX_TEXT_INPUT,
                description="Indicators or free text to find them in (raw or defanged).",
            ),
        ] = None,
        iocs: Annotated[
            list[views.IocItem] | None,
            Field(max_length=MAX_IOCS, description="Indicators as [{value, type?}]."),
        ] = None,
        output_format: Annotated[
            Literal["markdown", "json", "html"], Field(description="The text report's format.")
        ] = "markdown",
        include_stix: Annotated[bool, Field(description="Add a STIX 2.1 bundle.")] = False,
        include_graph: Annotated[
            bool, Field(description="Add an indicator-source-finding graph.")
        ] = False,
        deadline_seconds: Deadline = DEFAULT_DEADLINE,
        ctx: Context | None = None,
    ) -> ToolResult:
        """Analyse up to 1,000 indicators (given as a list, or found in ioc_string) against
        every configured source: a verdict per indicator with score, confidence and reasons,
        each source's status, attribution to ATT&CK groups, and a report in output_format.
        Sources still waiting at the deadline come back pending."""
        svc = service()
        with safe_errors():
            values, rejected = views.typed_values(iocs or [], KeyGuard(svc.settings).scrub)
            if not values and not ioc_string:
                raise NoIndicators(rejected)
            found = len(svc.extract(ioc_string).indicators) if ioc_string else 0
            if len(values) + found > MAX_IOCS:  # refused before any quota is spent
                raise ToolError(
                    f"more than {MAX_IOCS:,} indicators: use submit_batch instead",
                    log_level=CALLER_MISTAKE,
                )
            done = 0

            def one_more(_: Enrichment) -> None:
                nonlocal done
                done += 1
                progress.push(done, None, f"{done} indicators analysed")

            async with Progress(ctx) as progress:
                analysis = await svc.analyze(
                    values, text=ioc_string, deadline=deadline_seconds, on_result=one_more
                )
        analysis = analysis.model_copy(update={"rejected": [*rejected, *analysis.rejected]})
        safe = views.model_safe(analysis)
        view = views.analysis_view(safe, deadline_seconds)
        if include_stix:
            view.stix = views.stix_bundle(report_of(analysis, "stix", svc.settings))
        if include_graph:
            view.graph = views.graph_of(safe)
        if output_format == "json":
            report = view.model_dump_json(indent=2, exclude_none=True)
        else:
            report = report_of(safe, output_format, svc.settings)
        report = views.capped(report, "submit_batch keeps every result for batch_results")
        notes = [n for n in (view.next_step, *view.failures, views.UNTRUSTED) if n]
        return ToolResult(
            content=[
                TextContent(type="text", text=report),
                TextContent(type="text", text="\n".join(notes)),
            ],
            structured_content=view,
        )

    @mcp.tool(
        annotations=ASKS_SOURCES,
        title="Look up one indicator",
        output_schema=Enrichment.model_json_schema(),
    )
    async def lookup_ioc(
        value: Annotated[
            str,
            Field(
                max_length=MAX_VALUE,
                description="One IP, domain, URL or hash (raw or defanged).",
            ),
        ],
        deadline_seconds: Deadline = DEFAULT_DEADLINE,
    ) -> ToolResult:
        """Everything known about one indicator: each source's full answer (detections,
        pulses, abuse reports, geolocation, allow-lists), the verdict with every reason, and
        one sentence per source that could not answer."""
        svc = service()
        with safe_errors():
            enrichment = await svc.lookup(value, deadline=deadline_seconds)
        safe = views.model_safe(enrichment)
        if not any(r.status.answered or r.status.value == "pending" for r in safe.sources.values()):
            failed = views.failures(safe)
            if failed:
                raise ToolError("; ".join(failed)[:1000])
        return ToolResult(content=lookup_text(safe, deadline_seconds), structured_content=safe)

    @mcp.tool(annotations=STARTS_JOB, title="Submit a batch job")
    async def submit_batch(
        iocs: BatchIocs = None,
        text: BatchText = None,
    ) -> views.JobView:
        """Start a batch job over many indicators and return its id at once; poll
        batch_status, then read batch_results. The same jobs as the CLI's `batch`."""
        with safe_errors():
            job = await service().submit(iocs or [], text=text, label="mcp")
        return views.job_view(job)

    @mcp.tool(annotations=LOCAL, title="A batch job's progress")
    async def batch_status(
        job_id: Annotated[str, Field(max_length=64, description="The id submit_batch returned.")],
        wait_seconds: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_DEADLINE,
                description="Wait up to this long for the job to finish, reporting progress.",
            ),
        ] = 0.0,
        ctx: Context | None = None,
    ) -> views.JobView:
        """A batch job's state (queued, running, done, failed, cancelled), indicators done of
        total, and what to do next; with wait_seconds, waits for it, reporting progress."""
        with safe_errors():
            svc = service()
            job = await follow(svc, job_id, ctx, wait_seconds)
        return views.job_view(job)

    @mcp.tool(
        annotations=LOCAL,
        title="A batch job's results",
        output_schema=views.JobView.model_json_schema(),
    )
    async def batch_results(
        job_id: Annotated[str, Field(max_length=64, description="The id submit_batch returned.")],
        format: Annotated[
            Literal["markdown", "json", "html", "csv"], Field(description="The report's format.")
        ] = "markdown",
    ) -> ToolResult:
        """A finished batch job's report (markdown, json, html or csv), upstream text defanged
        and capped; the job's counts as structured output."""
        svc = service()
        with safe_errors():
            job = await svc.job(job_id)
            if not job.finished:
                raise ToolError(
                    f"job {job_id} is {job.state.value} ({views.job_line(job)}); poll batch_status",
                    log_level=CALLER_MISTAKE,
                )
            analysis = views.model_safe(await svc.results(job_id))
        report = report_of(analysis, format, svc.settings)
        where = f"the resource threatintel://jobs/{job_id}/report.{format} has all of it"
        text = views.capped(report, where) + "\n\n" + views.UNTRUSTED
        return ToolResult(content=text, structured_content=views.job_view(job))

    @mcp.tool(
        annotations=STARTS_JOB,
        title="Analyse a batch (background task)",
        task=True,
    )
    async def analyze_batch(
        iocs: BatchIocs = None,
        text: BatchText = None,
        deadline_seconds: Deadline = DEFAULT_DEADLINE,
        ctx: Context | None = None,
    ) -> views.JobView:
        """Run a batch job to the end. A client that supports MCP tasks gets a task handle at
        once and polls it; any other gets the job's state within deadline_seconds (poll
        batch_status with the job_id if it is still running)."""
        svc = service()
        background = ctx is not None and ctx.is_background_task
        with safe_errors():
            job = await svc.submit(iocs or [], text=text, label="mcp-task")
            job = await follow(svc, job.id, ctx, TASK_WAIT if background else deadline_seconds)
        return views.job_view(job)

    @mcp.tool(annotations=LOCAL, title="Sources, quotas, breakers, cache")
    async def provider_status() -> ServiceStatus:
        """Which sources are configured, the quota left per key (key fingerprints only, never
        a key), each source's circuit breaker, and the cache's hit counts."""
        return await service().status()

    register_prompts(mcp)
    register_resources(mcp, service)
    return mcp


def register_prompts(mcp: FastMCP) -> None:
    @mcp.prompt(
        title="Triage an alert",
        description=(
            "Triage a security alert's text: extract, analyse and rate its indicators, "
            "then recommend next steps."
        ),
    )
    def triage_alert(
        alert_text: Annotated[
            str, Field(description="The alert's text (mail, SIEM event, ticket)")
        ],
    ) -> str:
        return views.TRIAGE_PROMPT.format(alert_text=alert_text)

    @mcp.prompt(
        title="Investigate an indicator",
        description=(
            "Investigate one indicator in depth: every source's answer, the verdict's "
            "reasons and pivots."
        ),
    )
    def investigate_indicator(
        indicator: Annotated[str, Field(description="One IP, domain, URL or hash")],
    ) -> str:
        return views.INVESTIGATE_PROMPT.format(indicator=defang_text(indicator))

    @mcp.prompt(
        title="Incident summary from a job",
        description="Write an incident summary from a finished batch job's report.",
    )
    def incident_summary(
        job_id: Annotated[str, Field(description="A finished batch job's id")],
    ) -> str:
        return views.SUMMARY_PROMPT.format(job_id=one_line(job_id, 64))


def register_resources(mcp: FastMCP, service: ServiceSource) -> None:
    @mcp.resource(
        "threatintel://providers/status",
        mime_type="application/json",
        description=(
            "Sources configured, quota left per key (fingerprints), circuit breakers, cache counts."
        ),
    )
    async def providers_status() -> str:
        return (await service().status()).model_dump_json(indent=2)

    @mcp.resource(
        "threatintel://jobs/{job_id}/report.{fmt}",
        description=(
            "A finished batch job's report; fmt is one of "
            + ", ".join(REPORT_FORMATS)
            + ". Upstream text is defanged and capped."
        ),
    )
    async def job_report(job_id: str, fmt: str) -> str:
        if fmt not in REPORT_FORMATS:
            raise ResourceError(
                f"unknown format {one_line(fmt, 20)!r}; choose from {', '.join(REPORT_FORMATS)}",
                log_level=CALLER_MISTAKE,
            )
        svc = service()
        try:
            job = await svc.job(job_id)
            if not job.finished:
                raise ResourceError(
                    f"job {job.id} is still {job.state.value}", log_level=CALLER_MISTAKE
                )
            analysis = views.model_safe(await svc.results(job_id))
        except RequestError as exc:
            raise ResourceError(one_line(str(exc), 300), log_level=CALLER_MISTAKE) from exc
        return report_of(analysis, fmt, svc.settings)


def tasks_url_for(settings: Settings) -> str:
    """Where background tasks live: REDIS_URL (shared by every instance) or memory://."""
    return settings.redis_url.get_secret_value() if settings.redis_url else "memory://"


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP over stdin/stdout until the client closes it (logs go to stderr)."""
    from threatintel import logs

    logs.configure(settings, server=True)  # stderr: stdout carries the protocol
    async with Service(settings) as service:
        await build_mcp(lambda: service).run_stdio_async(show_banner=False)


def http_app(mcp: FastMCP) -> StarletteWithLifespan:
    """Streamable HTTP at exactly /mcp, stateless so a load balancer may send each request
    of a session to any instance. Its ``lifespan`` must run inside the host app's."""
    return mcp.http_app(path="/mcp", stateless_http=True)
