"""The HTTP/1.1 connection: uvicorn's httptools (llhttp) protocol, which refuses conflicting framing (two
``Content-Length`` headers, ``Content-Length`` with ``Transfer-Encoding``), bad versions and garbage, plus what it
leaves to us:

- the request head is capped: request line (414), header bytes and header count (431), counted as bytes arrive,
  so an endless header cannot grow memory;
- ``Transfer-Encoding`` other than exactly ``chunked`` is refused (501);
- a request head must arrive within ``head_timeout`` of connecting or of the previous response (408; an idle
  connection is closed quietly), so idle or trickling connections cannot hold a slot of ``max_connections``;
- every refusal is a short JSON answer with ``Connection: close``;
- closing while the client is still sending (a refused head, a body answered before it was read: 401, 413...) is a
  *lingering* close: the answer is followed by a FIN, what still arrives is read and dropped for at most
  ``linger_timeout``, then the socket closes. Closing at once would make the kernel reset the connection and the
  client would never read the answer.

Limits come from ``config.hub_limits`` (a :class:`~.limits.Limits`), set by :mod:`.runner`.
"""
from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import Limits

REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 505: "HTTP Version Not Supported"}


class HeadRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def refusal_for(exc: BaseException | None) -> HeadRefused:
    """The answer to a request the parser rejected."""
    cause = exc.__cause__ or exc.__context__ if exc is not None else None
    if isinstance(cause, HeadRefused):
        return cause
    text = str(exc) if exc is not None else ""
    if "HTTP version" in text:
        return HeadRefused(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    return HeadRefused(400, f"malformed HTTP request ({text[:120] or 'unparseable'})")


def error_response(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    printable = "".join(c if " " <= c <= "~" else " " for c in message)
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-error-message: {printable}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class LingeringTransport:
    """The transport uvicorn sees: :meth:`close` lets the protocol linger when the client may still be sending."""

    def __init__(self, transport: asyncio.Transport, protocol: "HubHttpProtocol"):
        self.raw = transport
        self._protocol = protocol
        self._closing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def is_closing(self) -> bool:
        return self._closing or self.raw.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._protocol.close_transport()


class HubHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None):
        super().__init__(config, server_state, app_state, _loop)
        self.limits: Limits = getattr(config, "hub_limits", None) or Limits()
        self._max_head = self.limits.max_request_line + self.limits.max_header_bytes + 1024
        self._in_head = True  # between requests, or inside a request head
        self._head_seen = 0  # head bytes received in feeds that began inside the head
        self._header_bytes = 0
        self._header_count = 0
        self._boundaries = 0  # message begins, head ends, message ends seen so far
        self._head_started = False  # bytes of a next request arrived (else the connection is merely idle)
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._refusing = False
        self._shutting_down = False
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- connection ----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        self._shutting_down = True
        super().shutdown()

    def eof_received(self) -> bool | None:
        if self._lingering:
            self.transport.raw.close()
        return super().eof_received()

    def close_transport(self) -> None:
        raw = self.transport.raw
        client_may_be_sending = self._refusing or (self.cycle is not None and self.cycle.more_body)
        if self._shutting_down or not client_may_be_sending or not raw.can_write_eof() or raw.is_closing():
            raw.close()
            return
        self._lingering = True
        self._cancel_head_timer()
        raw.write_eof()  # after what is still buffered: the answer
        raw.resume_reading()
        self._linger_timer = self.loop.call_later(self.limits.linger_timeout, raw.close)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # dropped: the answer is sent, the connection is closing
        boundaries = self._boundaries
        if self._in_head:
            self._head_started = True
        super().data_received(data)
        if self._in_head and boundaries == self._boundaries and self.transport is not None \
                and not self.transport.is_closing():
            self._head_seen += len(data)
            if self._head_seen > self._max_head:
                status = 414 if len(getattr(self, "url", b"")) > self.limits.max_request_line else 431
                self._refuse_now(HeadRefused(status, "request head too large"))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head_started = False
        self._arm_head_timer()

    # -- parser callbacks ----------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._boundaries += 1
        self._in_head = True
        self._head_seen = self._header_bytes = self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_request_line:
            raise HeadRefused(414, f"request line longer than {self.limits.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_bytes > self.limits.max_header_bytes or self._header_count > self.limits.max_headers:
            raise HeadRefused(431, f"request headers over {self.limits.max_headers} lines or "
                                   f"{self.limits.max_header_bytes} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._boundaries += 1
        self._cancel_head_timer()
        codings = [v.strip().lower() for n, v in self.headers if n == b"transfer-encoding"]
        if codings and codings != [b"chunked"]:
            raise HeadRefused(501, "only 'Transfer-Encoding: chunked' is supported")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._boundaries += 1

    # -- refusals ------------------------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn while it handles the parser's error: answer with the status that fits."""
        self._refuse_now(refusal_for(sys.exc_info()[1]))

    def _refuse_now(self, refusal: HeadRefused) -> None:
        self._cancel_head_timer()
        if self.transport is None or self.transport.is_closing():
            return
        self._refusing = True
        self.transport.write(error_response(refusal.status, refusal.message))
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        if self.transport is not None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._on_head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _on_head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a request is being answered: not idle
        elif self._in_head and self._head_started:
            self._refuse_now(HeadRefused(408, f"no complete request head within {self.limits.head_timeout:g} s"))
        elif self._in_head and self.transport is not None:
            self.transport.close()  # idle: close quietly (a 408 could be read as the answer to a next request)


__all__ = ["HubHttpProtocol", "HeadRefused", "error_response"]
