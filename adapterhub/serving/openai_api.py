"""The OpenAI-compatible endpoints: ``POST /v1/completions`` and ``POST /v1/chat/completions`` (``model`` = a
causal-LM adapter, or the base model's id for the bare base; ``stream: true`` answers with server-sent events),
``GET /v1/models`` and ``GET /v1/models/{model}``.

Differences from OpenAI, on purpose: ``temperature`` defaults to 0 (greedy, as ``predict``), and parameters this
server does not implement are refused unless neutral (see :data:`~.schemas.NEUTRAL`). A chat is rendered with the
tokenizer's chat template, or as ``role: content`` lines ending in ``assistant:`` when it has none."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..model.predicting import TOKENIZER_LOCK
from .checks import check_prompts
from .context import ServeContext, label, serve_context
from .engine import GenerateJob
from .errors import BadRequest, ServeError, error_body
from .schemas import ChatBody, CompletionBody, Sampling, check_neutral, check_range, check_rows, parse, read_json

MAX_STOPS = 4


def _job(c: ServeContext, request: Request, body: Sampling, prompts: list[str], max_tokens: int | None,
         param: str) -> tuple[GenerateJob, list[int]]:
    check_neutral(body)
    adapter = None if body.model == c.model.base_id else body.model
    if adapter is None and c.model.lm_head is None:
        raise BadRequest(f"the base {body.model!r} has no LM head and cannot generate", param="model")
    if adapter is not None:
        c.catalog.require_causal(adapter)
    label(request, [adapter])
    max_tokens = c.settings.default_max_tokens if max_tokens is None else max_tokens
    check_range("max_tokens", max_tokens, 1, c.settings.max_new_tokens)
    check_range("temperature", body.temperature, 0, 2)
    check_range("top_p", body.top_p, 0, 1, low_open=True)
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise BadRequest(f"stop takes at most {MAX_STOPS} non-empty strings", param="stop")
    counts = check_prompts(c.model, prompts, max_tokens, param)
    job = GenerateJob(prompts, adapter, max_tokens, float(body.temperature or 0),
                      float(1 if body.top_p is None else body.top_p), stops, bool(body.stream))
    return job, counts


async def completions(request: Request) -> Response:
    c = serve_context(request)
    with c.scheduler.arriving():
        body = parse(CompletionBody, await read_json(request, c.settings.max_body_bytes))
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        check_rows("prompt", len(prompts), c.settings)
        job, counts = _job(c, request, body, prompts, body.max_tokens, "prompt")
        c.scheduler.submit(job)
    return await _answer(job, body, "text_completion", counts)


def render_chat(tokenizer, body: ChatBody) -> str:
    msgs = [{"role": "system" if m.role == "developer" else m.role,
             "content": m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)}
            for m in body.messages]
    if not getattr(tokenizer, "chat_template", None):
        return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
    try:
        with TOKENIZER_LOCK:
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # noqa: BLE001 - the template's own errors (jinja) are about these messages
        raise BadRequest(f"the chat template refused these messages: {e}", param="messages") from None


async def chat_completions(request: Request) -> Response:
    c = serve_context(request)
    with c.scheduler.arriving():
        body = parse(ChatBody, await read_json(request, c.settings.max_body_bytes))
        if not body.messages:
            raise BadRequest("messages is empty", param="messages")
        if body.max_tokens is not None and body.max_completion_tokens is not None:
            raise BadRequest("give max_tokens or max_completion_tokens, not both", param="max_completion_tokens")
        prompt = render_chat(c.model.tokenizer, body)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        job, counts = _job(c, request, body, [prompt], max_tokens, "messages")
        c.scheduler.submit(job)
    return await _answer(job, body, "chat.completion", counts)


# -- answers -------------------------------------------------------------------------------------------------
class _Shape:
    """The JSON of one endpoint's answers and stream chunks."""

    def __init__(self, kind: str, model: str):
        self.chat = kind == "chat.completion"
        self.head = {"id": ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()),
                     "model": model}
        self.kind = kind

    def choice(self, i: int, text: str | None, finish: str | None, final: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
        if final:
            return {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish}
        return {"index": i, "delta": {} if text is None else {"content": text}, "logprobs": None,
                "finish_reason": finish}

    def chunk(self, choices: list[dict], usage: dict | None = None) -> bytes:
        obj = {**self.head, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "choices": choices}
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _usage(counts: list[int], outputs) -> dict[str, int]:
    p, n = sum(counts), sum(o.completion_tokens for o in outputs)
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


async def _answer(job: GenerateJob, body: Sampling, kind: str, counts: list[int]) -> Response:
    shape = _Shape(kind, body.model)
    if job.events is not None:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_stream(job, shape, counts, usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    outputs = await job.future
    return JSONResponse({**shape.head, "object": kind, "usage": _usage(counts, outputs),
                         "choices": [shape.choice(i, o.text, o.finish_reason, final=True)
                                     for i, o in enumerate(outputs)]})


async def _stream(job: GenerateJob, shape: _Shape, counts: list[int], usage: bool) -> AsyncIterator[bytes]:
    try:
        if shape.chat:
            yield shape.chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}])
        while (event := await job.events.get()) is not None:
            what, i, payload = event
            yield shape.chunk([shape.choice(i, payload, None)] if what == "delta"
                              else [shape.choice(i, None, payload.finish_reason)])
        exc = job.future.exception()
        if exc is not None:
            e = exc if isinstance(exc, ServeError) else ServeError(str(exc))
            yield b"data: " + json.dumps(error_body(e.status, e.message, e.kind, e.param)).encode() + b"\n\n"
        elif usage:
            yield shape.chunk([], _usage(counts, job.future.result()))
        yield b"data: [DONE]\n\n"
    finally:
        job.cancelled = True  # the client went away (or the stream ended): nothing more to compute for it


# -- models --------------------------------------------------------------------------------------------------
async def models(request: Request) -> Response:
    data = await run_in_threadpool(serve_context(request).catalog.describe)
    return JSONResponse({"object": "list", "data": data})


async def model(request: Request) -> Response:
    c = serve_context(request)
    return JSONResponse(await run_in_threadpool(c.catalog.describe_one, request.path_params["model"]))


ROUTES = [
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model:path}", model, methods=["GET"]),
]

__all__ = ["ROUTES", "render_chat"]
