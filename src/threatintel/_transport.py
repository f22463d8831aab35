"""httpx's interface over aiohttp's connection pool: the engine's HTTP client.

    client = AiohttpClient(timeout=30, limits=httpx.Limits(max_connections=50), trust_env=True)
    client = HttpcoreClient(...)  # httpx's own pool, for a handful of lookups (wiring.SMALL_RUN)

Why not httpx's own transport: httpcore 1.0's pool walks every connection for every queued
request and every idle connection at each request's start and end, so its CPU per request grows
with connections x waiters. Measured against the simulator (bench/results/transport.md), a
1,000-indicator run with 200 workers spent ~15 ms of CPU per upstream request and ran at 1,400
indicators a minute; aiohttp's pool (idle connections kept per host) spends under 1 ms and
reaches the upstream's pace. The providers still see httpx only: requests, responses, timeouts
per request, HTTPS_PROXY/NO_PROXY (httpx picks the proxy; one transport per proxy) and
SSL_CERT_FILE (httpx builds the TLS context), and aiohttp's failures become the httpx exceptions
that ``providers.base.map_transport_errors`` translates. Why not the ``httpx-aiohttp`` package:
it maps a reset mid-answer to ``ConnectTimeout``, which our quota refunds read as "never sent".
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp

CHUNK = 64 * 1024


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """aiohttp's failures as the httpx exceptions they correspond to (most specific first).

    Whether the request may have reached the vendor decides the class: a failure to connect
    or to get a pooled connection (ConnectTimeout, ConnectError, ProxyError) was never sent;
    a timeout or a break while reading the answer may have been counted.
    """
    import aiohttp  # loaded by the transport's first request already: a dictionary look-up

    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc)) from exc
    except aiohttp.SocketTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc)) from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc)) from exc
    except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as exc:
        raise httpx.ProxyError(str(exc)) from exc
    except aiohttp.ClientConnectorError as exc:  # DNS, refused, TLS verification
        raise httpx.ConnectError(str(exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except aiohttp.ClientResponseError as exc:  # a malformed status line or header block
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx.UnsupportedProtocol(str(exc)) from exc
    except aiohttp.ClientError as exc:  # resets and other socket errors while reading
        raise httpx.ReadError(str(exc)) from exc
    except TimeoutError as exc:  # aiohttp's own timers; a caller's deadline cancels instead
        raise httpx.ReadTimeout(str(exc)) from exc


class _Body(httpx.AsyncByteStream):
    """The raw (still encoded) body; the connection goes back to the pool once it is all read."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:  # abandoned mid-body (e.g. an oversized answer): the connection is not reusable
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (its own pool), created on first use inside the running loop."""

    def __init__(
        self, ssl_context: ssl.SSLContext, limits: httpx.Limits, proxy: httpx.Proxy | None = None
    ) -> None:
        if proxy is not None:
            _check_proxy(proxy)
        self._ssl = ssl_context
        self._limits = limits
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # aiohttp loads on the first request, not with the engine: a run answered from the
        # cache (or a `version`) never pays its import (~60-130 ms here).
        import aiohttp

        connector = aiohttp.TCPConnector(
            ssl=self._ssl,
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
        )
        # Cookies, redirects and decompression are httpx's and the providers' business.
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open()
        import aiohttp
        import yarl

        timeout = request.extensions.get("timeout", {})
        proxy: dict[str, Any] = {}
        if self._proxy is not None:
            proxy["proxy"] = str(self._proxy.url.copy_with(username=None, password=None))
            if self._proxy.auth is not None:
                proxy["proxy_auth"] = aiohttp.BasicAuth(*self._proxy.auth)
            if self._proxy.headers:
                proxy["proxy_headers"] = dict(self._proxy.headers)
        with _httpx_errors():
            response = await self._session.request(
                request.method,
                # As httpx encoded it: yarl would otherwise re-quote it (``%3A`` back to ``:``).
                yarl.URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=await request.aread() or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
                **proxy,
            )
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason.encode()}
            if response.reason
            else {"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AiohttpClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose every transport (direct and per proxy) is aiohttp's.

    httpx still reads HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE (``trust_env``) and routes each
    URL to the right transport; only the two transport factories change (the hooks httpx's
    own client uses to build them).
    """

    # httpx calls both with keyword arguments (verify, cert, trust_env, limits, http1...).
    def _init_transport(self, **options: Any) -> httpx.AsyncBaseTransport:  # type: ignore[override]
        return _aiohttp_transport(None, **options)

    def _init_proxy_transport(  # type: ignore[override]
        self, proxy: httpx.Proxy, **options: Any
    ) -> httpx.AsyncBaseTransport:
        return _aiohttp_transport(proxy, **options)


class HttpcoreClient(httpx.AsyncClient):
    """httpx's own client (httpcore's pool), refusing the proxies AiohttpClient refuses, so that
    whether a proxy works never depends on how many indicators a run has."""

    def _init_proxy_transport(  # type: ignore[override]
        self, proxy: httpx.Proxy, **options: Any
    ) -> httpx.AsyncBaseTransport:
        _check_proxy(proxy)
        return super()._init_proxy_transport(proxy, **options)


def _check_proxy(proxy: httpx.Proxy) -> None:
    """HTTP(S) proxies only: aiohttp speaks no SOCKS."""
    if proxy.url.scheme not in ("http", "https"):
        raise ValueError(f"unsupported proxy scheme {proxy.url.scheme!r}")


def _aiohttp_transport(
    proxy: httpx.Proxy | None,
    verify: ssl.SSLContext | str | bool = True,
    cert: Any = None,
    trust_env: bool = True,
    limits: httpx.Limits | None = None,
    **_: Any,
) -> AiohttpTransport:
    context = httpx.create_ssl_context(verify, cert, trust_env)
    return AiohttpTransport(context, limits or httpx.Limits(), proxy)
