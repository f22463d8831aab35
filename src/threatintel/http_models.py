"""The HTTP API's request and response bodies (pydantic), so /openapi.json describes them all.

The answers that are the engine's own models (Analysis, Enrichment, ServiceStatus) are
returned as they are; this module holds only what is particular to HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from threatintel.jobs.base import Job
from threatintel.mcp_views import MAX_VALUE, IocItem

#: A synchronous analysis answers within this many seconds unless the request says otherwise;
#: sources still waiting then are reported ``pending`` (a job gets them later).
DEFAULT_DEADLINE: Final = 20.0
MAX_DEADLINE: Final = 120.0
MAX_PROVIDERS: Final = 16

API: Final = "/api/v1"


#: An indicator: a string, or {value, type?} checked as MCP's analyze_iocs checks it ("ip" and
#: "hash" accepted as the old system's type names).
Ioc = Annotated[str, Field(min_length=1, max_length=MAX_VALUE)] | IocItem
ProviderName = Annotated[str, Field(min_length=1, max_length=64)]


class JobRequest(BaseModel):
    """Indicators and/or free text to analyse."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"iocs": ["8.8.8.8", "hxxp://evil[.]example/x", {"value": "evil.example"}]},
                {"text": "Alert: beacon to 203.0.113.7 and evil[.]example"},
            ]
        },
    )

    iocs: list[Ioc] = Field(
        default_factory=list,
        description="Indicators: strings (raw or defanged), or {value, type} objects.",
    )
    text: str | None = Field(
        default=None, description="Free text; every indicator found in it is analysed."
    )
    providers: list[ProviderName] | None = Field(
        default=None,
        max_length=MAX_PROVIDERS,
        description="Only these sources (default: every configured one).",
    )


class AnalyzeRequest(JobRequest):
    """A synchronous analysis: answered within ``deadline`` seconds."""

    deadline: float = Field(
        default=DEFAULT_DEADLINE,
        gt=0,
        le=MAX_DEADLINE,
        description="Seconds to wait for the sources; those still waiting are 'pending'.",
    )


class Problem(BaseModel):
    """One validation problem: where and what (never the rejected input itself)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str = Field(description="A stable code: not_found, invalid_request, unauthorized…")
    detail: str = Field(description="One sentence for a human.")
    problems: list[Problem] | None = Field(
        default=None, description="For invalid_request: each problem found."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    problems: list[str] = Field(default_factory=list)


class JobLinks(BaseModel):
    self: str
    results: str
    cancel: str


class JobCreated(BaseModel):
    """A job accepted: poll ``links.self``, then fetch ``links.results``."""

    id: str
    state: str
    links: JobLinks


class JobStatus(BaseModel):
    """A job's state and counters."""

    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    finished: bool
    input: str
    providers: list[str] = Field(description="The sources asked for; empty = every source.")
    done: int = Field(description="Indicators answered.")
    total: int = Field(description="Indicators in the job (final once input_complete).")
    input_complete: bool = Field(description="The whole input has been read.")
    progress: float = Field(ge=0, le=1, description="done / total; 1 once done.")
    verdicts: dict[str, int] = Field(description="Answered indicators per verdict.")
    rejected: int = Field(description="Candidates skipped as not indicators.")
    gaps: int = Field(description="(indicator, source) pairs still to ask.")
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    links: JobLinks

    @classmethod
    def of(cls, job: Job) -> JobStatus:
        if job.state == "done":
            progress = 1.0
        else:
            progress = min(1.0, job.done / job.total) if job.total else 0.0
        return cls(
            id=job.id,
            state=job.state.value,
            finished=job.finished,
            input=job.input,
            providers=list(job.providers),
            done=job.done,
            total=job.total,
            input_complete=job.sealed,
            progress=round(progress, 4),
            verdicts=dict(job.verdicts),
            rejected=job.rejected,
            gaps=job.gaps,
            message=job.message,
            created_at=datetime.fromtimestamp(job.created_at, UTC),
            updated_at=datetime.fromtimestamp(job.updated_at, UTC),
            links=links(job.id),
        )


def links(job_id: str) -> JobLinks:
    base = f"{API}/jobs/{job_id}"
    return JobLinks(self=base, results=f"{base}/results", cancel=f"{base}/cancel")


__all__ = [
    "API",
    "DEFAULT_DEADLINE",
    "MAX_DEADLINE",
    "AnalyzeRequest",
    "ErrorBody",
    "Health",
    "JobCreated",
    "JobLinks",
    "JobRequest",
    "JobStatus",
    "Problem",
    "Readiness",
    "links",
]
