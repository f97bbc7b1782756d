"""Errors of the serving layer and the one mapping to HTTP answers. Every answer is JSON in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``) so the official ``openai`` client raises its own typed
errors; the message names the field or adapter at fault. Client input gets a 4xx; a 500 is only for a bug."""
from __future__ import annotations

import logging
import traceback

from starlette.responses import JSONResponse

from ..errors import AdapterHubError, AdapterNameError, BaseMismatchError

log = logging.getLogger("adapterhub.serving")


class ServeError(AdapterHubError):
    """Base class: ``status`` (HTTP), ``kind`` (OpenAI's error ``type``), ``param`` (the field at fault, if any)."""

    status = 500
    kind = "server_error"

    def __init__(self, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.param, self.headers = message, param, headers or {}


class BadRequest(ServeError):
    status, kind = 400, "invalid_request_error"


class Unauthorized(ServeError):
    status, kind = 401, "authentication_error"


class NotFound(ServeError):
    status, kind = 404, "not_found_error"


class TooLarge(ServeError):
    status, kind = 413, "invalid_request_error"


class Invalid(ServeError):
    """A field of the wrong type, a missing or unknown field (422)."""

    status, kind = 422, "invalid_request_error"


class Overloaded(ServeError):
    """The queue is full (429, with ``Retry-After``)."""

    status, kind = 429, "rate_limit_error"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class Unavailable(ServeError):
    """The server cannot serve this now: shutting down, or no room to load an adapter (503)."""

    status, kind = 503, "server_error"


class Internal(ServeError):
    status, kind = 500, "server_error"


def as_serve_error(exc: BaseException) -> ServeError:
    """What a failure inside a batch means for its requests: every client error was refused before queueing,
    so an unknown adapter here was deleted meanwhile (404), a stored adapter made for another base cannot be
    served here (400), another model error is the server's state (503: no room to load, a bad stored file),
    anything else a bug (500, logged with its traceback)."""
    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, AdapterNameError):
        return NotFound(str(exc), param="adapter")
    if isinstance(exc, BaseMismatchError):
        return BadRequest(str(exc), param="adapter")
    if isinstance(exc, AdapterHubError):
        return Unavailable(str(exc))
    log.error("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return Internal(f"internal error: {type(exc).__name__}")


def error_body(status: int, message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def error_response(exc: ServeError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message, exc.kind, exc.param), status_code=exc.status,
                        headers=exc.headers)


__all__ = ["ServeError", "BadRequest", "Unauthorized", "NotFound", "TooLarge", "Invalid", "Overloaded",
           "Unavailable", "Internal", "as_serve_error", "error_body", "error_response"]
