"""Raw rows -> normalised examples, by task: ``{"text", "label"}``, ``{"tokens", "tags"}`` or
``{"prompt", "completion"}`` (see :mod:`adapterhub.data.sources`)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, SEQ_CLS, TASKS, TOKEN_CLS

_TASK_ALIASES = {
    SEQ_CLS: SEQ_CLS, "classification": SEQ_CLS, "text-classification": SEQ_CLS, "seq-cls": SEQ_CLS,
    TOKEN_CLS: TOKEN_CLS, "token-cls": TOKEN_CLS, "ner": TOKEN_CLS, "tagging": TOKEN_CLS,
    CAUSAL_LM: CAUSAL_LM, "lm": CAUSAL_LM, "causal_lm": CAUSAL_LM, "causallm": CAUSAL_LM,
    "text-generation": CAUSAL_LM, "generation": CAUSAL_LM,
}


class Example(dict):
    """A normalised example (a plain dict of its fields) that remembers where it was read (``where``: the file and
    line, or the data set row), so later errors (an unknown label after shuffling and splitting) can name it."""

    __slots__ = ("where",)

    def __init__(self, fields: dict, where: str | None = None):
        super().__init__(fields)
        self.where = where


def where_of(example: object, index: int) -> str:
    """``file:line`` of an example read from a file, else ``example <index>``."""
    return getattr(example, "where", None) or f"example {index}"


def normalize_task(task: str) -> str:
    """Map a task name or alias (``classification``, ``ner``, ``causal_lm``, ...) to one of
    :data:`adapterhub.heads.TASKS`."""
    key = str(task).strip().lower().replace("_", "-")
    if key in _TASK_ALIASES:
        return _TASK_ALIASES[key]
    if str(task) in _TASK_ALIASES:
        return _TASK_ALIASES[str(task)]
    raise AdapterHubError(f"unknown task {task!r}; known: {list(TASKS)} (aliases: classification, ner, causal_lm)")


def task_from_row(row: dict) -> str:
    if "tokens" in row and "tags" in row:
        return TOKEN_CLS
    if "prompt" in row and "completion" in row:
        return CAUSAL_LM
    return SEQ_CLS


def _as_text(value: Any, where: str, field: str) -> str:
    if value is None:
        raise AdapterHubError(f"{where}: field {field!r} is empty (None)")
    if isinstance(value, (list, dict)):
        raise AdapterHubError(f"{where}: field {field!r} must be text, got {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def _get(row: dict, field: str, where: str) -> Any:
    if field not in row:
        raise AdapterHubError(f"{where}: no field {field!r}; the row has fields {sorted(map(str, row))}")
    return row[field]


def _as_str_list(value: Any, where: str, field: str) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, (list, tuple)):
        raise AdapterHubError(f"{where}: field {field!r} must be a list of strings, got {type(value).__name__}")
    return [_as_text(v, where, field) for v in value]


def normalizer(task: str, source: dict) -> Callable[[dict, str], dict]:
    """A function mapping one raw row (+ where it came from, for errors) to a normalised example."""
    if task == SEQ_CLS:
        tf, lf = source.get("text_field", "text"), source.get("label_field", "label")

        def norm(row, where):
            text = _as_text(_get(row, tf, where), where, tf)
            label = _as_text(_get(row, lf, where), where, lf).strip()
            if not label:
                raise AdapterHubError(f"{where}: label field {lf!r} is empty")
            return {"text": text, "label": label}
    elif task == TOKEN_CLS:
        tkf, tgf = source.get("tokens_field", "tokens"), source.get("tags_field", "tags")

        def norm(row, where):
            toks = _as_str_list(_get(row, tkf, where), where, tkf)
            tags = _as_str_list(_get(row, tgf, where), where, tgf)
            if not toks:
                raise AdapterHubError(f"{where}: field {tkf!r} holds no tokens")
            if len(toks) != len(tags):
                raise AdapterHubError(f"{where}: {len(toks)} tokens in {tkf!r} but {len(tags)} tags in {tgf!r}")
            return {"tokens": toks, "tags": tags}
    else:
        pf, cf = source.get("prompt_field", "prompt"), source.get("completion_field", "completion")

        def norm(row, where):
            return {"prompt": _as_text(_get(row, pf, where), where, pf),
                    "completion": _as_text(_get(row, cf, where), where, cf)}
    return norm


def take(rows: Iterable[tuple[str, dict]], norm, limit: int | None) -> list[dict]:
    out = []
    if limit == 0:
        return out
    for where, row in rows:
        out.append(Example(norm(row, where), where))
        if limit is not None and len(out) >= limit:
            break
    return out
