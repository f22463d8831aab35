"""Configuration from the environment, an env file and ``./.env``.

The variable names are a public contract (users have them in .env files, compose files and
Kubernetes manifests): VIRUSTOTAL_API_KEY, OTX_API_KEY, ABUSEIPDB_API_KEY, IPINFO_API_KEY,
CACHE_TTL, MAX_RETRIES, REQUEST_TIMEOUT, VIRUSTOTAL_RATE_LIMIT (per minute), OTX_RATE_LIMIT
(per hour), ABUSEIPDB_RATE_LIMIT (per day), MAX_WORKERS, BATCH_SIZE, COMPRESS_RESPONSES.

    settings = Settings.load()                    # environment + ./.env, ConfigError if invalid
    settings = Settings.load(env_file="team.env") # environment + that file (./.env not read)
    settings = Settings.load(VIRUSTOTAL_API_KEY="k1,k2", QUERY_PRIVATE=True)   # overrides

Sources, strongest first: overrides, the process environment, then either the explicit
``env_file`` or ``./.env``, then the user's own ``config.env`` (USER_CONFIG_FILE), then defaults.
Only the current directory's ``./.env`` is read, never a parent's or $HOME's.

``./.env`` is trusted less than the others: an analyst ``cd``s into case folders, some unpacked
from an attacker's archive, so it may supply keys and tuning but never a setting that decides
where our keys and indicators go or what verdict is shown (REFUSED_FROM_CWD). Such a line is
ignored with one warning. Plain ``http://`` endpoints are refused unless the host is loopback.
API keys are SecretStr and accept several keys separated by commas.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

# Re-exported: these lived here before the cache and quota packages needed them without
# importing the settings.
from threatintel._redaction import SHOWN_URL_OPTIONS as SHOWN_URL_OPTIONS
from threatintel._redaction import fingerprint as fingerprint
from threatintel._redaction import redact_url as redact_url
from threatintel._redaction import url_secrets as url_secrets
from threatintel._visible import hidden
from threatintel.errors import ConfigError
from threatintel.indicators import DEFAULT_INTERNAL_DOMAINS
from threatintel.policy import ScoringPolicy
from threatintel.resilience import DEFAULT_MAX_RETRIES

DEFAULT_VIRUSTOTAL_BASE_URL = "https://www.virustotal.com/api/v3"
DEFAULT_OTX_BASE_URL = "https://otx.alienvault.com/api/v1"
DEFAULT_ABUSEIPDB_BASE_URL = "https://api.abuseipdb.com/api/v2"
DEFAULT_IPINFO_BASE_URL = "https://ipinfo.io"

logger = logging.getLogger("threatintel.settings")


#: Names the per-user cache directory: ~/.cache/threatintel on Linux ($XDG_CACHE_HOME honoured),
#: ~/Library/Caches/threatintel on macOS, %LOCALAPPDATA%\threatintel\Cache on Windows.
APP_NAME = "threatintel"


def default_cache_dir() -> Path:
    """The user's cache directory: one cache and one quota budget per user and machine,
    whichever directory a run starts in (``./cache`` gave every folder a budget of its own)."""
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def user_config_file() -> Path:
    """The user's own env file: ~/.config/threatintel/config.env on Linux ($XDG_CONFIG_HOME
    honoured), ~/Library/Application Support/threatintel/config.env on macOS,
    %LOCALAPPDATA%\\threatintel\\config.env on Windows. Trusted like the environment."""
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.env"


#: Settings an implicit ./.env may not set, by env name (lower case): each decides where our keys
#: and indicators go or what the analyst is shown, and a case folder is not the user's to trust.
#: *_BASE_URL sends every key to another host; QUERY_PRIVATE and INTERNAL_DOMAINS send internal
#: names out; REDIS_URL and CACHE_DIR choose a store whose answers are shown as the vendors'
#: (and that sees every lookup); REPORTS_DIR chooses where reports holding internal names are
#: written; SCORING__* can turn a malicious verdict harmless. The proxy and CA variables are
#: never read from any env file (httpx reads them from the environment only), but a case folder
#: setting them is worth a warning. Keys and tuning stay allowed: that is what users keep there.
REFUSED_FROM_CWD = frozenset(
    {
        "virustotal_base_url",
        "otx_base_url",
        "abuseipdb_base_url",
        "ipinfo_base_url",
        "query_private",
        "internal_domains",
        "redis_url",
        "cache_dir",
        "reports_dir",
        "scoring",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "ssl_cert_file",
        "ssl_cert_dir",
    }
)


def _refused(name: str) -> bool:
    return name in REFUSED_FROM_CWD or name.startswith("scoring__")


class _WorkingDirEnvFile(DotEnvSettingsSource):
    """./.env without the settings it may not set (REFUSED_FROM_CWD): one warning names them."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found = super()._load_env_vars()
        refused = sorted(name for name in found if _refused(name))
        if refused:
            logger.warning(
                "ignoring %s from %s: endpoints, scope, stores and scoring come only from the "
                "environment, --env-file or %s",
                ", ".join(name.upper() for name in refused),
                os.path.abspath(".env"),
                user_config_file(),
            )
        return {name: value for name, value in found.items() if not _refused(name)}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_check(path: Path) -> None:
    """Raise ConfigError naming ``path`` if it cannot be read as UTF-8 text."""
    where = os.path.abspath(path)
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        reason = f"not UTF-8 text (byte 0x{byte} at offset {exc.start}); save it as UTF-8"
        raise ConfigError(f"cannot read {where}: {reason}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None


Keys = Annotated[list[SecretStr], NoDecode]
#: What an API key may hold: visible ASCII, the characters every HTTP stack sends unchanged.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
Suffixes = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        # None: settings_customise_sources adds ./.env (filtered) and the user's config file;
        # an explicit file comes in as _env_file, which Settings.load(env_file=...) passes.
        env_file=None,
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_nested_delimiter="__",
        frozen=True,
    )

    # --- provider keys (comma-separated for several keys) and endpoints -------------------
    virustotal_api_key: Keys = Field(default_factory=list)
    otx_api_key: Keys = Field(default_factory=list)
    abuseipdb_api_key: Keys = Field(default_factory=list)
    ipinfo_api_key: Keys = Field(default_factory=list)
    virustotal_base_url: str = DEFAULT_VIRUSTOTAL_BASE_URL
    otx_base_url: str = DEFAULT_OTX_BASE_URL
    abuseipdb_base_url: str = DEFAULT_ABUSEIPDB_BASE_URL
    ipinfo_base_url: str = DEFAULT_IPINFO_BASE_URL

    # --- request behaviour -----------------------------------------------------------------
    request_timeout: float = Field(default=10.0, gt=0, le=300)
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=20)
    max_workers: int = Field(default=50, ge=1, le=1000)
    batch_size: int = Field(default=100, ge=1, le=100_000)
    cache_ttl: int = Field(default=86_400, ge=0, description="0 disables caching")
    compress_responses: bool = True
    lookup_timeout: float = Field(default=60.0, gt=0, le=3_600)
    max_retry_after: float = Field(default=60.0, ge=0, le=3_600)
    retry_backoff_base: float = Field(default=0.5, ge=0, le=60)
    retry_backoff_cap: float = Field(default=20.0, ge=0, le=600)

    # --- cache ----------------------------------------------------------------------------
    cache_backend: Literal["auto", "memory", "sqlite", "redis"] = "auto"
    cache_dir: Path = Field(default_factory=default_cache_dir)
    reports_dir: Path = Path("./reports")
    redis_url: SecretStr | None = None
    negative_cache_ttl: int = Field(default=3_600, ge=0)
    # Seconds a finished batch job (done, failed, cancelled) is kept after its last update;
    # 0 keeps every job until deleted.
    job_retention: int = Field(default=7 * 86_400, ge=0)
    virustotal_cache_ttl: int | None = Field(default=None, ge=0)
    otx_cache_ttl: int | None = Field(default=None, ge=0)
    abuseipdb_cache_ttl: int | None = Field(default=None, ge=0)
    ipinfo_cache_ttl: int | None = Field(default=None, ge=0)

    # --- circuit breaker (resilience.py): a failure rate over a recent window -------------
    circuit_failure_rate: float = Field(default=0.8, gt=0, le=1)
    # CIRCUIT_FAILURE_THRESHOLD, the older name, still works: a provider failing every call
    # opens its circuit after this many failed calls, as that setting always promised.
    circuit_min_calls: int = Field(
        default=10,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("circuit_min_calls", "circuit_failure_threshold"),
    )
    circuit_window: float = Field(default=60.0, gt=0, le=86_400)
    circuit_reset_after: float = Field(default=60.0, gt=0, le=86_400)
    circuit_probe_wait: float = Field(default=5.0, ge=0, le=3_600)

    # --- quotas (the seed's windows; further windows come with the resilience layer) ----
    virustotal_rate_limit: int = Field(default=4, ge=1, description="per minute")
    otx_rate_limit: int = Field(default=1_000, ge=1, description="per hour")
    abuseipdb_rate_limit: int = Field(default=1_000, ge=1, description="per day")
    ipinfo_rate_limit: int = Field(default=50_000, ge=1, description="per month")
    virustotal_daily_limit: int = Field(default=500, ge=1)
    virustotal_monthly_limit: int = Field(default=15_500, ge=1)
    ipinfo_anonymous_daily_limit: int = Field(default=1_000, ge=1)
    rate_limit_margin: float = Field(default=1.0, ge=0, le=60)
    quota_wait_for_reset: bool = False
    max_quota_wait: float | None = Field(default=None, ge=0)

    # --- scope ----------------------------------------------------------------------------
    query_private: bool = False
    internal_domains: Suffixes = Field(default_factory=lambda: list(DEFAULT_INTERNAL_DOMAINS))
    abuseipdb_max_age_days: int = Field(default=90, ge=1, le=365)

    # --- verdicts -------------------------------------------------------------------------
    scoring: ScoringPolicy = Field(default_factory=ScoringPolicy)

    # --- servers (`threatintel server`) ---------------------------------------------------
    # The bearer token every HTTP request but /health must carry (the API and /mcp alike).
    # Without it the server binds only to loopback.
    threatintel_api_token: SecretStr | None = None
    # Requests per minute one client (its token, else its address) may make to the HTTP
    # API and /mcp; shared through REDIS_URL across instances. 0 turns the limit off.
    api_rate_limit: int = Field(default=120, ge=0, le=1_000_000, description="per minute")
    # The synchronous endpoints' caps: indicators per request and request body bytes.
    api_max_indicators: int = Field(default=1_000, ge=1, le=100_000)
    api_max_body: int = Field(default=1_048_576, ge=1_024, le=1_073_741_824)
    # A job's body may be larger (POST /api/v1/jobs): it is read as a stream.
    api_max_job_body: int = Field(default=20_971_520, ge=1_024, le=10_737_418_240)

    # --- batch work across processes (REDIS_URL) ------------------------------------------
    # With REDIS_URL, a job's chunks go on a queue in Redis that `threatintel worker` processes
    # consume; a server works on queued chunks itself too, and `threatintel batch` on its own
    # job's, unless this is false (API replicas beside dedicated workers).
    embedded_worker: bool = True
    # A chunk whose worker stopped renewing its lease this many seconds ago (the worker died)
    # is handed to another worker. A live worker renews four times per period.
    job_redelivery_timeout: float = Field(default=60.0, ge=1.0, le=86_400.0)

    # --- logs (stderr) --------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    _split_keys = field_validator(
        "virustotal_api_key",
        "otx_api_key",
        "abuseipdb_api_key",
        "ipinfo_api_key",
        "internal_domains",
        mode="before",
    )(_split_commas)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _log_case(cls, value: Any, info: ValidationInfo) -> Any:
        # LOG_LEVEL=info and LOG_FORMAT=JSON are what people write.
        if isinstance(value, str):
            value = value.strip()
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("virustotal_api_key", "otx_api_key", "abuseipdb_api_key", "ipinfo_api_key")
    @classmethod
    def _check_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        # Keys travel in HTTP headers, which carry visible ASCII only: a pasted key with a
        # curly quote, a newline or a control character would fail every lookup later.
        for position, key in enumerate(keys, 1):
            if not _HEADER_SAFE.fullmatch(key.get_secret_value()):
                which = f"key {position} of {len(keys)}" if len(keys) > 1 else "the key"
                raise ValueError(
                    f"{which} has a character that cannot be sent in an HTTP header "
                    "(non-ASCII, a space, a line break or a control character); "
                    "paste it again as plain text"
                )
        return keys

    @field_validator("virustotal_base_url", "otx_base_url", "abuseipdb_base_url", "ipinfo_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if any(hidden(ch) or ch.isspace() for ch in value.strip()):
            # httpx would refuse it at the first lookup ("internal error"), and the endpoints
            # note would print it: an ESC in a host name reaches the terminal.
            raise ValueError("must not contain spaces or control characters")
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not carry a query, a fragment or credentials")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        # The key travels with every request: in clear only to this machine (the simulator).
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError(
                "plain http:// is allowed only for loopback (127.0.0.0/8, ::1, localhost); "
                "use https://"
            )
        return value.strip().rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("needs a host")
        return value

    @field_validator("internal_domains")
    @classmethod
    def _normalise_suffixes(cls, value: list[str]) -> list[str]:
        return ["." + s.strip().lower().strip(".") for s in value if s.strip().strip(".")]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        explicit = isinstance(dotenv_settings, DotEnvSettingsSource) and (
            dotenv_settings.env_file is not None
        )
        # An explicit file replaces ./.env: the user chose what this run reads.
        local = dotenv_settings if explicit else _WorkingDirEnvFile(settings_cls, Path(".env"))
        user = DotEnvSettingsSource(settings_cls, env_file=user_config_file())
        return init_settings, env_settings, local, user, file_secret_settings

    @classmethod
    def load(cls, env_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Read the environment, ``env_file`` (else ./.env) and the user's config file; raise
        ConfigError naming each bad variable or the file that cannot be read."""
        files = [Path(env_file) if env_file is not None else Path(".env"), user_config_file()]
        if env_file is not None and not files[0].exists():
            raise ConfigError(f"cannot read {os.path.abspath(files[0])}: no such file")
        if env_file is not None and files[0].is_dir():
            # pydantic would read nothing from it and the run would go on without the settings
            # the user chose (a pipe, `--env-file <(...)`, is still fine: it is read once below).
            raise ConfigError(f"cannot read {os.path.abspath(files[0])}: is a directory")
        for path in files:
            if path.is_file():
                _read_check(path)
        try:
            if env_file is not None:
                return cls(_env_file=Path(env_file), **overrides)
            return cls(**overrides)
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_input=False, include_url=False):
                name = "__".join(str(p) for p in err["loc"]).upper() or "settings"
                problems.append(f"{name}: {err['msg']}")
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
        except SettingsError as exc:
            # Raised when a complex value (a JSON list, say) cannot be decoded at all.
            raise ConfigError(f"invalid configuration: {exc}") from None
        except (UnicodeDecodeError, OSError) as exc:
            # A file that is no regular file (a pipe) is read once, by pydantic: name it here.
            where = os.path.abspath(files[0])
            raise ConfigError(f"cannot read {where}: not readable UTF-8 text ({exc})") from None

    def custom_endpoints(self) -> dict[str, str]:
        """The *_BASE_URL variables set to something other than the vendor's address, by name."""
        found = {}
        for name, field in type(self).model_fields.items():
            if name.endswith("_base_url") and getattr(self, name) != field.default:
                found[name.upper()] = getattr(self, name)
        return found

    @property
    def circuit_failure_threshold(self) -> int:
        """The older name of ``circuit_min_calls`` (read by code written before the rename)."""
        return self.circuit_min_calls

    def api_keys(self, provider: str) -> list[SecretStr]:
        """The provider's keys, from ``<provider>_api_key`` or the field its class names."""
        keys: list[SecretStr] | None = getattr(self, f"{provider}_api_key", None)
        if keys is None:
            keys = getattr(self, _registered(provider, "key_setting") or "", None)
        return keys or []

    def configured(self, name: str) -> bool:
        """Whether the setting ``name`` (a field name) was set by the user (an override, the
        environment or an env file) rather than left at its default: a set limit beats one
        learned from the vendor, which beats the default."""
        return name in self.model_fields_set

    def cache_ttl_for(self, provider: str) -> int:
        specific: int | None = getattr(self, f"{provider}_cache_ttl", None)
        return self.cache_ttl if specific is None else specific

    @property
    def resolved_cache_backend(self) -> str:
        """ "auto" is Redis when REDIS_URL is set, else SQLite."""
        if self.cache_backend == "auto":
            return "redis" if self.redis_url is not None else "sqlite"
        return self.cache_backend

    def base_url(self, provider: str) -> str:
        url: str = getattr(self, f"{provider}_base_url", None) or (
            _registered(provider, "default_base_url") or ""
        )
        return url.rstrip("/")


def _registered(provider: str, fact: str) -> str | None:
    """A fact of a provider that has no fields here (one registered by a plug-in or a test).
    Imported on demand: the registry loads httpx, which commands such as `extract` never need."""
    from threatintel.providers import PROVIDERS

    cls = PROVIDERS.get(provider)
    value = getattr(cls, fact, None) if cls is not None else None
    return value if isinstance(value, str) else None
