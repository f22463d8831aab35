"""REDIS_URL redaction: every query value is masked but an allowlist of harmless options.

redis-py percent-decodes option names and passes unknown ones to the connection, so
``?passw%6Frd=...`` is a password and ``?ssl_password=...`` the key file's passphrase: a list
of secret names can never be complete, a list of harmless ones can.
"""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from support import sim_settings
from threatintel._redaction import redact_url, url_secrets
from threatintel.cli import app
from threatintel.engine import Engine
from threatintel.simulator import SimulatorServer

runner = CliRunner()

#: Nothing listens on port 1: every connection is refused at once.
HOSTILE_URL = (
    "rediss://app:userinfo-secret@127.0.0.1:1/0?passw%6Frd=encoded-secret"
    "&ssl_password=ssl-secret&socket_timeout=2"
)
SECRETS = ("userinfo-secret", "encoded-secret", "ssl-secret")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://cache:6379/0?passw%6Frd=s3", "redis://cache:6379/0?passw%6Frd=***"),
        ("redis://cache/0?ssl_password=s3&db=2", "redis://cache/0?ssl_password=***&db=2"),
        ("redis://cache/0?PassWord=s3", "redis://cache/0?PassWord=***"),
        ("redis://cache/0?token", "redis://cache/0?token=***"),
        ("redis://cache/0?client_name=s3", "redis://cache/0?client_name=***"),
        ("redis://cache/0?ssl_keyfile=/k.pem", "redis://cache/0?ssl_keyfile=***"),
        (
            "rediss://u:p@cache:6380/1?socket_timeout=2&SOCKET_%43ONNECT_TIMEOUT=1&protocol=3",
            "rediss://u:***@cache:6380/1?socket_timeout=2&SOCKET_%43ONNECT_TIMEOUT=1&protocol=3",
        ),
        ("unix:///run/redis.sock?db=1&password=s3", "unix:///run/redis.sock?db=1&password=***"),
    ],
)
def test_redact_url_masks_all_but_harmless_options(url: str, shown: str) -> None:
    """Query values are masked unless their decoded, case-folded name is allowlisted; the
    user-info password is masked too."""
    assert redact_url(url) == shown


def test_url_secrets_lists_every_masked_value_decoded() -> None:
    """url_secrets gives each masked value, raw and percent-decoded, for scrubbing messages."""
    found = url_secrets("redis://:p%40ss@h/0?ssl_password=a%2Bb&db=3")
    assert {"p%40ss", "p@ss", "a%2Bb", "a+b"} <= set(found)
    assert "3" not in found


def test_config_masks_every_redis_secret() -> None:
    """`threatintel config` shows REDIS_URL's host and harmless options, no secret."""
    result = runner.invoke(app, ["config", "--json"], env={"REDIS_URL": HOSTILE_URL})
    assert result.exit_code == 0, result.output
    assert "127.0.0.1:1" in result.stdout and "socket_timeout=2" in result.stdout
    assert "passw%6Frd=***" in result.stdout and "ssl_password=***" in result.stdout
    for secret in SECRETS:
        assert secret not in result.output


async def test_redis_unavailable_warnings_mask_every_secret(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, the cache's and the quota store's warnings name the masked URL only."""
    settings = sim_settings(sim, cache_backend="redis", redis_url=HOSTILE_URL)
    with caplog.at_level(logging.WARNING):
        async with Engine(settings) as engine:
            analysis = await engine.analyze(["45.142.212.61"], providers=["virustotal"])
    assert analysis.enrichments[0].sources["virustotal"].status.value == "ok"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("passw%6Frd=***" in w and "unavailable" in w for w in warnings), warnings
    assert any("quota store unreachable" in w for w in warnings), warnings
    for secret in SECRETS:
        assert secret not in caplog.text
