"""Naming secrets without showing them: key fingerprints and redacted URLs.

A leaf module (the standard library only), so the cache and quota packages can name keys and
redact Redis URLs without importing the settings, and through them scoring and the parser.
``threatintel.settings`` re-exports these names for older imports.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from pydantic import SecretStr


def fingerprint(key: SecretStr | str) -> str:
    """A short, stable, non-reversible name for a key: safe for logs, metrics and cache keys."""
    # Tested as str, not as SecretStr, so this module needs no pydantic at run time.
    raw = key if isinstance(key, str) else key.get_secret_value()
    return "key:" + hashlib.sha256(raw.encode()).hexdigest()[:10]


#: Redis URL query options whose values are shown: numbers, booleans and enum words, which cannot
#: hold a secret. Every other value is masked, whatever its name (redis-py passes unknown names
#: through as connection options, and decodes %-escapes in names: ``passw%6Frd`` is a password).
SHOWN_URL_OPTIONS = frozenset(
    {
        "db",
        "decode_responses",
        "health_check_interval",
        "max_connections",
        "protocol",
        "retry_on_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_timeout",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "timeout",
    }
)


def _query_name(piece: str) -> str:
    return unquote(piece.partition("=")[0].replace("+", " ")).strip().casefold()


def redact_url(url: str) -> str:
    """A URL fit for logs, errors and `threatintel config`: the user-info password masked
    (``redis://app:***@host``), and every query value but SHOWN_URL_OPTIONS'
    (``?ssl_password=***&db=1``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(
        piece if _query_name(piece) in SHOWN_URL_OPTIONS else f"{piece.partition('=')[0]}=***"
        for piece in re.split("[&;]", parts.query)
        if piece
    )
    # Spelled out, not geturl(): that drops the "//" of a unix:///path URL.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def url_secrets(url: str) -> list[str]:
    """What redact_url masks in ``url``, raw and percent-decoded, longest first: for scrubbing
    texts (a client library's error message) that may quote them."""
    parts = urlsplit(url)
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    for piece in (userinfo, *userinfo.split(":", 1)):
        found.update({piece, unquote(piece)})
    for piece in re.split("[&;]", parts.query):
        if piece and _query_name(piece) not in SHOWN_URL_OPTIONS:
            value = piece.partition("=")[2]
            found.update({value, unquote(value), unquote(value.replace("+", " "))})
    return sorted((s for s in found if s), key=len, reverse=True)
