"""The HTTP layer: a Starlette app (routes of :mod:`.routes` and :mod:`.openai_api`) behind :class:`Gate` (bearer
token, per-request metrics). Here is the one mapping of errors to HTTP answers: serving errors get their status,
model errors what :func:`~.errors.as_serve_error` says, routing errors 404/405; a 500 is only for a bug."""
from __future__ import annotations

import hmac
import time
from typing import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import AdapterHubError
from . import openai_api, routes
from .context import LABEL_KEY, ServeContext
from .errors import ServeError, Unauthorized, as_serve_error, error_body, error_response

OPEN_PATHS = frozenset({"/health"})  # answered without the bearer token


async def _serve_error(request: Request, exc: Exception) -> Response:
    return error_response(as_serve_error(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"no route for {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
    return JSONResponse(error_body(exc.status_code, message, "invalid_request_error"), status_code=exc.status_code,
                        headers=exc.headers)


def create_app(context: ServeContext) -> "Gate":
    app = Starlette(routes=routes.ROUTES + openai_api.ROUTES, exception_handlers={
        ServeError: _serve_error, AdapterHubError: _serve_error, HTTPException: _http_error,
        Exception: _serve_error})
    app.state.serve = context
    return Gate(app, context)


class Gate:
    """Checks the bearer token (all but :data:`OPEN_PATHS`) and records each request's metrics: endpoint (the
    route's path template), adapter label (set by the handler), status and latency (streams: to their end)."""

    def __init__(self, app: Callable, context: ServeContext):
        self.app, self.context = app, context
        token = context.token
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        labels = {"adapter": "-"}
        scope[LABEL_KEY] = labels
        status = [500]
        t0 = time.perf_counter()

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self._expected is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                exc = Unauthorized("missing or wrong bearer token (Authorization: Bearer <token>)",
                                   headers={"WWW-Authenticate": "Bearer"})
                await error_response(exc)(scope, receive, send_status)
                return
            await self.app(scope, receive, send_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "-")
            self.context.metrics.observe_request(endpoint, labels["adapter"], status[0], time.perf_counter() - t0)

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False


__all__ = ["create_app", "Gate", "OPEN_PATHS"]
