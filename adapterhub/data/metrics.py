"""Evaluation metrics: classification (scikit-learn), entity-level NER (seqeval), LM loss/perplexity,
exact match. Each returns a dict of floats (plus a text ``report`` where one is useful)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS

# The scalar metrics each scorer returns: these names are the keys the functions below build their results from,
# so recipes (``primary_metric``), the training loop and the report read them here, never from a second list.
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
TOKEN_METRICS = ("precision", "recall", "f1", "token_accuracy")
LM_METRICS = ("loss", "perplexity")
#: task type -> the scalar metrics its evaluation produces on every split
TASK_METRICS: dict[str, tuple[str, ...]] = {SEQ_CLS: CLASSIFICATION_METRICS, TOKEN_CLS: TOKEN_METRICS,
                                            CAUSAL_LM: LM_METRICS}
#: task type -> metrics produced on the test split only (generation is too slow for every evaluation)
TEST_ONLY_METRICS: dict[str, tuple[str, ...]] = {SEQ_CLS: (), TOKEN_CLS: (), CAUSAL_LM: ("exact_match",)}
#: the metric that picks the best checkpoint when a recipe names none
DEFAULT_PRIMARY: dict[str, str] = {SEQ_CLS: "accuracy", TOKEN_CLS: "f1", CAUSAL_LM: "loss"}
#: metrics where lower is better (every other metric: higher is better)
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})


def _names(values: Sequence, labels: Sequence[str], what: str) -> list[str]:
    """Label names from names or integer ids; unknown ones are an error naming the value."""
    labels = [str(x) for x in labels]
    allowed = set(labels)
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool):
            v = str(v)
        if isinstance(v, int) or (hasattr(v, "item") and not isinstance(v, str)):
            v = int(v)
            if not 0 <= v < len(labels):
                raise AdapterHubError(f"{what}[{i}]: label id {v} is out of range for {len(labels)} labels")
            out.append(labels[v])
        else:
            if str(v) not in allowed:
                raise AdapterHubError(f"{what}[{i}]: label {v!r} is not one of the labels {labels}")
            out.append(str(v))
    return out


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Sequence[str]) -> dict:
    """``{"accuracy", "macro_f1", "n", "report"}``. Labels may be names or ids into ``labels``. Macro F1 is
    over the labels present in ``y_true`` or ``y_pred`` (a label absent from both has no F1)."""
    try:
        from sklearn.metrics import accuracy_score, classification_report, f1_score
    except ImportError:
        raise AdapterHubError("classification metrics need scikit-learn: pip install scikit-learn") from None
    if len(y_true) != len(y_pred):
        raise AdapterHubError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if not len(y_true):
        raise AdapterHubError("no predictions to score (0 examples)")
    t, p = _names(y_true, labels, "y_true"), _names(y_pred, labels, "y_pred")
    present = [str(x) for x in labels if str(x) in set(t) | set(p)]
    values = (float(accuracy_score(t, p)), float(f1_score(t, p, labels=present, average="macro", zero_division=0)))
    return {**dict(zip(CLASSIFICATION_METRICS, values)), "n": len(t),
            "report": classification_report(t, p, labels=present, digits=4, zero_division=0)}


def token_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level (seqeval, conlleval rules) ``{"precision", "recall", "f1", "token_accuracy", "n",
    "report"}`` over lists of per-word tag lists."""
    try:
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    except ImportError:
        raise AdapterHubError("token metrics need seqeval: pip install seqeval") from None
    if len(true_tags) != len(pred_tags):
        raise AdapterHubError(f"true tags hold {len(true_tags)} sentences but predictions {len(pred_tags)}")
    if not len(true_tags):
        raise AdapterHubError("no predictions to score (0 sentences)")
    t = [[str(x) for x in s] for s in true_tags]
    p = [[str(x) for x in s] for s in pred_tags]
    for i, (a, b) in enumerate(zip(t, p)):
        if len(a) != len(b):
            raise AdapterHubError(f"sentence {i}: {len(a)} true tags but {len(b)} predicted tags")
    n_tok = sum(len(s) for s in t)
    correct = sum(x == y for a, b in zip(t, p) for x, y in zip(a, b))
    has_entities = any(x != "O" for s in t + p for x in s)
    report = (classification_report(t, p, digits=4, zero_division=0) if has_entities
              else "no entities in the true or predicted tags\n")
    values = (float(precision_score(t, p, zero_division=0)), float(recall_score(t, p, zero_division=0)),
              float(f1_score(t, p, zero_division=0)), correct / n_tok if n_tok else 0.0)
    return {**dict(zip(TOKEN_METRICS, values)), "n": len(t), "report": report}


def lm_metrics(mean_loss: float) -> dict:
    """``{"loss", "perplexity"}`` from a mean per-token cross-entropy (nats); perplexity is inf on overflow."""
    loss = float(mean_loss)
    if math.isnan(loss):
        raise AdapterHubError("mean loss is NaN")
    try:
        ppl = math.exp(loss)
    except OverflowError:
        ppl = math.inf
    return dict(zip(LM_METRICS, (loss, ppl)))


def exact_match(preds: Sequence[str], refs: Sequence[str], *, ignore_case: bool = False) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding whitespace."""
    if len(preds) != len(refs):
        raise AdapterHubError(f"{len(preds)} predictions but {len(refs)} references")
    if not len(refs):
        raise AdapterHubError("no predictions to score (0 examples)")

    def norm(s):
        s = str(s).strip()
        return s.lower() if ignore_case else s

    return sum(norm(a) == norm(b) for a, b in zip(preds, refs)) / len(refs)
