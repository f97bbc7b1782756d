"""Request bodies, read with a cap and parsed strictly: every JSON field is checked for its type, so a body of the
wrong shape gets a 400 that names the field, never a 500.

- :func:`read_json`: the small JSON bodies (a ``Content-Length`` over the cap is refused before reading anything,
  a chunked body as soon as it passes the cap);
- :func:`ndjson_lines`: the commit payload, one line at a time, each line capped;
- ``want_*``: typed access to fields of a parsed body.
"""
from __future__ import annotations

import json
from typing import Any, AsyncIterator

from starlette.requests import Request

from .errors import BadRequest, TooLarge


def announced_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("bad Content-Length header")
    return int(value)


async def read_body(request: Request, limit: int) -> bytes:
    size = announced_length(request)
    if size is not None and size > limit:
        raise TooLarge(f"request body of {size} bytes is larger than this endpoint's limit of {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body larger than this endpoint's limit of {limit} bytes")
    return bytes(buf)


def parse_json(raw: bytes, what: str = "request body") -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(f"{what} is not valid JSON ({str(e)[:200]})") from None


async def read_json(request: Request, limit: int) -> Any:
    raw = await read_body(request, limit)
    return parse_json(raw) if raw.strip() else {}


async def ndjson_lines(request: Request, max_line: int) -> AsyncIterator[bytes]:
    """The body's lines (without the newline), each at most ``max_line`` bytes (413 past it)."""
    buf = bytearray()
    scanned = 0
    async for chunk in request.stream():
        buf += chunk
        while True:
            i = buf.find(b"\n", scanned)
            if i < 0:
                scanned = len(buf)
                break
            line = bytes(buf[:i])
            del buf[: i + 1]
            scanned = 0
            if len(line) > max_line:
                raise TooLarge(f"a line of the commit payload is longer than {max_line} bytes")
            yield line
        if len(buf) > max_line:
            raise TooLarge(f"a line of the commit payload is longer than {max_line} bytes: a file this large must "
                           f"go through LFS (or the server's inline limit must be raised)")
    if buf:
        yield bytes(buf)


# ----------------------------------------------------------------------------------------------------------- fields
def want_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {_kind(value)}")
    return value


def want_str(d: dict[str, Any], key: str, what: str, default: str | None = None, required: bool = False) -> str:
    value = d.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{what}: missing {key!r}")
        return default  # type: ignore[return-value]
    if not isinstance(value, str):
        raise BadRequest(f"{what}: {key!r} must be a string, got {_kind(value)}")
    return value


def want_int(d: dict[str, Any], key: str, what: str, default: int | None = None, required: bool = False) -> int:
    value = d.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{what}: missing {key!r}")
        return default  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{what}: {key!r} must be a non-negative integer, got {_kind(value)}")
    return value


def want_bool(d: dict[str, Any], key: str, what: str) -> bool | None:
    value = d.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{what}: {key!r} must be true or false, got {_kind(value)}")
    return value


def want_list(d: dict[str, Any], key: str, what: str) -> list[Any]:
    value = d.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{what}: {key!r} must be a list, got {_kind(value)}")
    return value


def want_private(d: dict[str, Any], what: str) -> bool | None:
    """``private`` (bool) or ``visibility`` (``"public"``/``"private"``); None when neither is given."""
    private = want_bool(d, "private", what)
    visibility = want_str(d, "visibility", what)
    if visibility is not None:
        if visibility not in ("public", "private"):
            raise BadRequest(f"{what}: 'visibility' must be 'public' or 'private'")
        private = visibility == "private"
    return private


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


__all__ = ["announced_length", "read_body", "read_json", "parse_json", "ndjson_lines", "want_object", "want_str",
           "want_int", "want_bool", "want_list", "want_private"]
