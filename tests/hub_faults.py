"""Test-only fault injection for the hub server (nothing of this lives in the product code).

:class:`Stall` wraps a running :class:`~adapterhub.hub.server.HubServer`'s ASGI app (``monkeypatch.setattr(srv,
"app", Stall(srv.app, ...))``): the first matching request stops moving, mid-transfer, until the test releases it,
so a test can kill a client at that moment. ``hub_crash_server.py`` (beside this file) kills a server process
at a chosen point instead.
"""
from __future__ import annotations

import asyncio
import threading
import time


class Stall:
    """Stall the first request whose path contains ``path_part`` (and whose method is in ``methods``):

    - ``direction="request"``: once ``after`` bytes of its request body have arrived, stop reading the body;
    - ``direction="response"``: before the first piece of the response body with more than ``after`` bytes sent
      so far, stop sending.

    ``stalled`` is set when the stall begins; the request goes on when ``release`` is set (at most 60 s)."""

    def __init__(self, app, path_part: str, direction: str, after: int = 0, methods=("GET", "PUT", "POST")):
        self.app = app
        self.path_part = path_part
        self.direction = direction
        self.after = after
        self.methods = methods
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._fired = False

    async def _hold(self) -> None:
        self._fired = True
        self.stalled.set()
        t0 = time.monotonic()
        while not self.release.is_set() and time.monotonic() - t0 < 60:
            await asyncio.sleep(0.02)

    async def __call__(self, scope, receive, send):
        path = scope.get("raw_path", b"").decode("latin-1") if scope["type"] == "http" else ""
        if self._fired or self.path_part not in path or scope.get("method") not in self.methods:
            return await self.app(scope, receive, send)
        seen = 0

        async def slow_receive():
            nonlocal seen
            message = await receive()
            if self.direction == "request":
                seen += len(message.get("body", b""))
            if self.direction == "request" and not self._fired and seen >= self.after and seen > 0:
                await self._hold()
            return message

        async def slow_send(message):
            nonlocal seen
            if self.direction == "response" and message["type"] == "http.response.body" and not self._fired \
                    and seen >= self.after:
                await self._hold()
            seen += len(message.get("body", b"")) if self.direction == "response" else 0
            await send(message)

        await self.app(scope, slow_receive, slow_send)
