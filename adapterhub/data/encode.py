"""Task-aware tokenisation of normalised examples with a Hugging Face (fast) tokenizer, and batching.

Features come back as a list parallel to the examples (same order, same length):

* classification: ``{"input_ids", "attention_mask", "label": int}``
* token classification: ``{"input_ids", "attention_mask", "labels": [int | -100], "word_ids": [int | None],
  "n_words": int}``: the tag id sits on the first sub-token of each word; other sub-tokens, special
  tokens and padding are -100. Words cut off by ``max_length`` have no label (see :func:`decode_token_tags`).
* causal LM: ``{"input_ids", "attention_mask", "labels"}``: input = prompt + completion (+ eos); labels
  are the input ids with -100 on the prompt (the loss is on the completion only; the head shifts).

:func:`collate` pads a list of features into tensors, on the tokenizer's ``padding_side``; given per-row task names
it groups the labels per task, as :meth:`AdapterModel.forward` takes them (training batches). Tags decode back to
words with :func:`adapterhub.heads.decode_token_tags` (re-exported here).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS, decode_token_tags  # noqa: F401 - the one tag decoder
from .normalize import where_of
from .sources import normalize_task

IGNORE_INDEX = -100
_DEFAULT_MAX_LENGTH = 512


def _max_length(tokenizer, max_length: int | None) -> int:
    if max_length is None:
        m = getattr(tokenizer, "model_max_length", None)
        return int(m) if isinstance(m, int) and 0 < m < 100_000 else _DEFAULT_MAX_LENGTH
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise AdapterHubError(f"max_length must be an integer >= 2, got {max_length!r}")
    return max_length


def _label_index(labels: Sequence[str]) -> dict[str, int]:
    labels = list(labels)
    if not labels:
        raise AdapterHubError("labels must be a non-empty list of label names")
    index = {str(x): i for i, x in enumerate(labels)}
    if len(index) != len(labels):
        raise AdapterHubError(f"labels must be unique, got {labels}")
    return index


def _need(ex: Any, i: int, keys: tuple[str, ...], task: str) -> None:
    if not isinstance(ex, dict) or any(k not in ex for k in keys):
        got = sorted(ex) if isinstance(ex, dict) else type(ex).__name__
        raise AdapterHubError(f"example {i} is not a {task} example: needs keys {list(keys)}, got {got}")


def _unknown(value: str, ex: dict, i: int, allowed: Sequence[str], what: str = "label") -> AdapterHubError:
    """An unknown label, named with the file and line it was read from (else the example's index)."""
    return AdapterHubError(f"{where_of(ex, i)}: {what} {value!r} is not one of the labels {list(allowed)}")


def encode_classification(examples: Sequence[dict], tokenizer, labels: Sequence[str],
                          max_length: int | None = None) -> list[dict]:
    """``{"text", "label"}`` examples -> ``{"input_ids", "attention_mask", "label": int}`` (truncated)."""
    index = _label_index(labels)
    for i, ex in enumerate(examples):
        _need(ex, i, ("text", "label"), SEQ_CLS)
        if str(ex["label"]) not in index:
            raise _unknown(ex["label"], ex, i, list(index))
    if not examples:
        return []
    enc = tokenizer([ex["text"] for ex in examples], truncation=True, max_length=_max_length(tokenizer, max_length))
    return [{"input_ids": list(enc["input_ids"][i]), "attention_mask": list(enc["attention_mask"][i]),
             "label": index[str(ex["label"])], "truncated": _truncated(enc, i)} for i, ex in enumerate(examples)]


def truncation_counts(features: Sequence[dict]) -> dict[str, int]:
    """How much of the encoded examples ``max_length`` cut off: ``{"examples", "truncated"}`` and, for token
    classification, ``{"words", "words_cut"}`` (words with no sub-token left: never trained on or scored)."""
    out = {"examples": len(features), "truncated": 0}
    for f in features:
        if "n_words" in f:
            cut = int(f["n_words"]) - len({w for w in f["word_ids"] if w is not None})
            out["words"] = out.get("words", 0) + int(f["n_words"])
            out["words_cut"] = out.get("words_cut", 0) + cut
            out["truncated"] += cut > 0
        else:
            out["truncated"] += bool(f.get("truncated"))
    return out


def _truncated(enc, i: int) -> bool:
    """Did truncation cut row ``i`` of a (fast) tokenizer's batch encoding?"""
    encodings = getattr(enc, "encodings", None)
    return bool(encodings and encodings[i].overflowing)


def encode_token_classification(examples: Sequence[dict], tokenizer, labels: Sequence[str],
                                max_length: int | None = None) -> list[dict]:
    """``{"tokens", "tags"}`` examples -> word-piece aligned features (needs a fast tokenizer for ``word_ids``)."""
    index = _label_index(labels)
    for i, ex in enumerate(examples):
        _need(ex, i, ("tokens", "tags"), TOKEN_CLS)
        if len(ex["tokens"]) != len(ex["tags"]):
            raise AdapterHubError(f"{where_of(ex, i)}: {len(ex['tokens'])} tokens but {len(ex['tags'])} tags")
        for w, t in enumerate(ex["tags"]):
            if str(t) not in index:
                raise _unknown(t, ex, i, list(index), f"word {w + 1} {ex['tokens'][w]!r}: tag")
    if not examples:
        return []
    if not getattr(tokenizer, "is_fast", False):
        raise AdapterHubError(f"token classification needs a fast tokenizer (for word_ids); "
                              f"{type(tokenizer).__name__} is not one")
    try:
        enc = tokenizer([list(ex["tokens"]) for ex in examples], is_split_into_words=True, truncation=True,
                        max_length=_max_length(tokenizer, max_length))
    except Exception as e:  # e.g. byte-level BPE tokenizers without add_prefix_space=True
        raise AdapterHubError(f"could not tokenize pre-split words with {type(tokenizer).__name__}: {e}") from e
    out = []
    for i, ex in enumerate(examples):
        word_ids = enc.word_ids(i)
        lab, prev = [], None
        for w in word_ids:
            lab.append(IGNORE_INDEX if w is None or w == prev else index[str(ex["tags"][w])])
            if w is not None:
                prev = w
        out.append({"input_ids": list(enc["input_ids"][i]), "attention_mask": list(enc["attention_mask"][i]),
                    "labels": lab, "word_ids": list(word_ids), "n_words": len(ex["tokens"])})
    return out


def _adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(with_special) and with_special[0] == bos


def encode_causal_lm(examples: Sequence[dict], tokenizer, max_length: int | None = None,
                     add_eos: bool = True) -> list[dict]:
    """``{"prompt", "completion"}`` examples -> ``input_ids = [bos] + prompt + completion + [eos]`` with
    ``labels`` = -100 on bos/prompt. Prompt and completion are tokenized separately (a clean boundary).
    Over ``max_length``: the prompt keeps its last tokens (at most half the budget when the completion needs
    the room), the completion its first."""
    L = _max_length(tokenizer, max_length)
    for i, ex in enumerate(examples):
        _need(ex, i, ("prompt", "completion"), CAUSAL_LM)
    if not examples:
        return []
    prefix = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    eos = [tokenizer.eos_token_id] if add_eos and getattr(tokenizer, "eos_token_id", None) is not None else []
    prompts = tokenizer([ex["prompt"] for ex in examples], add_special_tokens=False)["input_ids"]
    comps = tokenizer([ex["completion"] for ex in examples], add_special_tokens=False)["input_ids"]
    out = []
    for i, (p, c) in enumerate(zip(prompts, comps)):
        p, c = prefix + list(p), list(c) + eos
        if not c:
            raise AdapterHubError(f"example {i}: empty completion and the tokenizer has no eos token: "
                                  f"nothing to train on")
        if len(p) + len(c) > L:
            c_keep = min(len(c), L - min(len(p), L // 2))
            p_keep = L - c_keep
            p = (prefix + p[len(prefix):][-(p_keep - len(prefix)):]) if p_keep > len(prefix) else p[:p_keep]
            c = c[:c_keep]
        ids = p + c
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                    "labels": [IGNORE_INDEX] * len(p) + c})
    return out


def collate(features: Sequence[dict], tokenizer, pad_to_multiple_of: int | None = None,
            tasks: Sequence[str] | None = None) -> dict:
    """Pad features into a batch of tensors: ``input_ids``, ``attention_mask`` and ``labels`` ([B] for
    classification; [B, T] padded with -100 for token classification / causal LM), on the tokenizer's
    ``padding_side``. Other keys (``word_ids``, ``n_words``) are left out: keep the features for them.

    ``tasks`` (one name per row, e.g. the adapter of each row of a joint batch): the batch also holds
    ``adapters`` (that list) and ``labels`` becomes ``{task: labels of that task's rows, in row order}``, so rows
    of different tasks (class ids beside tag sequences) share one batch."""
    import torch

    features = list(features)
    if not features:
        raise AdapterHubError("collate got no features")
    if tasks is not None and len(tasks) != len(features):
        raise AdapterHubError(f"collate got {len(tasks)} task names for {len(features)} features")
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise AdapterHubError(f"{type(tokenizer).__name__} has no pad token; set one first, e.g. "
                              "tokenizer.pad_token = tokenizer.eos_token")
    side = getattr(tokenizer, "padding_side", "right")
    if side not in ("left", "right"):
        raise AdapterHubError(f"tokenizer.padding_side must be 'left' or 'right', got {side!r}")
    T = max(len(f["input_ids"]) for f in features)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of

    def pad(seq, value):
        seq = list(seq)
        fill = [value] * (T - len(seq))
        return fill + seq if side == "left" else seq + fill

    batch = {"input_ids": torch.tensor([pad(f["input_ids"], pad_id) for f in features], dtype=torch.long),
             "attention_mask": torch.tensor([pad(f.get("attention_mask", [1] * len(f["input_ids"])), 0)
                                             for f in features], dtype=torch.long)}
    if tasks is None:
        labels = _labels(features, range(len(features)), pad)
        if labels is not None:
            batch["labels"] = labels
        return batch
    batch["adapters"] = list(tasks)
    rows: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        rows.setdefault(t, []).append(i)
    grouped = {t: _labels(features, idx, pad, t) for t, idx in rows.items()}
    batch["labels"] = {t: v for t, v in grouped.items() if v is not None}
    return batch


def _labels(features: list[dict], rows, pad, task: str | None = None):
    """The labels tensor of ``features[rows]``, or None when they have none."""
    import torch

    feats = [(i, features[i]) for i in rows]
    of = f" of task {task!r}" if task is not None else ""
    if all("label" in f for _, f in feats):
        return torch.tensor([int(f["label"]) for _, f in feats], dtype=torch.long)
    if all("labels" in f for _, f in feats):
        for i, f in feats:
            if len(f["labels"]) != len(f["input_ids"]):
                raise AdapterHubError(f"feature {i}: {len(f['labels'])} labels for {len(f['input_ids'])} input ids")
        return torch.tensor([pad(f["labels"], IGNORE_INDEX) for _, f in feats], dtype=torch.long)
    if any("label" in f or "labels" in f for _, f in feats):
        raise AdapterHubError(f"collate got a mix of features{of} with and without labels")
    return None


def infer_labels(examples: Sequence[dict], task: str) -> list[str]:
    """The label set of ``examples``: sorted labels (classification); the tags found, sorted, ``"O"`` first when
    it is one of them (token classification; no tag is invented); ``[]`` for causal LM (it has no labels)."""
    task = normalize_task(task)
    if task == CAUSAL_LM:
        return []
    if task == SEQ_CLS:
        found = {str(ex["label"]) for i, ex in enumerate(examples) if _need(ex, i, ("text", "label"), task) is None}
        if not found:
            raise AdapterHubError("no labels: the data set has no examples")
        return sorted(found)
    found = set()
    for i, ex in enumerate(examples):
        _need(ex, i, ("tokens", "tags"), task)
        found.update(str(t) for t in ex["tags"])
    if not found:
        raise AdapterHubError("no tags: the data set has no tokens")
    return (["O"] if "O" in found else []) + sorted(found - {"O"})
