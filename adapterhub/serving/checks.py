"""Checks of texts against the model, before a request is queued: a row the model cannot take (no tokens, a prompt
longer than the context leaves room for) gets a 400 naming it here, so it never reaches a batch (where it would
fail the others)."""
from __future__ import annotations

from ..heads import CAUSAL_LM
from ..model.predicting import TOKENIZER_LOCK
from .errors import BadRequest


def token_counts(model, texts: list[str]) -> list[int]:
    """Tokens of each text as ``generate`` / ``predict`` encode it (special tokens included, no truncation)."""
    with TOKENIZER_LOCK:
        return [len(ids) for ids in model.tokenizer(list(texts))["input_ids"]]


def context(model) -> int | None:
    """The most positions the base takes (None: no limit it states)."""
    return getattr(model.base.config, "max_position_embeddings", None)


def check_prompts(model, prompts: list[str], max_tokens: int, param: str = "prompt") -> list[int]:
    """Token counts of the prompts; 400 when one has no tokens or, with ``max_tokens``, passes the context."""
    counts, limit = token_counts(model, prompts), context(model)
    for i, n in enumerate(counts):
        where = param if len(counts) == 1 else f"{param}.{i}"
        if n == 0:
            raise BadRequest(f"{where} has no tokens: give some text", param=where)
        if limit is not None and n + max_tokens > limit:
            raise BadRequest(f"{where} has {n} tokens and max_tokens is {max_tokens}: more than this model's "
                             f"context of {limit} tokens", param="max_tokens")
    return counts


def check_inputs(model, texts: list[str], tasks: list[str], max_new_tokens: int) -> None:
    """``/v1/predict`` rows: each has words, and a causal-LM row with its ``max_new_tokens`` fits the context.
    Classification rows need no limit here: ``predict`` cuts them at their adapter's ``max_length`` (as training
    did) and tags long token-classification texts in windows."""
    counts, limit = token_counts(model, texts), context(model)
    for i, (text, n, task) in enumerate(zip(texts, counts, tasks)):
        where = f"inputs.{i}"
        if n == 0 or not text.split():
            raise BadRequest(f"{where} is empty: give some words", param=where)
        if limit is not None and task == CAUSAL_LM and n + max_new_tokens > limit:
            raise BadRequest(f"{where} has {n} tokens and max_new_tokens is {max_new_tokens}: more than this "
                             f"model's context of {limit} tokens", param=where)


__all__ = ["check_prompts", "check_inputs", "token_counts", "context"]
