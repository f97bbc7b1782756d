"""Inference over a model's adapters: ``predict`` (labels, tags or text per row, mixed adapters in one batch)
and ``generate`` (one batched decode, the route held through every step). Functions over the model; the model's
methods of the same names call them."""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Sequence

import torch

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS, decode_token_tags
from . import windows
from .arguments import check_texts, positive_int

# Fast tokenizers keep padding/truncation settings as state that each call resets: two threads tokenizing with
# different settings (predict's encode vs generate's padded batch) corrupt each other's batches. All tokenizer
# calls of this module hold this lock (they are short next to a forward).
TOKENIZER_LOCK = threading.Lock()


def encode(model, texts: Sequence[str], tasks: Sequence[str], max_lengths: Sequence[int | None] | None = None):
    """Tokenize each row as its task needs (token classification: split into words), cut at its ``max_lengths``
    entry (default: the tokenizer's limit), and pad together. Returns ``(input_ids, attention_mask, word_ids per row
    or None)`` on the model's device."""
    tok = model.tokenizer
    if tok is None:
        raise AdapterHubError("this AdapterModel has no tokenizer; pass one to AdapterModel(base, tokenizer)")
    feats, word_ids = [], []
    with TOKENIZER_LOCK:
        for text, task, limit in zip(texts, tasks, max_lengths or [None] * len(texts)):
            if not isinstance(text, str):
                raise AdapterHubError(f"predict takes strings, got {type(text).__name__}")
            if task == TOKEN_CLS:
                enc = tok(text.split(), is_split_into_words=True, truncation=True, max_length=limit)
                word_ids.append(enc.word_ids())
            else:
                enc = tok(text, truncation=True, max_length=limit)
                word_ids.append(None)
            feats.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        batch = tok.pad(feats, return_tensors="pt")
    dev = model.device
    return batch["input_ids"].to(dev), batch["attention_mask"].to(dev), word_ids


def _classify(model, texts: list[str], rows: list, on_output: Callable | None = None) -> list[Any]:
    """One routed forward over a chunk (``rows``: the entry of each row); predictions scattered back to row order
    with one gather, one sync. ``on_output(res)``: sees the forward's :class:`RoutedOutput` first."""
    tasks = [e.task for e in rows]
    ids, mask, word_ids = encode(model, texts, tasks, [windows.max_length_of(model, e) for e in rows])
    res = model.forward(ids, mask, adapters=rows)
    if on_output is not None:
        on_output(res)
    width = ids.shape[1]
    per_adapter = {n: (lg.argmax(-1) if lg.dim() == 3 else lg.argmax(-1, keepdim=True).expand(-1, width))
                   for n, lg in res.logits.items()}
    pred = res.gather(per_adapter).tolist()
    masks = mask.tolist() if TOKEN_CLS in tasks else None
    side = model.tokenizer.padding_side
    out = []
    for j, (e, task) in enumerate(zip(rows, tasks)):
        labels = e.head.labels
        out.append(labels[pred[j][0]] if task == SEQ_CLS else
                   decode_token_tags(pred[j], word_ids[j], labels, attention_mask=masks[j], padding_side=side))
    return out


