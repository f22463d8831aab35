"""The engine: dedupe, pick providers, fan out, merge into explainable enrichments.

    async with Engine.from_settings() as engine:
        analysis = await engine.analyze(["hxxp://evil[.]com/x", "8.8.8.8"])
        analysis = await engine.analyze_text(pasted_report)
        async for enrichment in engine.stream(values, text=open("dump.txt"), deadline=30):
            ...  # each indicator once, as soon as all its sources are done

``stream`` is the centre: input is parsed once (``threatintel.intake``), at most ``window``
indicators are in flight, and each enrichment is yielded when complete, in completion order.
``analyze`` collects the stream (input order restored) and reduces attribution over it.

It knows nothing of the CLI, MCP or HTTP. Every provider failure becomes a status in the answer;
only ConfigError (bad settings) and RequestError (an unknown provider name, an API key given as
an indicator) escape. ``_lookup_source`` is the one place each provider call passes through, so
caching, coalescing, rate limiting, retries and circuit breaking wrap it without the providers
knowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from threatintel._keyguard import KEY_REASON, KeyGuard
from threatintel.attribution import Attributor
from threatintel.cache import Cache
from threatintel.cache.admin import saves_done
from threatintel.cache.batched import BatchedReads
from threatintel.clock import Clock, SystemClock
from threatintel.errors import CacheError, InvalidIndicator, UnknownProvider
from threatintel.intake import Intake, Text, Values
from threatintel.logs import log_analysis, quota_wait_logger
from threatintel.lookups import (
    CallHook,
    LookupEvent,
    LookupHook,
    ProviderQuota,
    ResultHook,
    decide,
    pending,
    unscored,
)
from threatintel.models import (
    Analysis,
    Enrichment,
    Indicator,
    SourceResult,
    SourceStatus,
    Verdict,
    utcnow,
)
from threatintel.pipeline import CacheRead, SourcePipeline, SourceStats
from threatintel.providers import Provider
from threatintel.quota import QuotaStore, QuotaWaitHook, Window
from threatintel.resilience import CircuitBreaker
from threatintel.scoring import score
from threatintel.settings import Settings
from threatintel.wiring import (
    build_cache,
    build_client,
    build_pipelines,
    build_providers,
    build_quota_store,
)

logger = logging.getLogger("threatintel.engine")

__all__ = ["DEFAULT_WINDOW", "Engine", "LookupEvent", "LookupHook", "ProviderQuota", "ResultHook"]


#: Indicators in flight at once in one stream (looked up, or answered and not yet taken by the
#: caller). It bounds memory; within it a slow provider never holds up the others, so it is
#: set well above what the fastest provider gets through while the slowest waits for quota.
#: 250 by measurement (bench/run.py figures on a loaded 2-core machine): a 10,000-indicator
#: cold run at MAX_WORKERS=200 peaked at 93-94 MB against 111-112 MB at 1,000, and neither
#: 1,000 cold indicators nor peak throughput got slower (27,100/min against 23,400/min).
DEFAULT_WINDOW = 250


class Engine:
    """Analyse indicators against every configured source. Use as an async context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        providers: Mapping[str, Provider] | None = None,
        include_raw: bool = False,
        on_lookup: LookupHook | None = None,
        clock: Clock | None = None,
        trust_env: bool = True,
        cache: Cache | None = None,
        quota_store: QuotaStore | None = None,
        windows: Mapping[str, Sequence[Window]] | None = None,
        on_quota_wait: QuotaWaitHook | None = None,
        window: int = DEFAULT_WINDOW,
        on_call: CallHook | None = None,
    ) -> None:
        self.settings = settings
        self.window = max(1, window)
        # Lookups that outlived their caller's deadline: they finish and fill the cache.
        self._background: set[asyncio.Task[SourceResult]] = set()
        # Our own keys never become indicators, whatever the input holds.
        self._keyguard = KeyGuard(settings)
        self.clock: Clock = clock if clock is not None else SystemClock()
        # The stores first, then the HTTP client: a REDIS_URL or CACHE_BACKEND they refuse
        # (ConfigError) then leaves no client behind to close, and each store opens its file or
        # connection on first use only, so one built before a later failure holds nothing.
        self._owns_quota_store = quota_store is None
        self.quota_store = (
            quota_store if quota_store is not None else build_quota_store(settings, self.clock)
        )
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else build_cache(settings, self.clock)
        # Lookups started together read the cache together: one query per loop turn.
        self._reads = BatchedReads(self.cache)
        self._owns_client = client is None
        self.client = client if client is not None else build_client(settings, trust_env=trust_env)
        self.providers: dict[str, Provider] = dict(
            providers
            if providers is not None
            # Always with the vendor's body: the cache keeps it so that --raw is answered from
            # the cache; the pipelines leave it out of results unless include_raw.
            else build_providers(settings, self.client, include_raw=True)
        )
        self._on_lookup = on_lookup
        # Every wait for quota logs a "rate limit" line, whoever else listens.
        on_quota_wait = quota_wait_logger(on_quota_wait)
        self.pipelines: dict[str, SourcePipeline] = build_pipelines(
            settings,
            self.providers,
            quota_store=self.quota_store,
            cache=self.cache,
            clock=self.clock,
            windows=windows,
            on_quota_wait=on_quota_wait,
            include_raw=include_raw,
            on_call=on_call,
        )

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return {name: pipeline.breaker for name, pipeline in self.pipelines.items()}

    @property
    def stats(self) -> dict[str, SourceStats]:
        """Counters per provider: cache hits and misses, coalesced calls, retries, 429s."""
        return {name: pipeline.stats for name, pipeline in self.pipelines.items()}

    async def quota(self, *, learn: bool = False) -> list[ProviderQuota]:
        """Remaining budget per provider and key (keys as fingerprints) and breaker state;
        ``learn`` first asks each vendor that can say so for its keys' limits (no quota spent)."""
        report = []
        for name, pipeline in self.pipelines.items():
            if learn and self.settings.api_keys(name):
                await pipeline.limiter.learn()
            breaker = pipeline.breaker
            report.append(
                ProviderQuota(
                    provider=name,
                    configured=bool(self.settings.api_keys(name))
                    or not self.providers[name].requires_key,
                    breaker=breaker.state,
                    breaker_retry_after=breaker.retry_after,
                    keys=await pipeline.limiter.usage(),
                    degraded=getattr(self.quota_store, "degraded", False),
                )
            )
        return report

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: object) -> Engine:
        return cls(settings if settings is not None else Settings.load(), **kwargs)  # type: ignore[arg-type]

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def drain(self) -> None:
        """Wait for the lookups that outlived a caller's deadline (they fill the cache)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def aclose(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._owns_client:
            await self.client.aclose()
        await saves_done()  # lookup counts saved in the background, before the cache closes
        if self._owns_cache:
            await self.cache.aclose()
        if self._owns_quota_store:
            await self.quota_store.aclose()

    # --- inputs ---------------------------------------------------------------------------
    def select(self, names: Sequence[str] | None) -> list[str]:
        """Validate a provider selection; None means all of them, in registry order.
        UnknownProvider names the first unknown one as the caller spelled it."""
        if not names:
            return list(self.providers)
        given = [n.strip() for n in names if n.strip()]
        unknown = [n for n in given if n.lower() not in self.providers]
        if unknown:
            raise UnknownProvider(unknown[0], list(self.providers))
        wanted = {n.lower() for n in given}
        return [n for n in self.providers if n in wanted]

    def intake(self, **options: Any) -> Intake:
        """A fresh Intake screening for this engine's keys (``Intake``'s options apply)."""
        return Intake(self._keyguard, **options)

    # --- the public verbs ------------------------------------------------------------------
    async def stream(
        self,
        values: Values = (),
        *,
        text: Text | None = None,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
        intake: Intake | None = None,
        allow_empty: bool = False,
    ) -> AsyncGenerator[Enrichment, None]:
        """Each distinct indicator of ``values`` then ``text``, enriched, as soon as done.

        ``values`` are raw, defanged or pasted lines, or parsed Indicators; ``text`` is free
        text, whole or in chunks (a file's lines). Enrichments come in completion order, at
        most ``window`` indicators in flight, with every spelling seen for the indicator.
        ``deadline`` (seconds) bounds the call: sources still waiting then are PENDING, and
        their lookups go on to fill the cache. Pass an ``intake`` to read the rejected
        candidates and counts afterwards. UnknownProvider before any lookup; NoIndicators (a
        RequestError listing what was skipped) once the input is read, if it held no
        indicator at all: this is the one place that decides it, for every door alike.
        ``allow_empty`` is for a caller feeding indicators it checked itself (a job's manifest).
        """
        streamed = self._stream(values, text, providers, deadline, intake, allow_empty)
        async for _, enrichment in streamed:
            yield enrichment

    async def analyze(
        self,
        values: Values = (),
        *,
        providers: Sequence[str] | None = None,
        text: Text | None = None,
        deadline: float | None = None,
        on_result: ResultHook | None = None,
        intake: Intake | None = None,
    ) -> Analysis:
        """Analyse explicit values (raw, defanged, or pasted lines) and free text, together:
        the stream collected, in input order, with its attribution. NoIndicators (a
        RequestError listing what was skipped) when the input held no indicator at all."""
        names = self.select(providers)
        started = utcnow()
        began = time.perf_counter()
        owned = intake is None
        intake = self.intake() if intake is None else intake
        attribution = Attributor()
        collected: list[tuple[int, Enrichment]] = []
        try:
            async for index, enrichment in self._stream(values, text, names, deadline, intake):
                if on_result is not None:
                    on_result(enrichment)
                attribution.add(enrichment)
                collected.append((index, enrichment))
        finally:
            if owned:
                intake.close()
        collected.sort(key=lambda item: item[0])
        enrichments = [enrichment for _, enrichment in collected]
        log_analysis("analysis", enrichments, time.perf_counter() - began)
        return Analysis(
            enrichments=enrichments,
            rejected=intake.rejected,
            providers=names,
            attribution=attribution.result(),
            started_at=started,
            finished_at=utcnow(),
        )

    async def analyze_text(
        self,
        text: Text,
        *,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
        on_result: ResultHook | None = None,
    ) -> Analysis:
        """Analyse every indicator found in free text (a report, an email, a log)."""
        return await self.analyze(
            (), text=text, providers=providers, deadline=deadline, on_result=on_result
        )

    async def enrich(
        self, indicator: Indicator, *, providers: Sequence[str] | None = None
    ) -> Enrichment:
        """Look up one parsed indicator; InvalidIndicator if it holds a configured API key."""
        label = self._keyguard.match(indicator.value)
        if label is not None:
            raise InvalidIndicator(label, KEY_REASON)
        return await self._enrich(indicator, self.select(providers), None)

    async def lookup(
        self,
        value: str,
        *,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
    ) -> Enrichment:
        """One value (raw, defanged or pasted) enriched, as ``stream`` would: its first
        indicator, within ``deadline`` seconds, keys screened. Without the stream's reader
        task, queue and window, which a server's single lookups would pay for each time.
        NoIndicators when the value holds no indicator."""
        names = self.select(providers)
        due = None if deadline is None else self.clock.time() + max(0.0, deadline)
        with self.intake() as intake:
            found = next(iter(intake.feed_value(value)), None)
            if found is None:
                found = next(iter(intake.finish()), None)
            if found is None:
                intake.require()  # NoIndicators, saying what was skipped
                raise AssertionError("Intake.require raises when nothing was found")
            indicator = found[0]
            assessed = await self._assess(indicator, names, due)
            inputs = intake.claim(indicator)
        sources, verdict = assessed.sources, assessed.verdict
        return Enrichment(indicator=indicator, inputs=inputs, sources=sources, verdict=verdict)

    # --- the stream ------------------------------------------------------------------------
    async def _stream(
        self,
        values: Values,
        text: Text | None,
        providers: Sequence[str] | None,
        deadline: float | None,
        intake: Intake | None,
        allow_empty: bool = False,
    ) -> AsyncIterator[tuple[int, Enrichment]]:
        """(input position, enrichment) in completion order; the window bounds what is held.

        A reader task parses the input and starts one task per new indicator, taking a window
        slot for each; a finished task hands its enrichment over through a queue, and the slot
        comes back once the caller has taken it, so a slow consumer slows the reading too.
        """
        names = self.select(providers)
        owned = intake is None
        intake = self.intake() if intake is None else intake
        due = None if deadline is None else self.clock.time() + max(0.0, deadline)
        slots = asyncio.Semaphore(self.window)
        done: asyncio.Queue[tuple[int, _Assessed] | _End | BaseException] = asyncio.Queue()
        tasks: set[asyncio.Task[_Assessed]] = set()

        def finished(index: int, task: asyncio.Task[_Assessed]) -> None:
            tasks.discard(task)
            if not task.cancelled():
                error = task.exception()
                done.put_nowait(error if error is not None else (index, task.result()))

        async def read() -> None:
            count = 0
            try:
                async for indicator in intake.read(values, text):
                    await slots.acquire()
                    task = asyncio.create_task(self._assess(indicator, names, due))
                    tasks.add(task)
                    task.add_done_callback(functools.partial(finished, count))
                    count += 1
                if not allow_empty:
                    intake.require()  # NoIndicators
            except Exception as exc:  # an input that fails to read ends the stream with it
                done.put_nowait(exc)
            else:
                done.put_nowait(_End(count))

        reader = asyncio.create_task(read())
        expected: int | None = None
        given = 0
        try:
            while expected is None or given < expected:
                item = await done.get()
                if isinstance(item, _End):
                    expected = item.count
                    continue
                if isinstance(item, BaseException):
                    raise item
                index, assessed = item
                given += 1
                slots.release()
                indicator = assessed.indicator
                # Built here, not in the task: the spellings are those seen until now.
                inputs = intake.claim(indicator)
                sources, verdict = assessed.sources, assessed.verdict
                enrichment = Enrichment(
                    indicator=indicator, inputs=inputs, sources=sources, verdict=verdict
                )
                yield index, enrichment
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(reader, *tasks, return_exceptions=True)
            if owned:
                intake.close()

    async def _enrich(
        self, indicator: Indicator, names: list[str], due: float | None
    ) -> Enrichment:
        assessed = await self._assess(indicator, names, due)
        return Enrichment(indicator=indicator, sources=assessed.sources, verdict=assessed.verdict)

    async def _assess(self, indicator: Indicator, names: list[str], due: float | None) -> _Assessed:
        """What an Enrichment holds but its spellings: every source's answer and the verdict."""
        results = await self._sources(indicator, names, due)
        sources = {result.source: result for result in results}
        try:
            verdict = score(indicator, sources, self.settings.scoring)
        except Exception as exc:  # a bug in scoring must not sink the batch: failures are data
            logger.error(
                "scoring an indicator (%s) failed unexpectedly (%s)",
                indicator.type.value,
                type(exc).__name__,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
            verdict = unscored()
        return _Assessed(indicator, sources, verdict)

    async def _sources(
        self, indicator: Indicator, names: list[str], due: float | None
    ) -> list[SourceResult]:
        """Every source's answer; with a deadline, PENDING for those still waiting at it."""
        decided = self._decide(indicator, names)
        asked = [name for name, result in decided.items() if result is None]
        if due is not None and due - self.clock.time() <= 0:
            # Read after the deadline: not started at all, so nothing outlives the call.
            return [decided[n] or pending(n, started=False) for n in names]
        reads = await self._read_cache(indicator, asked)
        if all(reads.get(n, _MISS)[1] is not None for n in asked):
            # The cache answered every source: no lookup waits for anything (a deadline
            # included), so each runs to its end in turn here, in the order gather would have
            # run them, without a task apiece (the dearest part of a warm run).
            found = {n: await self._source(n, indicator, reads[n]) for n in asked}
            return [decided[n] or found[n] for n in names]
        if due is None:
            answers = await asyncio.gather(
                *(self._source(n, indicator, reads.get(n)) for n in asked)
            )
            found = dict(zip(asked, answers, strict=True))
            return [decided[n] or found[n] for n in names]
        left = max(0.0, due - self.clock.time())
        tasks = {n: asyncio.create_task(self._source(n, indicator, reads.get(n))) for n in asked}
        try:
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout(left):
                    if tasks:  # none when every source was decided unasked (asyncio.wait refuses)
                        await asyncio.wait(tasks.values())
        except asyncio.CancelledError:
            for task in tasks.values():
                task.cancel()
            raise
        results = []
        for name in names:
            lookup = tasks.get(name)
            if lookup is None:
                results.append(decided[name] or pending(name, started=False))
            elif lookup.done():
                results.append(lookup.result())
            else:
                # The lookup goes on (its flight is shared and cached); we stop waiting.
                self._background.add(lookup)
                lookup.add_done_callback(self._background.discard)
                results.append(pending(name, started=True))
        return results

    async def _read_cache(self, indicator: Indicator, names: list[str]) -> dict[str, CacheRead]:
        """The cached answers of all of ``indicator``'s sources, read together with those of
        the other indicators started in the same loop turn (one SQLite query or Redis round
        trip for them all, not one per source); {} when the read fails, and then each lookup
        reads for itself. Misses (an unreadable entry is one) go on to each pipeline's single
        flight as before."""
        keys: dict[str, str] = {}
        for name in names:
            pipeline = self.pipelines[name]
            if pipeline.cache is not self.cache:
                continue  # not cached, or (never so far) a cache of its own: it reads itself
            keys[name] = pipeline.cache_key(indicator)
        if not keys:
            return {}
        try:
            entries = await self._reads.get_many(list(keys.values()))
        except CacheError as exc:  # a bare backend; the layered cache never raises
            logger.debug("cache read failed: %s", exc)
            return {}
        reads: dict[str, CacheRead] = {}
        for name, key in keys.items():
            entry = entries.get(key)
            reads[name] = (key, None if entry is None else self.pipelines[name].answer(entry))
        return reads

    def _decide(self, indicator: Indicator, names: list[str]) -> dict[str, SourceResult | None]:
        return decide(indicator, names, self.providers, self.settings)

    async def _source(
        self, name: str, indicator: Indicator, read: CacheRead | None = None
    ) -> SourceResult:
        """Ask one provider (``_decide`` said it must be asked); ``read``: its cache entry,
        when ``_read_cache`` already read it."""
        pipeline = self.pipelines[name]
        deadline: float | None = None
        while True:
            result = await self._lookup_source(pipeline, indicator, read)
            read = None  # a second try reads the cache afresh
            if result.status is not SourceStatus.CIRCUIT_OPEN:
                return result
            # Refused by an open breaker: if its probe is due within CIRCUIT_PROBE_WAIT, wait
            # for it and ask again, so a blip leaves no circuit_open.
            if deadline is None:
                deadline = self.clock.time() + self.settings.circuit_probe_wait
            if not await pipeline.breaker.wait(deadline - self.clock.time()):
                return result

    async def _lookup_source(
        self, pipeline: SourcePipeline, indicator: Indicator, read: CacheRead | None = None
    ) -> SourceResult:
        """The single seam every provider call passes through (cache, limits, retries...)."""
        started = time.perf_counter()
        try:
            result = await pipeline.lookup(indicator, read=read)
        except Exception as exc:  # a bug in a parser must not sink the batch
            logger.error(
                "%s lookup failed unexpectedly (%s)",
                pipeline.name,
                type(exc).__name__,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
            result = SourceResult(
                source=pipeline.name, status=SourceStatus.ERROR, message="internal error"
            )
        if self._on_lookup is not None:
            self._on_lookup(
                LookupEvent(
                    provider=pipeline.name,
                    indicator_type=indicator.type.value,
                    status=result.status,
                    duration=time.perf_counter() - started,
                    cached=result.cached,
                )
            )
        return result


@dataclass(frozen=True, slots=True)
class _Assessed:
    """An indicator looked up and scored, before the stream adds its spellings."""

    indicator: Indicator
    sources: dict[str, SourceResult]
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class _End:
    """The reader's last word: how many indicators it started."""

    count: int


#: What ``_sources`` takes for a source ``_read_cache`` did not read: no cached answer.
_MISS: CacheRead = ("", None)
