"""Logs: where they go, their level and format, and the lines troubleshooting greps for.

    logs.configure(settings, server=True)   # a server: INFO unless LOG_LEVEL says otherwise
    logs.configure(settings, server=False)  # the CLI: WARNING unless LOG_LEVEL was set

Every line goes to **stderr**: stdout carries the MCP stdio protocol and the CLI's output.
LOG_FORMAT=text writes ``LEVEL logger: message`` (a server adds the time), hidden characters
shown as escapes, since lines quote upstream and store errors (shown, never obeyed by a
terminal); LOG_FORMAT=json writes one object per line: time, level, logger, message and the
line's structured fields (an API_CALL line's provider, key, status, latency, cache...).

The lines the old system's recipes grep for:

- ``API_CALL``: one per request sent to a provider (pipeline.py, logger ``threatintel.api``),
  with the provider, the key's fingerprint (never the key), status, HTTP code (of a failure),
  latency and ``cache=miss``; INFO for an answer, WARNING for a 429 or a failure that is
  retried, ERROR for a failure that ends the lookup. The CLI silences them unless LOG_LEVEL
  is set: its output already shows each source's status. Cache hits log
  ``API_CALL ... cache=hit`` at DEBUG only: a warm run of 10,000 indicators would otherwise
  write 40,000 lines that say nothing went upstream.
- ``rate limit``: a 429 (on its API_CALL line) and each wait for quota (one per episode).
- ``completed in``: one line per analysis (Engine.analyze, so every door) and per job: INFO
  when a source was asked, failed or is pending, DEBUG when the cache answered it all.
- ``ERROR``: failures that end a lookup, and our own bugs.

Standard library only, and cheap to import: the CLI imports it at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from threatintel._visible import visible

if TYPE_CHECKING:
    from threatintel.models import Enrichment
    from threatintel.quota.limiter import QuotaWait, QuotaWaitHook
    from threatintel.settings import Settings

#: A server's text lines carry their time; the CLI's, shown as they happen, do not.
SERVER_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CLI_TEXT = "%(levelname)s %(name)s: %(message)s"
#: Libraries that install handlers of their own (fastmcp at import, a rich one with
#: propagate=False; uvicorn when its Config is built): configure() hands their lines to ours.
ADOPTED = ("fastmcp", "uvicorn", "uvicorn.access", "uvicorn.error", "docket")
#: Loggers whose lines repeat ours (httpx's "HTTP Request: ..." says what API_CALL says) or
#: say nothing an operator needs at INFO.
QUIETED = ("httpx", "httpcore")
#: Below WARNING even at DEBUG: docket polls its queue about 20 times a second, idle or not,
#: and logs each poll (4,818 of 5,203 lines in a DEBUG run).
NEVER_CHATTY = ("docket",)

#: The logger of the API_CALL lines (pipeline.py), and a level above any line's.
API_LOGGER = "threatintel.api"
SILENT = logging.CRITICAL + 1

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Attributes every LogRecord has: what is left in a record's __dict__ came through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class VisibleFormatter(logging.Formatter):
    """Log lines on stderr quote store and upstream errors: their text is shown, never obeyed."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record), lines=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the fields
    the line was given through ``extra``. ASCII only, so no character can act on a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_") and name not in line:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True, default=str)


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure() installs; told apart so a second call replaces it, and so
    handlers others put on the root (pytest's caplog) are left alone. With a ``scrub`` every
    line written loses the configured keys and token whoever logged it: fastmcp logs a tool
    call's arguments at DEBUG, uvicorn's access line the request path, and either may hold a
    key a caller pasted."""

    def __init__(self, stream: Any, scrub: Callable[[str], str] | None = None) -> None:
        super().__init__(stream)
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return self._scrub(line) if self._scrub is not None else line


def configure(settings: Settings | None = None, *, server: bool) -> None:
    """Send every log line to stderr at LOG_LEVEL in LOG_FORMAT.

    ``settings`` None reads LOG_LEVEL and LOG_FORMAT from the environment (the CLI before its
    settings are loaded). A server logs at INFO unless LOG_LEVEL says otherwise; the CLI
    stays at WARNING unless LOG_LEVEL was set, so a normal run is quiet. Call it after
    importing fastmcp and building uvicorn's Config: their handlers are then replaced by ours.
    Safe to call again (a later call replaces the earlier handler).
    """
    level, fmt, explicit = _choice(settings)
    if not server and not explicit:
        level = "WARNING"
    scrub = None
    if settings is not None:
        from threatintel._keyguard import KeyGuard

        scrub = KeyGuard(settings).scrub
    handler = _OurHandler(sys.stderr, scrub)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(VisibleFormatter(SERVER_TEXT if server else CLI_TEXT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # A CLI run shows failures in its output: its API_CALL lines (WARNING for a 429 or a
    # retry, ERROR for a lookup that failed) would only repeat them, unless asked for.
    quiet_calls = not server and not explicit
    logging.getLogger(API_LOGGER).setLevel(SILENT if quiet_calls else logging.NOTSET)
    for name in ADOPTED:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True
        # Their own level (fastmcp and uvicorn set INFO) would let their INFO lines through
        # a WARNING root: a propagated record meets the root's handler, not its level.
        adopted.setLevel(logging.NOTSET)
    for name in QUIETED:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
    for name in NEVER_CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


def configured() -> bool:
    """Whether configure() has installed its handler (the CLI's entry point does; a test
    driving the Typer app in process does not, and its settings leave logging alone)."""
    return any(isinstance(h, _OurHandler) for h in logging.getLogger().handlers)


def _choice(settings: Settings | None) -> tuple[str, str, bool]:
    """(level, format, whether LOG_LEVEL was set) from the settings or the environment."""
    if settings is not None:
        explicit = "log_level" in settings.model_fields_set
        return settings.log_level, settings.log_format, explicit
    raw = os.environ.get("LOG_LEVEL", "").strip().upper()
    fmt = os.environ.get("LOG_FORMAT", "").strip().lower()
    # A bad value is the settings' to report (ConfigError) once a command loads them.
    level = raw if raw in LEVELS else "INFO"
    return level, fmt if fmt in ("text", "json") else "text", raw in LEVELS


# --- the lines everyone greps for ---------------------------------------------------------
def log_completed(
    log: logging.Logger,
    what: str,
    indicators: int,
    verdicts: Mapping[str, int],
    seconds: float,
    *,
    level: int = logging.INFO,
    pending: int = 0,
) -> None:
    """The one ``... completed in X.XXs`` line of an analysis or a job; ``pending`` sources
    (still waiting at a deadline) are named, so a fast answer is not read as a whole one."""
    if not log.isEnabledFor(level):
        return
    counts = ", ".join(f"{label} {n}" for label, n in sorted(verdicts.items()) if n)
    if pending:
        counts = f"{counts or 'no verdicts'}; {pending} source answer{'s' if pending > 1 else ''}"
        counts += " pending"
    log.log(
        level,
        "%s: %d indicator%s completed in %.2fs (%s)",
        what,
        indicators,
        "" if indicators == 1 else "s",
        seconds,
        counts or "no verdicts",
        extra={
            "event": "completed",
            "indicators": indicators,
            "seconds": round(seconds, 3),
            "verdicts": dict(verdicts),
            "pending": pending,
        },
    )


#: Statuses of a source that was never asked (SourceStatus values; a StrEnum compares equal).
_UNASKED = frozenset({"not_applicable", "not_queried_private", "not_configured"})


def log_analysis(what: str, enrichments: Sequence[Enrichment], seconds: float) -> None:
    """An analysis's ``completed in`` line, with its count per verdict: at INFO when it asked
    a source or a source failed or is pending, at DEBUG when the cache answered all of it (a
    server answering a thousand cached lookups a second would otherwise log each one, as
    cache hits' API_CALL lines are DEBUG too)."""
    log = logging.getLogger("threatintel.engine")
    if not log.isEnabledFor(logging.INFO):  # (DEBUG enabled means INFO is too)
        return
    notable = False
    pending = 0
    for enrichment in enrichments:
        for result in enrichment.sources.values():
            if not result.cached and result.status not in _UNASKED:
                notable = True
                pending += result.status == "pending"
    level = logging.INFO if notable else logging.DEBUG
    if log.isEnabledFor(level):
        verdicts = Counter(e.verdict.label.value for e in enrichments)
        log_completed(log, what, verdicts.total(), verdicts, seconds, level=level, pending=pending)


def log_quota_wait(event: QuotaWait) -> None:
    """A lookup waits for quota: one "rate limit" line per wait episode and provider."""
    log = logging.getLogger("threatintel.quota")
    if event.limit is None:
        why = "the vendor refused the key with 429"
    else:
        setting = f" ({event.setting_name}={event.limit})" if event.setting_name else ""
        why = f"its {event.window} window is full{setting}"
    log.info(
        "rate limit: %s %s waits %.0fs: %s",
        event.provider,
        event.key_fingerprint,
        event.seconds,
        why,
        extra={
            "event": "rate_limit_wait",
            "provider": event.provider,
            "key": event.key_fingerprint,
            "seconds": round(event.seconds, 3),
            "window": event.window,
        },
    )


def quota_wait_logger(hook: QuotaWaitHook | None) -> QuotaWaitHook:
    """``hook`` (may be None) with every quota wait logged first."""

    def waited(event: QuotaWait) -> None:
        log_quota_wait(event)
        if hook is not None:
            hook(event)

    return waited


__all__ = ["JsonFormatter", "VisibleFormatter", "configure", "configured", "log_completed"]
