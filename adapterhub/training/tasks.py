"""Per-task data for training: load, split, encode, and score predictions."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..data.metrics import DEFAULT_PRIMARY, LOWER_IS_BETTER, TASK_METRICS, scheme_metrics, tag_scheme
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
    metrics: tuple[str, ...] = ()  # the scalar metrics its evaluation produces (token tasks: by tag scheme)
    scheme: str | None = None      # token tasks: the tag scheme (bio, bioes, bilou, or tags)

    def signed_score(self, metrics: dict[str, Any]) -> float:
        """The primary metric, negated where lower is better: larger is always better."""
        v = float(metrics[self.primary])
        return -v if self.primary in LOWER_IS_BETTER else v

    def rows_for_scoring(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, loss: float,
                         feats: list[dict[str, Any]]) -> list[Any]:
        """Per-example plain-Python results (gatherable across processes)."""
        if self.type == SEQ_CLS:
            pred = logits.argmax(-1).tolist()
            return [(int(y), int(p), loss, bool(f.get("truncated"))) for y, p, f in zip(labels.tolist(), pred, feats)]
        if self.type == TOKEN_CLS:
            pred = logits.argmax(-1).tolist()
            out = []
            for prow, yrow, f in zip(pred, labels.tolist(), feats):
                pairs = [(y, p) for y, p in zip(yrow, prow) if y != -100]
                cut = int(f.get("n_words", len(pairs))) - len(pairs)  # words past max_length: not scored
                out.append(([self.labels[y] for y, _ in pairs], [self.labels[p] for _, p in pairs], loss, cut))
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
        return {**{k: float("nan") for k in (task.metrics or TASK_METRICS[task.type])}, "n": 0}
    if task.type == SEQ_CLS:
        y = [task.labels[r[0]] for r in rows]
        p = [task.labels[r[1]] for r in rows]
        m = dict(classification_metrics(y, p, task.labels))
        m["truncated"] = sum(bool(r[3]) for r in rows)  # scored on their first max_length tokens only
    elif task.type == TOKEN_CLS:
        m = dict(token_metrics([r[0] for r in rows], [r[1] for r in rows], task.labels))
        m["words_scored"] = sum(len(r[0]) for r in rows)
        m["words_not_scored"] = sum(r[3] for r in rows)  # cut off by max_length: not in the metrics above
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
    scheme, metrics, primary = task_metrics(spec, labels)
    return TaskData(spec.name, spec.type, labels, out["train"], out["validation"], out["test"], primary, metrics,
                    scheme)


def truncation_note(task: TaskData, max_length: int) -> str | None:
    """A line saying how much of the task's data ``max_length`` cuts off (None when nothing is cut)."""
    from ..data import truncation_counts

    c = truncation_counts(task.train + task.validation + task.test)
    if not c["truncated"]:
        return None
    words = f"; {c['words_cut']} of {c['words']} words get no tag: not trained on, counted as words_not_scored " \
            "in the metrics" if "words" in c else "; only their first tokens are seen"
    return f"tasks.{task.name}: {c['truncated']} of {c['examples']} examples are longer than max_length={max_length}" \
           + words


def task_metrics(spec: TaskSpec, labels: list[str] | None) -> tuple[str | None, tuple[str, ...], str]:
    """(tag scheme, the metrics the task's evaluation produces, its primary metric). A token task's metrics follow
    its tag scheme; a ``primary_metric`` the scheme does not produce is refused here, before any training."""
    if spec.type != TOKEN_CLS:
        return None, TASK_METRICS[spec.type], spec.primary_metric or DEFAULT_PRIMARY[spec.type]
    scheme = tag_scheme(labels or [])
    metrics, default = scheme_metrics(scheme)
    primary = spec.primary_metric or default
    if primary not in metrics:
        kind = "not entity tags (BIO/BIOES/BILOU)" if scheme == "tags" else f"{scheme.upper()} entity tags"
        raise RecipeError(f"tasks.{spec.name}.primary_metric: {primary!r} is not a metric of this task: its tags "
                          f"{labels[:6]}{'...' if len(labels) > 6 else ''} are {kind}, scored as {list(metrics)}")
    return scheme, metrics, primary


__all__ = ["TaskData", "prepare_task", "score", "task_metrics", "truncation_note"]
