"""What a provider is, and the one seam where HTTP failures become our errors.

A provider is endpoint data plus one parse function::

    class Example(HttpProvider):
        name = "example"
        supports = frozenset({IndicatorType.IPV4})

        def request(self, indicator, api_key):        # what to send
            return Call("GET", f"/ip/{indicator.value}", headers={"Key": api_key or ""})

        def parse(self, indicator, body):              # what it means
            return self.result(SourceStatus.OK, reputation=body["score"])

The engine calls ``await provider.lookup(indicator, api_key)``; it gets a ``SourceResult`` for
every answer (including "not found") and a ``ProviderError`` subclass for every failure. Nothing
above this module imports httpx's exceptions. Providers know nothing of caches, rate limits or
retries: the engine wraps those around ``lookup``.

Upstream bodies are attacker-influenced. Parsing runs on the event loop, where no deadline can
interrupt it, so its time is bounded by construction rather than by a worker thread: the body is
capped (MAX_BODY_BYTES, counted as it is decompressed), every pass over it is linear (``Kept``,
in ``providers.values``, deduplicates with sets) and every list kept is capped, so the slowest
parse is that of the largest body (about 0.3 s for 6 MB of OTX pulses, ``bench/bench_hostile.py``).
A thread would bound the wait but not the CPU, and it could not be stopped.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import logging
import math
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import httpx

from threatintel.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionFailed,
    ProviderError,
    ProviderTimeout,
    QuotaExhausted,
    RateLimited,
    UpstreamError,
)
from threatintel.models import Indicator, IndicatorType, SourceResult, SourceStatus
from threatintel.providers.facts import Limits, LimitsHook, QuotaWindow, Role

if TYPE_CHECKING:
    from threatintel.findings import Evaluator

logger = logging.getLogger("threatintel.providers")

#: Bodies larger than this are refused: no vendor answer we use comes near it, and a hostile
#: or broken upstream must not make us hold gigabytes.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: The longest a Retry-After is believed: no vendor we use documents a window longer than a day
#: (VirusTotal's and AbuseIPDB's daily quotas); longer windows are the limiter's own knowledge.
MAX_RETRY_AFTER = 24 * 3600.0
#: A vendor body kept for ``--raw`` and the cache: deeper or larger bodies are replaced by a
#: note. JSON serialisers recurse, so a 900-deep body that parsed would break them later.
MAX_RAW_DEPTH = 64
MAX_RAW_BYTES = 2 * 1024 * 1024
#: The content codings we ask for and decode ourselves, chunk by chunk, under MAX_BODY_BYTES.
ACCEPT_ENCODING = "gzip, deflate"
_DECODE_CHUNK = 64 * 1024

Json = dict[str, Any]


@runtime_checkable
class Provider(Protocol):
    """One threat-intel source. ``lookup`` returns an answer or raises a ProviderError."""

    name: ClassVar[str]
    title: ClassVar[str]
    supports: ClassVar[frozenset[IndicatorType]]
    requires_key: ClassVar[bool]

    @property
    def cache_scope(self) -> str:
        """Everything besides the indicator that decides the answer (endpoint, parameters):
        the cache keeps answers apart by it."""
        ...

    async def lookup(self, indicator: Indicator, api_key: str | None) -> SourceResult: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request, as data. ``path`` is appended to the provider's base URL as given."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def map_transport_errors(provider: str, title: str) -> Iterator[None]:
    """Translate httpx transport failures into ours; the message never repeats the URL.

    A failure before the request could be written (the name did not resolve, the connection was
    refused or never completed, no pooled connection came free, the proxy refused the tunnel)
    is marked ``sent=False``: the vendor cannot have counted it. Anything later (a timeout
    waiting for the answer, a reset mid-answer) may have been counted and stays ``sent``.
    """
    try:
        yield
    except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ProviderTimeout(provider, f"{title}: no connection in time", sent=False) from exc
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(provider, f"{title} did not answer in time") from exc
    except (httpx.ConnectError, httpx.ProxyError) as exc:
        raise ConnectionFailed(provider, f"{title}: connection failed", sent=False) from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise ConnectionFailed(provider, f"{title}: connection failed") from exc
    except httpx.TransportError as exc:  # proxy errors, unsupported protocol, ...
        raise ConnectionFailed(provider, f"{title}: transport error") from exc


# cache_scope reads it for every lookup; parsing the URL each time was a fifth of the CPU of a
# run answered from the cache (bench/run.py, warm SQLite). A handful of base URLs per process.
@functools.lru_cache(maxsize=64)
def endpoint_identity(base_url: str) -> str:
    """A base URL as the one endpoint it names: scheme and host in lower case, the default port
    and trailing slashes dropped (``HTTPS://Example.com:443/api/`` → ``https://example.com/api``)."""
    url = httpx.URL(base_url.strip())
    host = url.raw_host.decode("ascii")  # lower case, IDNA-encoded
    if ":" in host:
        host = f"[{host}]"
    port = "" if url.port in (None, _DEFAULT_PORTS.get(url.scheme)) else f":{url.port}"
    path = url.raw_path.decode("ascii").partition("?")[0].rstrip("/")
    return f"{url.scheme}://{host}{port}{path}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds, from delta-seconds or an HTTP date (RFC 9110 §10.2.3), clamped
    to ``[0, MAX_RETRY_AFTER]``; None for anything else (``inf``, ``nan``, ``-5``, garbage).

    This is the only reader of the header: a hostile ``1e300`` must not become a block that
    never ends, and ``3e9`` must not silence a key for 95 years.
    """
    if not value or len(value) > 64:
        return None
    value = value.strip()
    seconds: float | None = None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        # A date in the past means "now" (RFC 9110); a negative delta-seconds is invalid.
        seconds = max(0.0, seconds)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def read_json(content: bytes) -> Any:
    """JSON from an upstream body, or ValueError for anything unreadable (nesting so deep that
    the decoder gives up included). Never recursion in our code: safe for error bodies too."""
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("malformed JSON") from exc


def error_json(response: httpx.Response) -> Json | None:
    """An error body as a JSON object, or None: the vendors' error-code readers never raise."""
    try:
        body = read_json(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def json_depth(value: Any, *, stop: int) -> int:
    """How deep ``value`` nests, counted without recursion; stops looking past ``stop``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > stop:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)
    return deepest


def kept_raw(body: Json, size: int) -> Json:
    """The body as kept for ``--raw``, or a note saying why it was left out."""
    if size > MAX_RAW_BYTES:
        return {"omitted": f"the body ({size} bytes) is larger than {MAX_RAW_BYTES} bytes"}
    if json_depth(body, stop=MAX_RAW_DEPTH) > MAX_RAW_DEPTH:
        return {"omitted": f"the body nests deeper than {MAX_RAW_DEPTH} levels"}
    return body


class HttpProvider:
    """Shared plumbing for the HTTP providers: send, map errors, decode, parse; and the vendor's
    facts, read through the registry (``providers.PROVIDERS``) by everything else.

    ``title`` names the vendor in messages and reports ("AlienVault OTX"), ``display`` in
    verdict reasons ("OTX"), ``abbrev`` in the terminal's sources line ("VT"); the last two
    default to the one before. ``key_setting`` is the Settings field holding its keys
    (``<name>_api_key`` by default), ``windows`` the quota windows it enforces with the setting
    holding each limit (``anonymous_windows`` without a key, when they differ). ``evaluator``
    turns its answer into scoring evidence (``findings.Evaluator``); ``role`` is "evidence"
    (weighed for the verdict) or "context" (who runs the address: benign signals only), and
    ``default_weight`` applies when ScoringPolicy has no ``<name>_weight``.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    display: ClassVar[str]
    abbrev: ClassVar[str]
    supports: ClassVar[frozenset[IndicatorType]]
    requires_key: ClassVar[bool] = True
    key_setting: ClassVar[str]
    default_base_url: ClassVar[str] = ""
    windows: ClassVar[tuple[QuotaWindow, ...]] = ()
    anonymous_windows: ClassVar[tuple[QuotaWindow, ...]] = ()
    evaluator: ClassVar[Evaluator | None] = None
    role: ClassVar[Role] = "evidence"
    default_weight: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return  # an abstract intermediate class
        # Each name falls back to the one before: title → display → abbrev.
        if "title" not in cls.__dict__:
            cls.title = name
        if "display" not in cls.__dict__:
            cls.display = cls.title
        if "abbrev" not in cls.__dict__:
            cls.abbrev = cls.display
        if "key_setting" not in cls.__dict__:
            cls.key_setting = f"{name}_api_key"

    @classmethod
    def options(cls, settings: Any) -> dict[str, Any]:
        """Constructor arguments this provider takes from the settings (beyond the common ones)."""
        return {}

    @classmethod
    def quota_windows(cls, *, keyed: bool) -> tuple[QuotaWindow, ...]:
        """The windows a key (or, ``keyed=False``, anonymous use) is held to."""
        return cls.windows if keyed or not cls.anonymous_windows else cls.anonymous_windows

    #: Set by the engine: told the limits an answer states (see ``limits``).
    on_limits: LimitsHook | None = None

    async def account_limits(self, api_key: str) -> Limits | None:
        """The key's limits as the vendor's account endpoint states them, or None when the
        vendor has no such endpoint. Must not spend lookup quota; never raises for an answer
        it cannot use (None)."""
        return None

    def limits(self, response: httpx.Response) -> Limits | None:
        """The key's limits as an answer's headers state them, or None (the default)."""
        return None

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        timeout: float = 10.0,
        include_raw: bool = False,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.include_raw = include_raw

    # --- what subclasses provide ------------------------------------------------------------
    def request(self, indicator: Indicator, api_key: str | None) -> Call:
        raise NotImplementedError

    def parse(self, indicator: Indicator, body: Json) -> SourceResult:
        raise NotImplementedError

    def link(self, indicator: Indicator) -> str | None:
        """The vendor's web page for the indicator, for analysts to click through."""
        return None

    @property
    def cache_scope(self) -> str:
        """The endpoint asked, so an answer from a simulator or a mirror is never served as the
        vendor's; providers whose requests carry parameters that change the answer add them."""
        return endpoint_identity(self.base_url)

    def check(self, indicator: Indicator, response: httpx.Response) -> SourceResult | None:
        """Map a non-2xx answer: return a result (e.g. not found) or raise a ProviderError.

        The default follows plain HTTP semantics; providers override it to read their
        vendor's error codes first and fall back to this.
        """
        status = response.status_code
        if status == 404:
            return self.result(
                SourceStatus.NOT_FOUND, indicator, message=f"unknown to {self.title}"
            )
        if status in (401, 403):
            raise AuthenticationFailed(
                self.name, f"{self.title} rejected the API key (HTTP {status})", status_code=status
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise RateLimited(
                self.name, f"{self.title} is rate limiting requests", retry_after=retry_after
            )
        if status in (400, 422):
            raise BadRequest(
                self.name, f"{self.title} refused the request (HTTP {status})", status_code=status
            )
        raise UpstreamError(self.name, f"{self.title} answered HTTP {status}", status_code=status)

    # --- the seam ---------------------------------------------------------------------------
    async def lookup(self, indicator: Indicator, api_key: str | None) -> SourceResult:
        call = self.request(indicator, api_key)
        started = time.perf_counter()
        with map_transport_errors(self.name, self.title):
            response = await self._send(call)
        if self.on_limits is not None:
            stated = self.limits(response)
            if stated:
                self.on_limits(api_key, stated)
        elapsed_ms = (time.perf_counter() - started) * 1000
        # Log the path only: headers carry keys, and the query never does by construction.
        logger.debug(
            "%s %s %s -> %s in %.0f ms",
            self.name,
            call.method,
            call.path,
            response.status_code,
            elapsed_ms,
        )
        try:
            if not 200 <= response.status_code < 300:
                answered = self.check(indicator, response)
                if answered is not None:
                    return answered
                raise UpstreamError(self.name, f"{self.title} answered HTTP {response.status_code}")
            body = self.decode(response)
            result = self.parse(indicator, body)
        except ProviderError:
            raise
        except Exception as exc:
            # A body that is JSON but not the shape we know, or one that trips anything in a
            # reader of answers or errors: this source's fault, never a crash of the batch.
            raise UpstreamError(
                self.name, f"{self.title} sent an answer we could not read"
            ) from exc
        if self.include_raw:
            result = result.model_copy(update={"raw": kept_raw(body, len(response.content))})
        return result

    async def _send(self, call: Call) -> httpx.Response:
        """Send and read the body with a byte cap, so a hostile answer cannot exhaust memory."""
        request = self.client.build_request(
            call.method,
            self.base_url + call.path,
            params=dict(call.params) or None,
            headers={"accept-encoding": ACCEPT_ENCODING, **call.headers},
            timeout=self.timeout,
        )
        response = await self.client.send(request, stream=True)
        try:
            content = await self._read_capped(response)
        finally:
            await response.aclose()
        # A plain, fully read response for the parsers; the body is already decoded.
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code, headers=headers, content=content, request=request
        )

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """The decoded body, decompressed as it arrives and never past MAX_BODY_BYTES.

        httpx's own decoders inflate a whole network chunk at once (64 KiB of a gzip bomb is
        64 MiB), so the raw bytes are read and inflated here with ``max_length``.
        """
        oversized = UpstreamError(self.name, f"{self.title} sent an oversized answer")
        if response.is_stream_consumed:
            # An in-memory transport (httpx.MockTransport) has read and decoded it already.
            if len(response.content) > MAX_BODY_BYTES:
                raise oversized
            return response.content
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        inflater: Any = None
        if coding in ("gzip", "x-gzip"):
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            inflater = _Deflate()
        elif coding not in ("", "identity"):
            raise UpstreamError(self.name, f"{self.title} sent an unsupported content coding")
        content = bytearray()
        try:
            async for chunk in response.aiter_raw():
                if inflater is None:
                    content += chunk
                else:
                    data = chunk
                    while data:
                        content += inflater.decompress(data, _DECODE_CHUNK)
                        if len(content) > MAX_BODY_BYTES:
                            raise oversized
                        data = inflater.unconsumed_tail
                if len(content) > MAX_BODY_BYTES:
                    raise oversized
            if inflater is not None:
                content += inflater.flush()
        except zlib.error as exc:
            raise UpstreamError(self.name, f"{self.title} sent a corrupt compressed body") from exc
        if len(content) > MAX_BODY_BYTES:
            raise oversized
        return bytes(content)

    def decode(self, response: httpx.Response) -> Json:
        try:
            body = read_json(response.content)
        except ValueError as exc:
            raise UpstreamError(self.name, f"{self.title} sent malformed JSON") from exc
        if not isinstance(body, dict):
            raise UpstreamError(self.name, f"{self.title} sent an unexpected JSON shape")
        return body

    def result(self, status: SourceStatus, indicator: Indicator, **fields: Any) -> SourceResult:
        fields.setdefault("link", self.link(indicator))
        return SourceResult(source=self.name, status=status, **fields)


class _Deflate:
    """HTTP "deflate" is zlib-wrapped by the RFC, raw by some servers: decide on first bytes."""

    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner: Any = None

    @property
    def unconsumed_tail(self) -> bytes:
        return bytes(self._inner.unconsumed_tail) if self._inner is not None else b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            # RFC 1950 header: compression method 8, and the first two bytes a multiple of 31.
            wrapped = (
                len(data) >= 2 and (data[0] & 0x0F) == 8 and int.from_bytes(data[:2]) % 31 == 0
            )
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return bytes(self._inner.decompress(data, max_length))

    def flush(self) -> bytes:
        return bytes(self._inner.flush()) if self._inner is not None else b""


def quota_error(
    provider: str,
    message: str,
    *,
    retry_after: float | None,
    reset_at: datetime | None,
    long_window: bool,
) -> RateLimited:
    """A 429 becomes QuotaExhausted when a day/month window is spent, else RateLimited."""
    cls = QuotaExhausted if long_window else RateLimited
    return cls(provider, message, retry_after=retry_after, reset_at=reset_at)
