from __future__ import annotations

import logging
import socket

import httpx
import pytest

from threatintel.simulator import ManualClock, SimulatorConfig, SimulatorServer
from threatintel.simulator.server import check_loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    """The server refuses to bind anything but loopback."""
    with pytest.raises(ValueError, match="loopback"):
        SimulatorServer(host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    """Every loopback spelling passes the check."""
    check_loopback(host)


def test_server_serves_all_four_bases_on_a_free_port(caplog: pytest.LogCaptureFixture) -> None:
    """A started server exposes real-shaped base URLs, answers on each, and logs no keys."""
    caplog.set_level(logging.DEBUG)
    with SimulatorServer(SimulatorConfig(clock=ManualClock(0.0))) as sim:
        port = int(sim.url.rsplit(":", 1)[1])
        assert sim.url == f"http://127.0.0.1:{port}"
        assert sim.base_urls == {
            "virustotal": f"{sim.url}/virustotal/api/v3",
            "otx": f"{sim.url}/otx/api/v1",
            "abuseipdb": f"{sim.url}/abuseipdb/api/v2",
            "ipinfo": f"{sim.url}/ipinfo",
        }
        with httpx.Client() as client:
            vt = client.get(f"{sim.base_urls['virustotal']}/domains/haiku-os.org",
                            headers={"x-apikey": "secret-vt-key"})  # fmt: skip
            otx = client.get(f"{sim.base_urls['otx']}/indicators/IPv4/8.8.8.8/general")
            abuse = client.get(
                f"{sim.base_urls['abuseipdb']}/check",
                params={"ipAddress": "8.8.8.8"},
                headers={"Key": "secret-abuse-key", "Accept": "application/json"},
            )
            ipinfo = client.get(f"{sim.base_urls['ipinfo']}/8.8.8.8/json")
        assert [r.status_code for r in (vt, otx, abuse, ipinfo)] == [200, 200, 200, 200]
        assert sim.log.records()[0].headers["x-apikey"] == "secret-vt-key"
    assert "secret" not in caplog.text


def test_config_changes_apply_while_running() -> None:
    """A test may change keys on the live config; the next request obeys."""
    with SimulatorServer(SimulatorConfig(clock=ManualClock(0.0))) as sim:
        url = f"{sim.base_urls['virustotal']}/ip_addresses/8.8.8.8"
        assert httpx.get(url, headers={"x-apikey": "any"}).status_code == 200
        sim.config.virustotal.keys = {"only-this"}
        assert httpx.get(url, headers={"x-apikey": "any"}).status_code == 401


def test_stop_releases_the_port_and_url_needs_a_running_server() -> None:
    """After stop the port accepts no connection and url raises."""
    sim = SimulatorServer(SimulatorConfig(clock=ManualClock(0.0))).start()
    port = int(sim.url.rsplit(":", 1)[1])
    sim.stop()
    with pytest.raises(RuntimeError):
        _ = sim.url
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", port))


def test_busy_port_fails_fast() -> None:
    """Asking for a port already in use raises at start instead of hanging."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            SimulatorServer(port=port).start()
