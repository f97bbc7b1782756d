"""The ASGI layer in front of the routes:

- routing sees each path segment decoded except ``/`` and ``%`` (kept as ``%2F`` / ``%25``): the Hub protocol puts
  revisions such as ``feature/x`` in one URL segment as ``feature%2Fx``; handlers ``unquote`` their parameters;
- reading a request body may pause at most ``body_timeout`` between pieces (408), and the client must take each
  piece of a response within ``send_timeout`` (else the connection is dropped);
- an answer given before the request body was read whole closes the connection (``Connection: close``): the rest
  of the body is never read, and nothing of it can be taken for a next request;
- one access-log line per request: method, path (upload tickets masked, never the query string or a header),
  status.
"""
from __future__ import annotations

import asyncio
import re
import sys
from typing import Any, Awaitable, Callable
from urllib.parse import quote, unquote

from .errors import RequestTimeout
from .limits import Limits

TICKET_RE = re.compile(r"/lfs-upload/[^/]+")
_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) not in "%/")

if sys.version_info >= (3, 11):
    async def within(seconds: float, awaitable: Awaitable[Any]) -> Any:
        async with asyncio.timeout(seconds):
            return await awaitable
else:  # pragma: no cover - Python 3.10
    async def within(seconds: float, awaitable: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:
            raise TimeoutError() from None


class SendTimeout(Exception):
    """The client stopped reading the response."""


def routing_path(raw_path: bytes) -> str:
    """``/a/feature%2Fx/b%20c`` -> ``/a/feature%2Fx/b c``: segments decoded, ``/`` and ``%`` inside one kept."""
    return "/".join(quote(unquote(seg.decode("latin-1")), safe=_SAFE) for seg in raw_path.split(b"/"))


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


class Guard:
    def __init__(self, app: Callable, limits: Limits, log: Callable[[str], None]):
        self.app = app
        self.limits = limits
        self.log = log

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope = dict(scope, path=routing_path(scope.get("raw_path") or scope["path"].encode()))
        state = {"body_done": not _has_body(scope["headers"]), "status": None}
        limits = self.limits

        async def guarded_receive() -> dict:
            try:
                message = await within(limits.body_timeout, receive())
            except TimeoutError:
                raise RequestTimeout(f"the request body stalled for {limits.body_timeout:g} s") from None
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if not state["body_done"]:
                    message = dict(message, headers=[*message.get("headers", []), (b"connection", b"close")])
            try:
                await within(limits.send_timeout, send(message))
            except TimeoutError:
                raise SendTimeout() from None

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except SendTimeout:
            state["status"] = f"{state['status']} (client stopped reading)"
        finally:
            client = (scope.get("client") or ("-",))[0]
            path = TICKET_RE.sub("/lfs-upload/<ticket>", scope.get("raw_path", b"").decode("latin-1"))
            self.log(f'{client} "{scope["method"]} {path}" {state["status"] or "-"}')


__all__ = ["Guard", "routing_path", "within", "SendTimeout"]
