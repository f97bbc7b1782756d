"""The server's settings, in one place: batching, queue and request limits, generation caps, timeouts. Every limit
is a field of :class:`ServeSettings` (``adapterhub serve`` sets them from its options); a request over a limit
gets a clear 4xx answer (413 body size, 400 rows, 429 queue full), never a partial result."""
from __future__ import annotations

import dataclasses

from ..errors import AdapterHubError

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Sizes are bytes, times seconds unless named ``_ms``."""

    max_batch_rows: int = 64          # rows in one routed forward (one batch)
    max_wait_ms: float = 5.0          # how long a batch's first request waits for others on their way
    max_queue_rows: int = 1024        # rows waiting for a batch; past it a request gets 429 + Retry-After
    max_request_rows: int = 0         # rows of one request (0: max_batch_rows; never more: a request is one batch)
    max_body_bytes: int = 1 * MiB     # request body (413 past it)
    max_new_tokens: int = 256         # the largest max_tokens / max_new_tokens a request may ask for
    default_max_tokens: int = 16      # /v1/completions and chat when the request gives none (OpenAI's default)
    max_connections: int = 1024       # past this, new connections get 503 (uvicorn)
    keepalive_timeout: float = 5.0    # an idle kept-alive connection is closed after this
    shutdown_timeout: float = 30.0    # on SIGTERM, requests still running after this are cut

    def __post_init__(self) -> None:
        for f in ("max_batch_rows", "max_queue_rows", "max_body_bytes", "max_new_tokens", "default_max_tokens",
                  "max_connections"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AdapterHubError(f"{f} must be a positive integer, got {v!r}")
        if isinstance(self.max_request_rows, bool) or not isinstance(self.max_request_rows, int) \
                or not 0 <= self.max_request_rows <= self.max_batch_rows:
            raise AdapterHubError(f"max_request_rows must be between 0 and max_batch_rows ({self.max_batch_rows}), "
                                  f"got {self.max_request_rows!r}")
        for f in ("max_wait_ms", "keepalive_timeout", "shutdown_timeout"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise AdapterHubError(f"{f} must be a number >= 0, got {v!r}")
        if self.default_max_tokens > self.max_new_tokens:
            raise AdapterHubError(f"default_max_tokens ({self.default_max_tokens}) is above max_new_tokens "
                                  f"({self.max_new_tokens})")

    @property
    def request_rows(self) -> int:
        """The most rows one request may hold."""
        return self.max_request_rows or self.max_batch_rows

    def replace(self, **changes) -> "ServeSettings":
        return dataclasses.replace(self, **changes)


__all__ = ["ServeSettings", "MiB"]
