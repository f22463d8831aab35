"""Settings: the public variable names, .env handling, and one clear error per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from threatintel._redaction import fingerprint
from threatintel.errors import ConfigError
from threatintel.settings import Settings

PUBLIC_CONTRACT = {
    "VIRUSTOTAL_API_KEY": ("k-vt", lambda s: [k.get_secret_value() for k in s.virustotal_api_key]),
    "OTX_API_KEY": ("k-otx", lambda s: [k.get_secret_value() for k in s.otx_api_key]),
    "ABUSEIPDB_API_KEY": ("k-ab", lambda s: [k.get_secret_value() for k in s.abuseipdb_api_key]),
    "IPINFO_API_KEY": ("k-ip", lambda s: [k.get_secret_value() for k in s.ipinfo_api_key]),
    "CACHE_TTL": ("3600", lambda s: s.cache_ttl),
    "MAX_RETRIES": ("0", lambda s: s.max_retries),
    "REQUEST_TIMEOUT": ("2.5", lambda s: s.request_timeout),
    "VIRUSTOTAL_RATE_LIMIT": ("500", lambda s: s.virustotal_rate_limit),
    "OTX_RATE_LIMIT": ("60", lambda s: s.otx_rate_limit),
    "ABUSEIPDB_RATE_LIMIT": ("3000", lambda s: s.abuseipdb_rate_limit),
    "MAX_WORKERS": ("4", lambda s: s.max_workers),
    "BATCH_SIZE": ("25", lambda s: s.batch_size),
    "COMPRESS_RESPONSES": ("false", lambda s: s.compress_responses),
}
EXPECTED = {
    "VIRUSTOTAL_API_KEY": ["k-vt"],
    "OTX_API_KEY": ["k-otx"],
    "ABUSEIPDB_API_KEY": ["k-ab"],
    "IPINFO_API_KEY": ["k-ip"],
    "CACHE_TTL": 3600,
    "MAX_RETRIES": 0,
    "REQUEST_TIMEOUT": 2.5,
    "VIRUSTOTAL_RATE_LIMIT": 500,
    "OTX_RATE_LIMIT": 60,
    "ABUSEIPDB_RATE_LIMIT": 3000,
    "MAX_WORKERS": 4,
    "BATCH_SIZE": 25,
    "COMPRESS_RESPONSES": False,
}


@pytest.mark.parametrize("name", sorted(PUBLIC_CONTRACT))
def test_public_variable_names_are_read(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Each variable users already have in their .env and manifests takes effect as named."""
    value, read = PUBLIC_CONTRACT[name]
    monkeypatch.setenv(name, value)
    assert read(Settings.load()) == EXPECTED[name]


def test_defaults_match_the_free_tiers() -> None:
    """Out of the box the limits are the free tiers' and retries are on."""
    s = Settings.load()
    assert (s.virustotal_rate_limit, s.abuseipdb_rate_limit, s.ipinfo_rate_limit) == (
        4,
        1000,
        50000,
    )
    assert (s.max_retries, s.cache_ttl, s.query_private) == (4, 86400, False)
    assert s.internal_domains == [".local", ".internal", ".lan", ".home.arpa"]


def test_several_keys_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    """One variable can hold several keys; spaces and empty items are ignored."""
    monkeypatch.setenv("VIRUSTOTAL_API_KEY", " a1, b2 ,,c3 ")
    keys = Settings.load().api_keys("virustotal")
    assert [k.get_secret_value() for k in keys] == ["a1", "b2", "c3"]
    assert "a1" not in repr(keys)


