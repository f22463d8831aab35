"""How a provider's answer is stored in the cache: the result, and the vendor's body beside it.

    value = encode_answer(result)                        # bytes for Cache.set
    result = decode_answer(value, with_raw=False)        # ValueError if unreadable

The vendor's body is kept with every answer, so ``--raw`` is served from the cache instead of
spending quota on the same question again; it is left out of the result unless asked for. The
value is the result's JSON without the body, then, when there is a body, a newline and the
body's JSON compressed with zlib (vendor JSON shrinks several times over, and the memory
layer holds thousands of entries). A plain hit reads only the first part: the body is neither
decompressed nor parsed unless it is wanted. Pydantic's JSON never holds a raw newline, so the
first one ends the result.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Final

from threatintel.models import SourceResult

#: Between the result's JSON and the compressed body.
SEPARATOR: Final = b"\n"
#: A stored body never inflates beyond this: the providers refuse bodies over 8 MiB, and the
#: shared cache (Redis) may hold values written by someone else.
MAX_RAW_BYTES: Final = 32 * 1024 * 1024


def encode_answer(result: SourceResult) -> bytes:
    """The bytes to cache for ``result``, its vendor body (``raw``) included when it has one."""
    # Fields left at their defaults are left out (the reader fills them in): a typical
    # answer's JSON halves, and a warm run validates each answer's JSON on every hit.
    head = result.model_dump_json(exclude={"raw"}, exclude_defaults=True).encode()
    if result.raw is None:
        return head
    body = json.dumps(result.raw, ensure_ascii=False, separators=(",", ":")).encode()
    return head + SEPARATOR + zlib.compress(body)


def decode_answer(value: bytes, *, with_raw: bool, age: float | None = None) -> SourceResult:
    """The result stored in ``value``, with its vendor body only when ``with_raw``; given an
    ``age`` (seconds), marked as an answer from the cache that old (``cached``, ``cache_age``).

    Raises ValueError for anything that is not a value ``encode_answer`` wrote.
    """
    head, _, packed = value.partition(SEPARATOR)
    result = SourceResult.model_validate_json(head)
    update: dict[str, Any] = {}
    if age is not None:
        update["cached"] = True
        update["cache_age"] = age
    if with_raw and packed:
        update["raw"] = _inflate(packed)
    if update:
        _amend(result, update)
    return result


def _amend(result: SourceResult, update: dict[str, Any]) -> None:
    """What ``model_copy(update=update)`` does to its copy, done to ``result`` itself.

    Only for a result validated a moment ago, that nobody else holds yet: frozen means
    "never changed once handed out". Copying a whole result costs almost half as much as
    validating it, and every cache hit would pay it (a warm run has tens of thousands).
    """
    result.__dict__.update(update)
    result.__pydantic_fields_set__.update(update)


def _inflate(packed: bytes) -> dict[str, Any]:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(packed, MAX_RAW_BYTES)
    except zlib.error as exc:
        raise ValueError("the cached vendor body is not readable") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("the cached vendor body is truncated or too large")
    try:
        raw = json.loads(text)
    except RecursionError as exc:
        raise ValueError("the cached vendor body is nested too deeply") from exc
    if not isinstance(raw, dict):
        raise ValueError("the cached vendor body is not a JSON object")
    return raw
