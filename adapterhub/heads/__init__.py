"""Task heads. A head belongs to its adapter: it is saved beside it (``adapterhub_head.json`` +
``adapterhub_head.safetensors``) with its label names, never inside the base. A sequence-classification head with
``pooling="native"`` (:mod:`.native`) is laid out like the base architecture's own task head, so that a peft
task-model export carries it as peft's ``modules_to_save``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from ..errors import AdapterHubError

SEQ_CLS = "sequence-classification"
TOKEN_CLS = "token-classification"
CAUSAL_LM = "causal-lm"
TASKS = (SEQ_CLS, TOKEN_CLS, CAUSAL_LM)
POOLINGS = ("mean", "cls", "last", "native")
#: the options each task's head takes (recipes' ``head:`` mapping, ``add_adapter(..., **head_options)``)
HEAD_OPTIONS: dict[str, tuple[str, ...]] = {SEQ_CLS: ("pooling", "dropout"), TOKEN_CLS: ("dropout",), CAUSAL_LM: ()}


class Head(nn.Module):
    task: ClassVar[str] = ""

    def __init__(self, labels: list[str] | None):
        super().__init__()
        self.labels = list(labels) if labels is not None else None

    def config(self) -> dict[str, Any]:
        return {"task": self.task, "labels": self.labels}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SequenceClassificationHead(Head):
    """Pools the hidden states (``mean`` over real tokens, ``cls`` = first token, ``last`` = last real token)
    and applies dropout + a linear classifier."""

    task = SEQ_CLS

    def __init__(self, hidden_size: int, labels: list[str], pooling: str = "mean", dropout: float = 0.1,
                 init: bool = True):
        super().__init__(labels)
        check_head_options(SEQ_CLS, {"pooling": pooling, "dropout": dropout})
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dropout_p = float(dropout)
        self.classifier = _linear(hidden_size, len(labels), init)

    def config(self):
        return {**super().config(), "pooling": self.pooling, "dropout": self.dropout_p,
                "hidden_size": self.classifier.in_features}

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            return last_token(hidden, mask)
        mask = mask.to(hidden.dtype)
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)

    def forward(self, hidden, mask, lm_head=None):
        w = self.classifier.weight
        return self.classifier(self.dropout(self.pool(hidden, mask).to(w.dtype)))

    def loss(self, logits, labels):
        return F.cross_entropy(logits.float(), labels)


class TokenClassificationHead(Head):
    task = TOKEN_CLS

    def __init__(self, hidden_size: int, labels: list[str], dropout: float = 0.1, init: bool = True):
        super().__init__(labels)
        self.dropout = nn.Dropout(dropout)
        self.dropout_p = float(dropout)
        self.classifier = _linear(hidden_size, len(labels), init)

    def config(self):
        return {**super().config(), "dropout": self.dropout_p, "hidden_size": self.classifier.in_features}

    def forward(self, hidden, mask, lm_head=None):
        return self.classifier(self.dropout(hidden.to(self.classifier.weight.dtype)))

    def loss(self, logits, labels):  # labels: [N, T], -100 = ignored (padding, non-first sub-words)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


class CausalLMHead(Head):
    """Uses the base's own LM head (passed in at call time, so no base weight lives in the head)."""

    task = CAUSAL_LM

    def __init__(self):
        super().__init__(None)

    def forward(self, hidden, mask, lm_head=None):
        if lm_head is None:
            raise AdapterHubError("causal-lm head needs a base with an LM head (AutoModelForCausalLM)")
        return lm_head(hidden)

    def loss(self, logits, labels):  # next-token loss; labels -100 where not scored (prompt, padding)
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:]
        return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                               ignore_index=-100)


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's hidden state at its last real token, robust to left or right padding (as transformers' task
    classes pick the last non-pad token)."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (pos * mask.long()).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _linear(n_in: int, n_out: int, init: bool) -> nn.Linear:
    return nn.Linear(n_in, n_out) if init else skip_init(nn.Linear, n_in, n_out)


