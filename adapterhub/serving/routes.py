"""``/v1/predict``, the adapter management endpoints (``/v1/adapters``), ``/health``, ``/ready`` and ``/metrics``.
The OpenAI-compatible endpoints live in :mod:`.openai_api`."""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .checks import check_inputs
from .context import ServeContext, label, serve_context
from .engine import PredictJob
from .errors import BadRequest, Unavailable
from .schemas import LoadBody, PredictBody, check_range, check_rows, parse, read_json


def check_width(c: ServeContext, names: set[str], param: str) -> None:
    """A request needs all its adapters loaded at once: no more distinct ones than the model may hold."""
    limit = c.model.residency.max_resident
    if limit is not None and len(names) > limit:
        raise BadRequest(f"the request names {len(names)} distinct adapters; this server holds at most {limit} at "
                         "once (max_resident): split it", param=param)


async def predict(request: Request) -> Response:
    c = serve_context(request)
    with c.scheduler.arriving():
        body = parse(PredictBody, await read_json(request, c.settings.max_body_bytes))
        check_rows("inputs", len(body.inputs), c.settings)
        if (body.adapter is None) == (body.adapters is None):
            raise BadRequest('give "adapter" (one adapter for every row) or "adapters" (one per row)'
                             + (", not both" if body.adapter is not None else ""), param="adapter")
        param = "adapter" if body.adapter is not None else "adapters"
        adapters = [body.adapter] * len(body.inputs) if body.adapter is not None else body.adapters
        if len(adapters) != len(body.inputs):
            raise BadRequest(f"adapters has {len(adapters)} names but inputs has {len(body.inputs)} rows: give one "
                             "adapter per row", param="adapters")
        c.catalog.require(adapters, param)
        label(request, adapters)
        check_width(c, set(adapters), param)
        max_new = body.max_new_tokens if body.max_new_tokens is not None else c.settings.default_max_tokens
        check_range("max_new_tokens", max_new, 1, c.settings.max_new_tokens)
        tasks = {n: c.catalog.task(n) for n in set(adapters)}
        check_inputs(c.model, body.inputs, [tasks[n] for n in adapters], max_new)
        job = PredictJob(body.inputs, adapters, body.probabilities, max_new)
        c.scheduler.submit(job)
    return JSONResponse({"predictions": await job.future})


# -- adapter management --------------------------------------------------------------------------------------
async def list_adapters(request: Request) -> Response:
    c = serve_context(request)
    resident = [c.catalog.summary(n) for n in sorted(c.model.snapshot())]
    stored = await run_in_threadpool(lambda: c.catalog.store.names() if c.catalog.store is not None else [])
    return JSONResponse({"resident": resident, "max_resident": c.model.residency.max_resident, "stored": stored})


async def load_adapter(request: Request) -> Response:
    c = serve_context(request)
    body = parse(LoadBody, await read_json(request, c.settings.max_body_bytes))
    if body.name is not None:
        label(request, [body.name])
    result = await run_in_threadpool(c.catalog.load, body.source, body.name, body.version, body.replace, body.pin,
                                     body.revision)
    return JSONResponse(result)


async def delete_adapter(request: Request) -> Response:
    c = serve_context(request)
    name = request.path_params["name"]
    return JSONResponse(await run_in_threadpool(c.catalog.delete, name))


async def pin(request: Request) -> Response:
    c = serve_context(request)
    return JSONResponse(await run_in_threadpool(c.catalog.pin, request.path_params["name"]))


async def unpin(request: Request) -> Response:
    c = serve_context(request)
    return JSONResponse(await run_in_threadpool(c.catalog.unpin, request.path_params["name"]))


# -- probes --------------------------------------------------------------------------------------------------
async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    c = serve_context(request)
    if c.draining():
        raise Unavailable("the server is shutting down")
    return JSONResponse({"status": "ready", "base": c.model.base_id, "resident": len(c.model.adapters)})


async def metrics(request: Request) -> Response:
    data, content_type = serve_context(request).metrics.render()
    return Response(data, media_type=content_type)


ROUTES = [
    Route("/v1/predict", predict, methods=["POST"]),
    Route("/v1/adapters", list_adapters, methods=["GET"]),
    Route("/v1/adapters", load_adapter, methods=["POST"]),
    Route("/v1/adapters/{name}", delete_adapter, methods=["DELETE"]),
    Route("/v1/adapters/{name}/pin", pin, methods=["POST"]),
    Route("/v1/adapters/{name}/unpin", unpin, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

__all__ = ["ROUTES", "check_width"]
