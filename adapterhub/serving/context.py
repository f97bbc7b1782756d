"""What every request handler of one server shares: the model, settings, catalog, scheduler and metrics, and
the request's metrics label (which adapter it is for)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from starlette.requests import Request

from .catalog import Catalog
from .metrics import ServeMetrics
from .scheduler import Scheduler
from .settings import ServeSettings

LABEL_KEY = "adapterhub.labels"  # scope key: {"adapter": ...}, set by the handler, read by the gate


@dataclasses.dataclass
class ServeContext:
    model: Any
    settings: ServeSettings
    catalog: Catalog
    scheduler: Scheduler
    metrics: ServeMetrics
    token: str | None = None
    draining: Callable[[], bool] = lambda: False


def serve_context(request: Request) -> ServeContext:
    return request.app.state.serve


def label(request: Request, names: Iterable[str | None]) -> None:
    """The request's ``adapter`` metrics label: its one adapter (``base``: the bare base), or ``mixed``."""
    distinct = set(names)
    labels = request.scope.get(LABEL_KEY)
    if labels is not None and distinct:
        labels["adapter"] = "mixed" if len(distinct) > 1 else (next(iter(distinct)) or "base")


__all__ = ["ServeContext", "serve_context", "label", "LABEL_KEY"]