@torch.no_grad()
def predict(model, texts: str | Sequence[str], adapters: str | Sequence[str] | None = None, batch_size: int = 32,
            max_new_tokens: int = 32, on_output: Callable | None = None) -> list[Any]:
    """Per row: a label name (sequence classification), one tag per whitespace word (token classification), or
    generated text (causal LM). Rows of every adapter share each forward; the adapters are resolved once and held
    for the whole call (a concurrent replace or delete takes effect for later calls). Each row is cut at its
    adapter's ``max_length`` (the card's: what it was trained with); a longer token-classification text is tagged
    in windows, so every word gets a tag (see :mod:`.windows`). ``on_output(rows, res)``: called after each
    classification forward with the input row (index into ``texts``) of each of its rows (a text tagged in
    windows appears once per window) and its :class:`RoutedOutput` (e.g. for :func:`sequence_probabilities`)."""
    texts, single = check_texts(texts)
    positive_int(batch_size, "batch_size")
    positive_int(max_new_tokens, "max_new_tokens")
    was_training = model.training
    if was_training:  # a model already in eval is not walked: the walk races with another thread's add/delete
        model.eval()
    try:
        with model.using(adapters, len(texts)) as held:
            plan = windows.plan(model, texts, held)  # long token-classification texts: in windows
            texts, entries = plan.texts, plan.entries
            origin = plan.origins()
            out: list[Any] = [None] * len(texts)
            causal = [e.task == CAUSAL_LM for e in entries]
            for want_causal in (False, True):
                rows = [i for i, c in enumerate(causal) if c == want_causal]
                for s in range(0, len(rows), batch_size):
                    chunk = rows[s:s + batch_size]
                    ce, ct = [entries[i] for i in chunk], [texts[i] for i in chunk]
                    hook = None if on_output is None else functools.partial(on_output, [origin[i] for i in chunk])
                    got = generate(model, ct, ce, max_new_tokens=max_new_tokens) if want_causal else \
                        _classify(model, ct, ce, hook)
                    for i, g in zip(chunk, got):
                        out[i] = g
            out = plan.merge(out)
    finally:
        if was_training:
            model.train(True)
    return out[0] if single else out


@torch.no_grad()
def generate(model, texts: Sequence[str], adapters: str | Sequence[str] | None = None, max_new_tokens: int = 32,
             **gen_kwargs) -> list[str]:
    """Generate per row with its own adapter, in one batched decode (the route holds through all steps)."""
    if model.lm_head is None:
        raise AdapterHubError("generate needs a causal-LM base")
    texts = list(texts)
    with model.using(adapters, len(texts)) as rows:
        bad = sorted({e.name for e in rows if e.task != CAUSAL_LM})
        if bad:
            raise AdapterHubError(f"adapter(s) {bad} are not causal-lm adapters and cannot generate")
        return _decode(model, texts, lambda k: model.routed(rows, repeat=k), max_new_tokens, gen_kwargs)


@torch.no_grad()
def generate_base(model, texts: Sequence[str], max_new_tokens: int = 32, **gen_kwargs) -> list[str]:
    """Generate with the bare base model, no adapter on any row (e.g. a server's requests that name the base)."""
    if model.lm_head is None:
        raise AdapterHubError("generate needs a causal-LM base")
    return _decode(model, list(texts), lambda k: contextlib.nullcontext(), max_new_tokens, gen_kwargs)


def _decode(model, texts: list[str], route: Callable, max_new_tokens: int, gen_kwargs: dict) -> list[str]:
    """Tokenize (left padding), ``model.base.generate`` inside ``route(k)`` (``k`` sequences per row), decode."""
    tok = model.tokenizer
    with TOKENIZER_LOCK:  # padding_side as an argument: the shared tokenizer's own setting is left alone
        enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    dev = model.device
    ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
    beams = int(gen_kwargs.get("num_beams", 1) or 1)
    k = beams if beams > 1 else int(gen_kwargs.get("num_return_sequences", 1) or 1)
    gen_kwargs.setdefault("do_sample", False)
    gen_kwargs.setdefault("pad_token_id", tok.pad_token_id)
    with route(k):
        seqs = model.base.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **gen_kwargs)
    with TOKENIZER_LOCK:
        return tok.batch_decode(seqs[:, ids.shape[1]:], skip_special_tokens=True)


def sequence_probabilities(res) -> dict[int, list[float]]:
    """Softmax over the labels of each sequence-classification row of one routed forward (a
    :class:`RoutedOutput`): batch row -> probabilities, in the order of its head's labels."""
    out: dict[int, list[float]] = {}
    for name, rows in res.rows.items():
        if res.entries[name].task != SEQ_CLS:
            continue
        probs = torch.softmax(res.logits[name].float(), dim=-1).tolist()
        out.update(zip(rows.tolist(), probs))
    return out