def test_dotenv_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """./.env is read; a .env in a parent directory is not."""
    (tmp_path / ".env").write_text("CACHE_TTL=123\nMAX_RETRIES=7\n")
    child = tmp_path / "child"
    child.mkdir()
    monkeypatch.chdir(tmp_path)
    assert Settings.load().cache_ttl == 123
    monkeypatch.chdir(child)
    assert Settings.load().cache_ttl == 86400


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_RETRIES", "-1"),
        ("MAX_RETRIES", "three"),
        ("REQUEST_TIMEOUT", "0"),
        ("CACHE_TTL", "soon"),
        ("MAX_WORKERS", "0"),
        ("ABUSEIPDB_MAX_AGE_DAYS", "400"),
        ("COMPRESS_RESPONSES", "maybe"),
        ("SCORING__MALICIOUS_THRESHOLD", "10"),
        ("REDIS_URL", "redis://:hunter2@127.0.0.1:99999/0"),
        ("REDIS_URL", "http://cache.example:6379"),
        ("CACHE_BACKEND", "memcached"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A bad value raises ConfigError whose one-line message names the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    message = str(caught.value)
    assert "\n" not in message
    assert name.split("__")[0] in message
    assert "hunter2" not in message


def test_fingerprints_are_short_stable_and_distinct() -> None:
    """A key's fingerprint identifies it without revealing it."""
    assert fingerprint("secret-one") == fingerprint("secret-one")
    assert fingerprint("secret-one") != fingerprint("secret-two")
    assert "secret" not in fingerprint("secret-one")


def test_redact_url_hides_only_the_password() -> None:
    """A Redis URL is shown with its host and user but never its password."""
    from threatintel._redaction import redact_url

    assert redact_url("redis://:hunter2@10.1.2.3:6379/0") == "redis://:***@10.1.2.3:6379/0"
    assert redact_url("rediss://app:pw@cache:6380") == "rediss://app:***@cache:6380"
    assert redact_url("redis://cache:6379/1") == "redis://cache:6379/1"
    shown = redact_url("redis://cache:6379/0?password=hunter2&socket_timeout=2")
    assert shown == "redis://cache:6379/0?password=***&socket_timeout=2"


def test_undecodable_dotenv_is_a_config_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .env saved as Latin-1 is a ConfigError naming the file and the byte, not a crash."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"# cl\xe9s\nVIRUSTOTAL_API_KEY=abc\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    message = str(caught.value)
    assert str(tmp_path / ".env") in message
    assert "not UTF-8" in message and "0xe9" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VIRUSTOTAL_API_KEY", "SECRETé0123"),  # non-ASCII
        ("OTX_API_KEY", "SECRET\n0123"),  # a line break
        ("ABUSEIPDB_API_KEY", "SECRET\x7f0123"),  # a control character
        ("IPINFO_API_KEY", "SECRET 0123"),  # a space inside
        ("VIRUSTOTAL_API_KEY", "good-key,SECRET”0123"),  # a curly quote in the second key
    ],
)
def test_a_key_that_cannot_go_in_a_header_is_a_config_error(name: str, value: str) -> None:
    """A key HTTP cannot carry is refused at start-up, naming the variable, never the key."""
    with pytest.raises(ConfigError) as caught:
        Settings.load(**{name.lower(): value})
    message = str(caught.value)
    assert name in message and "HTTP header" in message
    assert "SECRET" not in message and "\n" not in message


def test_surrounding_whitespace_of_a_key_is_trimmed() -> None:
    """A trailing newline or spaces around keys (as pasted into .env) are not an error."""
    settings = Settings.load(virustotal_api_key=" key-one ,key-two\n")
    assert [k.get_secret_value() for k in settings.virustotal_api_key] == ["key-one", "key-two"]


def test_breaker_settings_and_the_old_threshold_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """CIRCUIT_FAILURE_THRESHOLD still sets the calls that open a dead provider's circuit;
    CIRCUIT_MIN_CALLS, its new name, wins when both are set."""
    defaults = Settings.load()
    assert (defaults.circuit_failure_rate, defaults.circuit_min_calls) == (0.8, 10)
    assert (defaults.circuit_window, defaults.circuit_reset_after) == (60, 60)
    assert defaults.circuit_probe_wait == 5
    monkeypatch.setenv("CIRCUIT_FAILURE_THRESHOLD", "4")
    assert Settings.load().circuit_min_calls == 4
    monkeypatch.setenv("CIRCUIT_MIN_CALLS", "7")
    assert Settings.load().circuit_min_calls == 7
    monkeypatch.setenv("CIRCUIT_FAILURE_RATE", "1.5")
    with pytest.raises(ConfigError, match="CIRCUIT_FAILURE_RATE"):
        Settings.load()
