"""The shared HTTP client behaves like any well-behaved httpx program (proxies, pooling), on
either transport: aiohttp's (any run) and httpx's own (a handful of lookups, wiring.SMALL_RUN)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from threatintel.engine import Engine
from threatintel.models import SourceStatus
from threatintel.providers import PROVIDERS
from threatintel.settings import Settings
from threatintel.wiring import USER_AGENT, build_client

VT_BODY = json.dumps(
    {
        "data": {
            "type": "ip_address",
            "id": "45.142.212.61",
            "attributes": {"last_analysis_stats": {"malicious": 0, "harmless": 1}},
        }
    }
).encode()


class RecordingProxy:
    """A loopback HTTP proxy stand-in: records request heads, answers a VirusTotal body."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        self.heads.append(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(VT_BODY)}\r\nconnection: close\r\n\r\n".encode()
            + VT_BODY
        )
        await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"


@pytest.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    recorder = RecordingProxy()
    recorder.server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    async with recorder.server:
        yield recorder


@pytest.fixture(params=[None, 1], ids=["aiohttp", "httpcore"])
def announced(request: pytest.FixtureRequest) -> int | None:
    """How many indicators the run announces up front: none (aiohttp's pool) or one (httpx's)."""
    value: int | None = request.param
    return value


@contextlib.asynccontextmanager
async def engine_for(settings: Settings, announced: int | None) -> AsyncIterator[Engine]:
    """An engine on the client a run announcing ``announced`` indicators gets."""
    async with (
        build_client(settings, indicators=announced) as client,
        Engine(settings, client=client) as engine,
    ):
        yield engine


def vt_only(**overrides: Any) -> Settings:
    # The .test host is never resolved: with a proxy set, httpx hands the name to the proxy.
    values: dict[str, Any] = {
        "virustotal_api_key": "VT-PROXY-TEST-KEY",
        "virustotal_base_url": "https://www.virustotal.test/api/v3",
        "request_timeout": 2,
        "max_retries": 0,
        "cache_backend": "memory",
    }
    return Settings.load(**(values | overrides))


async def test_http_proxy_from_the_environment_is_used(
    proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, announced: int | None
) -> None:
    """With HTTP_PROXY set, provider requests go through the proxy in absolute form."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    # Plain http:// is accepted for loopback only; nothing listens on 127.0.0.2:9.
    settings = vt_only(virustotal_base_url="http://127.0.0.2:9/api/v3")
    async with engine_for(settings, announced) as engine:
        analysis = await engine.analyze(["45.142.212.61"], providers=["virustotal"])
    assert analysis.enrichments[0].sources["virustotal"].status is SourceStatus.OK
    (head,) = proxy.heads
    request_line = head.splitlines()[0]
    assert request_line == "GET http://127.0.0.2:9/api/v3/ip_addresses/45.142.212.61 HTTP/1.1"
    assert f"user-agent: {USER_AGENT}" in head.lower()
    assert "VT-PROXY-TEST-KEY" not in request_line


async def test_no_proxy_bypasses_the_proxy(
    proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, announced: int | None
) -> None:
    """A host listed in NO_PROXY is contacted directly, never through the proxy."""
    direct = RecordingProxy()
    direct.server = await asyncio.start_server(direct.handle, "127.0.0.1", 0)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with direct.server:
        settings = vt_only(virustotal_base_url=direct.url + "/api/v3")
        async with engine_for(settings, announced) as engine:
            analysis = await engine.analyze(["45.142.212.61"], providers=["virustotal"])
    assert analysis.enrichments[0].sources["virustotal"].status is SourceStatus.OK
    assert proxy.heads == []
    (head,) = direct.heads
    assert head.splitlines()[0] == "GET /api/v3/ip_addresses/45.142.212.61 HTTP/1.1"


async def test_https_proxy_is_used_through_connect(
    proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, announced: int | None
) -> None:
    """HTTPS_PROXY tunnels with CONNECT; the key stays inside the tunnel, not in the CONNECT."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    settings = vt_only(virustotal_base_url="https://www.virustotal.test/api/v3")
    async with engine_for(settings, announced) as engine:
        analysis = await engine.analyze(["45.142.212.61"], providers=["virustotal"])
    # Our stand-in answers the CONNECT with a plain response, so no tunnel: a failure as data.
    assert analysis.enrichments[0].sources["virustotal"].status is SourceStatus.ERROR
    (head,) = proxy.heads
    assert head.splitlines()[0] == "CONNECT www.virustotal.test:443 HTTP/1.1"
    assert "VT-PROXY-TEST-KEY" not in head


async def test_one_pooled_client_serves_all_providers() -> None:
    """Every provider shares the engine's single httpx client (one connection pool)."""
    async with Engine(Settings.load()) as engine:
        clients = {id(p.client) for p in engine.providers.values()}  # type: ignore[attr-defined]
        assert clients == {id(engine.client)}
    assert engine.client.is_closed


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway CA-less certificate for 127.0.0.1, as TLS-inspecting proxies present."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_ssl_cert_file_is_trusted(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, announced: int | None
) -> None:
    """A private CA named by SSL_CERT_FILE is trusted; without it the same server is refused."""
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = RecordingProxy()
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    async with server.server:
        port = server.server.sockets[0].getsockname()[1]
        settings = vt_only(virustotal_base_url=f"https://127.0.0.1:{port}/api/v3")
        async with engine_for(settings, announced) as engine:
            refused = await engine.analyze(["45.142.212.61"], providers=["virustotal"])
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with engine_for(settings, announced) as engine:
            trusted = await engine.analyze(["45.142.212.61"], providers=["virustotal"])
    assert refused.enrichments[0].sources["virustotal"].status is SourceStatus.ERROR
    assert trusted.enrichments[0].sources["virustotal"].status is SourceStatus.OK


async def test_plain_http_endpoints_leave_tls_untrusted(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, announced: int | None
) -> None:
    """With every endpoint plain http://, no CA is loaded (not even SSL_CERT_FILE's): the
    client refuses any certificate, so a stray https:// request fails closed."""
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = RecordingProxy()
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    plain = {f"{name}_base_url": "http://127.0.0.1:9" for name in PROVIDERS}
    async with server.server:
        port = server.server.sockets[0].getsockname()[1]
        async with build_client(vt_only(**plain), indicators=announced) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"https://127.0.0.1:{port}/")
    assert server.heads == []
