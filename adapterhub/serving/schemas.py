"""Request bodies, parsed strictly (pydantic, strict types, unknown fields refused): a body of the wrong shape gets a
422 naming the field, a value out of range a 400 naming it. OpenAI parameters this server does not implement are
accepted only at their neutral value (``n: 1``, ``seed: null``, ...), never silently ignored."""
from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from .errors import BadRequest, Invalid, TooLarge
from .settings import ServeSettings

B = TypeVar("B", bound=BaseModel)
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PredictBody(Body):
    inputs: list[str]
    adapter: str | None = None
    adapters: list[str] | None = None
    probabilities: bool = False
    max_new_tokens: int | None = None


class StreamOptions(Body):
    include_usage: bool = False


class Sampling(Body):
    """What completions and chat completions share."""

    model: str
    max_tokens: int | None = None
    temperature: float | int | None = None
    top_p: float | int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # accepted at their neutral value only (see NEUTRAL)
    n: int | None = None
    seed: int | None = None
    presence_penalty: float | int | None = None
    frequency_penalty: float | int | None = None
    logit_bias: dict[str, Any] | None = None


class CompletionBody(Sampling):
    prompt: str | list[str]
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None


class TextPart(Body):
    type: Literal["text"]
    text: str


class Message(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class ChatBody(Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


class LoadBody(Body):
    source: str
    name: str | None = None
    version: int | str | None = None
    revision: str | None = None
    replace: bool = False
    pin: bool = False


#: field -> the values accepted (the neutral ones: what the field means when it is left out)
NEUTRAL: dict[str, tuple] = {
    "n": (None, 1), "seed": (None,), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
    "logit_bias": (None, {}), "echo": (None, False), "best_of": (None, 1), "suffix": (None, ""),
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "response_format": (None, {"type": "text"}),
    "tools": (None, []), "tool_choice": (None, "none"), "parallel_tool_calls": (None, False, True),
}


def check_neutral(body: BaseModel) -> None:
    for field, accepted in NEUTRAL.items():
        value = getattr(body, field, None)
        if value not in accepted:
            raise BadRequest(f"{field}={json.dumps(value)} is not supported by this server (accepted: "
                             f"{', '.join(json.dumps(a) for a in accepted)})", param=field)


def parse(cls: type[B], data: Any) -> B:
    """``data`` as ``cls``, or 422 naming the first field at fault."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        def where(err: dict) -> list[str]:  # union members ("str", "list[str]") are not fields
            return [str(p) for p in err["loc"] if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))]

        err = max(e.errors(include_url=False), key=lambda err: len(where(err)))  # the most specific one
        param = ".".join(where(err)) or None
        raise Invalid(f"{param}: {err['msg']}" if param else "the request body must be a JSON object",
                      param=param) from None


def check_range(name: str, value: float | int | None, low: float, high: float, low_open: bool = False) -> None:
    if value is None:
        return
    if value < low or value > high or (low_open and value == low):
        raise BadRequest(f"{name} must be {'>' if low_open else '>='} {low:g} and <= {high:g}, got {value!r}",
                         param=name)


def check_rows(name: str, n: int, settings: ServeSettings) -> None:
    if n < 1:
        raise BadRequest(f"{name} is empty: give at least one", param=name)
    if n > settings.request_rows:
        raise BadRequest(f"{name} has {n} rows; this server takes at most {settings.request_rows} per request "
                         "(split it)", param=name)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 past ``limit`` bytes (announced or streamed), 400 when it is not JSON."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise TooLarge(f"request body of {size} bytes is larger than the limit of {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body larger than the limit of {limit} bytes")
    try:
        return json.loads(bytes(buf))
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"the request body is not valid JSON ({str(e)[:200]})") from None


__all__ = ["PredictBody", "CompletionBody", "ChatBody", "LoadBody", "parse", "check_neutral", "check_range",
           "check_rows", "read_json", "NEUTRAL"]
