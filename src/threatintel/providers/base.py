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
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

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

logger = logging.getLogger("threatintel.providers")

#: Bodies larger than this are refused: no vendor answer we use comes near it, and a hostile
#: or broken upstream must not make us hold gigabytes.
MAX_BODY_BYTES = 8 * 1024 * 1024

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
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def from_unix(value: Any) -> datetime | None:
    """VirusTotal's integer Unix seconds → aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def from_iso(value: Any) -> datetime | None:
    """ISO-8601 → aware UTC datetime; OTX's naive strings are UTC (contracts §2.5.8)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


MAX_ASN = 2**32 - 1


def as_asn(value: Any) -> int | None:
    """An AS number (an int, or ASCII digits with or without "AS") in 0..2³²-1, else None."""
    if isinstance(value, str):
        digits = value[2:] if value[:2].upper() == "AS" else value
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 10 else None
    number = as_int(value)
    return number if number is not None and 0 <= number <= MAX_ASN else None


def as_country(value: Any) -> str | None:
    """An ISO 3166-1 alpha-2 code ("US"), else None: nothing else is shown as a country."""
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


def as_str(value: Any, *, limit: int = 200) -> str | None:
    """A short, single-line string from an upstream value (attacker-influenced text)."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def str_list(values: Any, *, limit: int = 50) -> list[str]:
    """Unique short strings from a list, in order; anything that is not a string is skipped."""
    out: list[str] = []
    if not isinstance(values, list):
        return out
    for value in values:
        text = as_str(value)
        if text and text not in out:
            out.append(text)
            if len(out) >= limit:
                break
    return out


class HttpProvider:
    """Shared plumbing for the four HTTP providers: send, map errors, decode, parse."""

    name: ClassVar[str]
    title: ClassVar[str]
    supports: ClassVar[frozenset[IndicatorType]]
    requires_key: ClassVar[bool] = True

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
        if not 200 <= response.status_code < 300:
            answered = self.check(indicator, response)
            if answered is not None:
                return answered
            raise UpstreamError(self.name, f"{self.title} answered HTTP {response.status_code}")
        body = self.decode(response)
        try:
            result = self.parse(indicator, body)
        except ProviderError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A body that is JSON but not the shape we know: an upstream fault, never a crash.
            raise UpstreamError(
                self.name, f"{self.title} sent an answer we could not read"
            ) from exc
        if self.include_raw:
            result = result.model_copy(update={"raw": body})
        return result

    async def _send(self, call: Call) -> httpx.Response:
        """Send and read the body with a byte cap, so a hostile answer cannot exhaust memory."""
        request = self.client.build_request(
            call.method,
            self.base_url + call.path,
            params=dict(call.params) or None,
            headers=dict(call.headers),
            timeout=self.timeout,
        )
        response = await self.client.send(request, stream=True)
        try:
            content = bytearray()
            # Decoded bytes: the cap also stops a small gzip bomb from growing in memory.
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_BODY_BYTES:
                    raise UpstreamError(self.name, f"{self.title} sent an oversized answer")
        finally:
            await response.aclose()
        # A plain, fully read response for the parsers; the body is already decoded.
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(content), request=request
        )

    def decode(self, response: httpx.Response) -> Json:
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: absurdly nested JSON ("[[[[..."): unreadable, not a crash.
            raise UpstreamError(self.name, f"{self.title} sent malformed JSON") from exc
        if not isinstance(body, dict):
            raise UpstreamError(self.name, f"{self.title} sent an unexpected JSON shape")
        return body

    def result(self, status: SourceStatus, indicator: Indicator, **fields: Any) -> SourceResult:
        fields.setdefault("link", self.link(indicator))
        return SourceResult(source=self.name, status=status, **fields)


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
