"""A hostile upstream: the four vendors' routes answering what an attacker would send.

    with HostileServer("bomb") as server:
        env = {f"{name.upper()}_BASE_URL": url for name, url in server.base_urls.items()}

Modes (each names what the vendors answer; vendors a mode leaves alone answer plainly):

    escape       every string field of all four vendors' bodies carries ESC/OSC/bidi sequences
    huge         VirusTotal: 40,000 engines flagged; OTX: 40,000 pulses, families, validations
    retry_after  429 from every vendor with a hostile Retry-After (``retry_after`` chooses it)
    deep         VirusTotal: a 200 body nested 900 deep; OTX and AbuseIPDB: 100,000-deep errors
    bomb         VirusTotal and OTX: 1 GB of gzip-compressed zeros, about 1 MB on the wire
    compressed   plain answers, compressed: VirusTotal gzip, OTX zlib deflate, AbuseIPDB raw
                 deflate (what some servers send for "deflate"), IPinfo none

Loopback only, served like the simulator (uvicorn in a daemon thread). Bodies are built once
per process: the bomb costs a few seconds of CPU to compress.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
import zlib
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from threatintel.simulator.server import BASE_PATHS, check_loopback

MODES = ("escape", "huge", "retry_after", "deep", "bomb", "compressed")
HUGE = 40_000
SUCCESS_DEPTH = 900
ERROR_DEPTH = 100_000
BOMB_BYTES = 1024 * 1024 * 1024
#: Terminal attacks: clear screen, set title (OSC 0), clipboard (OSC 52), hyperlink (OSC 8),
#: bidi override, zero-width space, backspaces, a bare CR and a C1 CSI.
EVIL = (
    "\x1bc\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\x1b]8;;http://evil.test\x1b\\click\x1b]8;;\x1b\\"
    "\u202egnp.exe\u200b\b\b\rX\x9b2J"
)


def _evil(text: str) -> str:
    return f"{text}{EVIL}"


def _vt_attributes(ip: str) -> dict[str, Any]:
    return {
        "country": _evil("US"),
        "as_owner": _evil("Owner"),
        "asn": 64500,
        "network": _evil("192.0.2.0/24"),
        "reputation": -50,
        "tags": [_evil(f"tag{i}") for i in range(3)],
        "last_analysis_stats": {"malicious": 3, "suspicious": 0, "harmless": 1, "undetected": 1},
        "last_analysis_results": {
            _evil(f"E{i}"): {"category": "malicious", "engine_name": _evil(f"Engine{i}")}
            for i in range(3)
        },
        "popular_threat_classification": {"suggested_threat_label": _evil("trojan.evil")},
        "categories": {_evil("v"): _evil("malware")},
        "whois": _evil(f"whois for {ip}"),
    }


def _vt_body(ip: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"type": "ip_address", "id": ip, "attributes": attributes}}


def _otx_body(ip: str, pulses: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "indicator": ip,
        "type": "IPv4",
        "reputation": 0,
        "asn": _evil("AS64500 Evil Org"),
        "country_code": _evil("US"),
        "city": _evil("City"),
        "region": _evil("Region"),
        "pulse_info": {"count": len(pulses), "pulses": pulses},
        **extra,
    }


def _evil_pulse(i: int) -> dict[str, Any]:
    return {
        "id": _evil(f"p{i}"),
        "name": _evil(f"Pulse {i}"),
        "adversary": _evil("APT Evil"),
        "malware_families": [{"id": "x", "display_name": _evil("EvilRAT")}],
        "attack_ids": [{"id": _evil("T1071"), "name": _evil("Web")}],
        "tags": [_evil("c2"), _evil("botnet")],
        "TLP": _evil("white"),
        "created": "2024-01-01T00:00:00",
        "modified": "2024-02-01T00:00:00",
    }


def _abuse_body(ip: str, text: Any = _evil) -> dict[str, Any]:
    return {
        "data": {
            "ipAddress": ip,
            "abuseConfidenceScore": 90,
            "totalReports": 12,
            "numDistinctUsers": 4,
            "usageType": text("Data Center"),
            "isp": text("Evil ISP"),
            "domain": text("evil.test"),
            "isTor": False,
            "lastReportedAt": "2024-02-01T00:00:00+00:00",
        }
    }


def _ipinfo_body(ip: str, text: Any = _evil) -> dict[str, Any]:
    return {
        "ip": ip,
        "hostname": text("host.evil.test"),
        "city": text("City"),
        "region": text("Region"),
        "country": text("US"),
        "loc": "1.0,2.0",
        "org": text("AS64500 Evil Org"),
    }


def _plain(text: str) -> str:
    return text


def _nested(depth: int, leaf: str = "{}") -> str:
    return "[" * depth + leaf + "]" * depth


@functools.cache
def bomb() -> bytes:
    """BOMB_BYTES of zeros as one gzip member (about 1 MB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(BOMB_BYTES // len(block))]
    return b"".join(parts) + packer.flush()


@functools.cache
def huge_vt(ip: str) -> bytes:
    attributes = _vt_attributes(ip) | {
        "tags": [f"tag{i}" for i in range(HUGE)],
        "last_analysis_stats": {"malicious": HUGE, "harmless": 0},
        "last_analysis_results": {
            f"e{i}": {"category": "malicious", "engine_name": f"Engine{i}"} for i in range(HUGE)
        },
    }
    return json.dumps(_vt_body(ip, attributes)).encode()


@functools.cache
def huge_otx(ip: str) -> bytes:
    pulses: list[dict[str, Any]] = [
        {"id": f"p{i}", "name": f"P{i}", "tags": ["t"]} for i in range(HUGE)
    ]
    pulses[0] = {
        "id": "p0",
        "name": "big",
        "adversary": "APT Big",
        "malware_families": [{"display_name": f"Family{i}"} for i in range(HUGE)],
        "attack_ids": [{"id": f"T{i}"} for i in range(HUGE)],
        "tags": [f"tag{i}" for i in range(HUGE)],
    }
    validation = [{"source": f"s{i}", "name": "Whitelisted"} for i in range(HUGE)]
    return json.dumps(_otx_body(ip, pulses, validation=validation)).encode()


class HostileApp:
    """The routes; ``mode`` and ``retry_after`` may be changed while the server runs."""

    def __init__(self, mode: str, *, retry_after: str = "1e300") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.retry_after = retry_after
        prefix = {name: f"/{name}{path}" for name, path in BASE_PATHS.items()}
        self.app = Starlette(
            routes=[
                Route(prefix["virustotal"] + "/ip_addresses/{ip}", self.virustotal),
                Route(prefix["otx"] + "/indicators/IPv4/{ip}/general", self.otx),
                Route(prefix["abuseipdb"] + "/check", self.abuseipdb),
                Route(prefix["ipinfo"] + "/{ip}/json", self.ipinfo),
            ]
        )

    def _throttled(self, body: dict[str, Any]) -> Response:
        return Response(
            json.dumps(body),
            status_code=429,
            media_type="application/json",
            headers={"retry-after": self.retry_after},
        )

    @staticmethod
    def _json(body: dict[str, Any] | bytes | str, status: int = 200) -> Response:
        content = body if isinstance(body, bytes | str) else json.dumps(body)
        return Response(content, status_code=status, media_type="application/json")

    @staticmethod
    def _compressed(body: dict[str, Any], coding: str, wbits: int) -> Response:
        packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
        content = packer.compress(json.dumps(body).encode()) + packer.flush()
        return Response(
            content, media_type="application/json", headers={"content-encoding": coding}
        )

    @staticmethod
    def _bomb() -> Response:
        return Response(bomb(), media_type="application/json", headers={"content-encoding": "gzip"})

    async def virustotal(self, request: Request) -> Response:
        ip = request.path_params["ip"]
        if self.mode == "escape":
            return self._json(_vt_body(ip, _vt_attributes(ip)))
        if self.mode == "huge":
            return self._json(huge_vt(ip))
        if self.mode == "retry_after":
            return self._throttled({"error": {"code": "QuotaExceededError", "message": "q"}})
        if self.mode == "deep":
            attributes = '{"reputation": 1, "whois": ' + _nested(SUCCESS_DEPTH) + "}"
            return self._json('{"data": {"type": "ip_address", "attributes": ' + attributes + "}}")
        if self.mode == "compressed":
            return self._compressed(_vt_body(ip, _vt_attributes(ip)), "gzip", zlib.MAX_WBITS | 16)
        return self._bomb()

    async def otx(self, request: Request) -> Response:
        ip = request.path_params["ip"]
        if self.mode == "escape":
            return self._json(_otx_body(ip, [_evil_pulse(i) for i in range(3)]))
        if self.mode == "huge":
            return self._json(huge_otx(ip))
        if self.mode == "retry_after":
            return self._throttled({"detail": "slow down"})
        if self.mode == "deep":
            return self._json(_nested(ERROR_DEPTH), status=400)
        if self.mode == "compressed":
            body = _otx_body(ip, [_evil_pulse(i) for i in range(3)])
            return self._compressed(body, "deflate", zlib.MAX_WBITS)
        return self._bomb()

    async def abuseipdb(self, request: Request) -> Response:
        ip = request.query_params.get("ipAddress", "")
        if self.mode == "escape":
            return self._json(_abuse_body(ip))
        if self.mode == "retry_after":
            return self._throttled({"errors": [{"detail": "Daily rate limit exceeded"}]})
        if self.mode == "deep":
            return self._json('{"errors": ' + _nested(ERROR_DEPTH) + "}", status=422)
        if self.mode == "compressed":
            return self._compressed(_abuse_body(ip, _plain), "deflate", -zlib.MAX_WBITS)
        return self._json(_abuse_body(ip, _plain))

    async def ipinfo(self, request: Request) -> Response:
        ip = request.path_params["ip"]
        if self.mode == "escape":
            return self._json(_ipinfo_body(ip))
        if self.mode == "retry_after":
            return self._throttled({"status": 429, "error": {"title": "Rate limit"}})
        return self._json(_ipinfo_body(ip, _plain))


class HostileServer:
    """HostileApp on 127.0.0.1 in a daemon thread; a context manager."""

    def __init__(self, mode: str, *, retry_after: str = "1e300", host: str = "127.0.0.1") -> None:
        check_loopback(host)
        self.hostile = HostileApp(mode, retry_after=retry_after)
        self._host = host
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_urls(self) -> dict[str, str]:
        url = f"http://{self._host}:{self._port}"
        return {name: f"{url}/{name}{path}" for name, path in BASE_PATHS.items()}

    def __enter__(self) -> HostileServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self._host, 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self.hostile.app, log_config=None, access_log=False, lifespan="off")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="hostile-upstream", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the hostile server did not start")
            time.sleep(0.005)  # waiting for a thread to start, not for the code under test
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(5)