def build_head(task: str, hidden_size: int, labels: list[str] | None, init: bool = True, base: nn.Module | None = None,
               **options) -> Head:
    """The head of ``task``. ``base``: the base model, which ``pooling="native"`` heads are laid out like."""
    if task == SEQ_CLS or task == TOKEN_CLS:
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise AdapterHubError(f"task {task!r} needs labels: a non-empty list of label names")
        if len(set(labels)) != len(labels):
            raise AdapterHubError(f"labels must be unique, got {labels}")
        cls = SequenceClassificationHead if task == SEQ_CLS else TokenClassificationHead
        check_head_options(task, options)
        if options.get("pooling") == "native":
            from .native import NativeSequenceHead

            if base is None:
                raise AdapterHubError("pooling='native' needs the base model the head is laid out like")
            return NativeSequenceHead(hidden_size, labels, base, init=init, dropout=options.get("dropout", 0.1))
        return cls(hidden_size, labels, init=init, **options)
    if task == CAUSAL_LM:
        if labels:
            raise AdapterHubError("task 'causal-lm' takes no labels")
        return CausalLMHead()
    raise AdapterHubError(f"unknown task {task!r}; known: {list(TASKS)}")


def check_head_options(task: str, options: dict[str, Any]) -> None:
    """Refuse head options ``task``'s head does not take, a ``pooling`` not in :data:`POOLINGS`, and a ``dropout``
    that is not a probability."""
    if task not in HEAD_OPTIONS:
        raise AdapterHubError(f"unknown task {task!r}; known: {list(TASKS)}")
    allowed = HEAD_OPTIONS[task]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise AdapterHubError(f"unknown head option(s) {bad} for task {task!r}; known: {sorted(allowed)}")
    if "pooling" in options and options["pooling"] not in POOLINGS:
        raise AdapterHubError(f"pooling must be 'mean', 'cls', 'last' or 'native', got {options['pooling']!r}")
    p = options.get("dropout", 0.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise AdapterHubError(f"dropout must be a number in [0, 1), got {p!r}")


def decode_token_tags(pred_ids: Sequence[int], word_ids: Sequence[int | None], labels: Sequence[str],
                      n_words: int | None = None, attention_mask: Sequence[int] | None = None,
                      padding_side: str = "right", fill: str = "O") -> list[str]:
    """Per-word tags from one padded row of predicted label ids: the first sub-token of each word decides.
    ``word_ids`` index the unpadded encoding (the tokenizer's ``word_ids()``); with left padding pass the row's
    ``attention_mask`` (or ``padding_side``) so the offset is found. Words with no sub-token (cut by
    ``max_length``, or dropped by the tokenizer) get ``fill``, so the result has ``n_words`` tags (default: up to
    the last word seen)."""
    pred_ids = [int(x) for x in pred_ids]
    offset = 0
    if padding_side == "left":
        n_real = int(sum(int(m) for m in attention_mask)) if attention_mask is not None else len(word_ids)
        offset = len(pred_ids) - n_real
    n = n_words if n_words is not None else (max((w for w in word_ids if w is not None), default=-1) + 1)
    tags = [fill] * n
    seen = set()
    for pos, w in enumerate(word_ids):
        if w is None or w in seen or w >= n:
            continue
        seen.add(w)
        tags[w] = labels[pred_ids[offset + pos]]
    return tags


def head_from_config(cfg: dict[str, Any], hidden_size: int, init: bool = True, base: nn.Module | None = None) -> Head:
    """The head a head config describes (``base``: the base model, for ``pooling="native"`` heads). ``init=False``:
    its tensors are left uninitialised (their values are about to be loaded; no random init that the file
    overwrites)."""
    task = cfg.get("task")
    options = {k: cfg[k] for k in ("pooling", "dropout") if k in cfg and (task == SEQ_CLS or k == "dropout")}
    if task == CAUSAL_LM:
        options = {}
    if cfg.get("hidden_size") not in (None, hidden_size):
        raise AdapterHubError(f"head was made for hidden size {cfg['hidden_size']}, the base has {hidden_size}")
    head = build_head(task, hidden_size, cfg.get("labels"), init=init, base=base, **options)
    for key in ("family", "model_type"):  # a native head: laid out like the base it was made for
        if key in cfg and getattr(head, key, None) != cfg[key]:
            raise AdapterHubError(f"the head was made for a base whose task head is {key} {cfg[key]!r}; this base's "
                                  f"is {getattr(head, key, None)!r}")
    return head
