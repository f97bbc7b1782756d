"""The HTTP layer: a Starlette app over :class:`~.storage.HubStorage`, behind :class:`~.guard.Guard`. Routes live
in :mod:`.routes_read`, :mod:`.routes_write` and :mod:`.routes_lfs`. Here is the one mapping of errors to HTTP
answers: domain errors (:mod:`.errors`) and bad names get their status; a 500 is only for a bug, logged with its
traceback.
"""
from __future__ import annotations

import traceback

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ...errors import HubError, RepoIdError
from . import routes_lfs, routes_read, routes_write
from .context import HubContext, error_json, hub
from .errors import ServerError
from .guard import Guard


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServerError)
    return error_json(exc.status, exc.message, exc.code)


async def _bad_name(request: Request, exc: Exception) -> Response:
    return error_json(400, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"no route for {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
    return error_json(exc.status_code, message)


async def _gone(request: Request, exc: Exception) -> Response:
    hub(request).log(f"client went away during {request.method} {request.url.path}: request dropped, nothing stored")
    return Response(status_code=400)


async def _bug(request: Request, exc: Exception) -> Response:
    hub(request).log("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return error_json(500, f"internal error: {type(exc).__name__}")


def create_app(context: HubContext) -> Guard:
    app = Starlette(routes=routes_write.ROUTES + routes_lfs.ROUTES + routes_read.ROUTES, exception_handlers={
        ServerError: _domain_error, RepoIdError: _bad_name, HubError: _bad_name, HTTPException: _http_error,
        ClientDisconnect: _gone, Exception: _bug})
    app.state.hub = context
    return Guard(app, context.limits, context.log)


__all__ = ["create_app", "HubContext"]
