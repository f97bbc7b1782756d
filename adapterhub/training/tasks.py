"""Per-task data for training: load, split, encode, and score predictions."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..data.metrics import LOWER_IS_BETTER, TASK_METRICS
from ..heads import SEQ_CLS, TOKEN_CLS
from ..recipes import RecipeError, TaskSpec


@dataclasses.dataclass
class TaskData:
    name: str
    type: str
    labels: list[str] | None
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]
    primary: str

    def signed_score(self, metrics: dict[str, Any]) -> float:
        """The primary metric, negated where lower is better: larger is always better."""
        v = float(metrics[self.primary])
        return -v if self.primary in LOWER_IS_BETTER else v

    def rows_for_scoring(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, loss: float,
                         feats: list[dict[str, Any]]) -> list[Any]:
        """Per-example plain-Python results (gatherable across processes)."""
        if self.type == SEQ_CLS:
            pred = logits.argmax(-1).tolist()
            return [(int(y), int(p), loss) for y, p in zip(labels.tolist(), pred)]
        if self.type == TOKEN_CLS:
            pred = logits.argmax(-1).tolist()
            out = []
            for prow, yrow in zip(pred, labels.tolist()):
                pairs = [(y, p) for y, p in zip(yrow, prow) if y != -100]
                out.append(([self.labels[y] for y, _ in pairs], [self.labels[p] for _, p in pairs], loss))
            return out
        # causal LM: token-weighted loss
        shift = logits[:, :-1].float()
        tgt = labels[:, 1:]
        ce = torch.nn.functional.cross_entropy(shift.reshape(-1, shift.shape[-1]), tgt.reshape(-1),
                                               ignore_index=-100, reduction="none").view(tgt.shape)
        n = (tgt != -100).sum(1)
        return [(float(ce[i].sum()), int(n[i])) for i in range(len(feats))]


def score(task: TaskData, rows: list[Any]) -> dict[str, Any]:
    """Metrics of gathered :meth:`TaskData.rows_for_scoring` rows: the task type's metrics (see
    :data:`adapterhub.data.metrics.TASK_METRICS`), ``n`` and, for classification, a text ``report``."""
    from ..data import classification_metrics, lm_metrics, token_metrics

    if not rows:
        return {**{k: float("nan") for k in TASK_METRICS[task.type]}, "n": 0}
    if task.type == SEQ_CLS:
        y = [task.labels[r[0]] for r in rows]
        p = [task.labels[r[1]] for r in rows]
        m = dict(classification_metrics(y, p, task.labels))
    elif task.type == TOKEN_CLS:
        m = dict(token_metrics([r[0] for r in rows], [r[1] for r in rows]))
    else:
        total, n = sum(r[0] for r in rows), sum(r[1] for r in rows)
        m = dict(lm_metrics(total / max(n, 1)))
    m["n"] = len(rows)
    return m


def prepare_task(spec: TaskSpec, tokenizer, seed: int, base_dir=None) -> TaskData:
    """Load, split and encode one task's data. Features are as :mod:`adapterhub.data.encode` makes them
    (``label`` for classification, ``labels`` for token classification and causal LM)."""
    from .. import data as D

    if tokenizer is None:
        raise RecipeError(f"tasks.{spec.name}: the base has no tokenizer")
    splits = D.load_splits(spec.data.source(), seed, **spec.data.fractions(), base_dir=base_dir, task=spec.type)
    examples = splits["train"] + splits["validation"] + splits["test"]
    if not examples:
        raise RecipeError(f"tasks.{spec.name}.data: the dataset is empty")
    labels = spec.labels
    if spec.type in (SEQ_CLS, TOKEN_CLS):
        if labels is None:
            labels = D.infer_labels(examples, spec.type)
        enc = D.encode_classification if spec.type == SEQ_CLS else D.encode_token_classification
        encode = lambda ex: enc(ex, tokenizer, labels, spec.max_length)  # noqa: E731
    else:
        encode = lambda ex: D.encode_causal_lm(ex, tokenizer, spec.max_length)  # noqa: E731
    out = {split: encode(splits[split]) if splits[split] else [] for split in ("train", "validation", "test")}
    if not out["train"]:
        raise RecipeError(f"tasks.{spec.name}.data: no training examples after splitting")
    return TaskData(spec.name, spec.type, labels, out["train"], out["validation"], out["test"], spec.primary)


__all__ = ["TaskData", "prepare_task", "score"]
