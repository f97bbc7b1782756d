"""Evaluation metrics: classification (scikit-learn), token tags (entity-level seqeval for BIO/BIOES/BILOU tag sets,
token accuracy and per-tag macro F1 for any other tag set, e.g. UPOS), LM loss/perplexity, exact match. Each returns
a dict of floats (plus a text ``report`` where one is useful)."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS

# The scalar metrics each scorer returns: these names are the keys the functions below build their results from,
# so recipes (``primary_metric``), the training loop and the report read them here, never from a second list.
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
TOKEN_METRICS = ("precision", "recall", "f1", "token_accuracy")  # entity tag sets (BIO, BIOES, BILOU)
TAG_METRICS = ("token_accuracy", "macro_f1")                     # any other tag set (UPOS, XPOS, ...)
LM_METRICS = ("loss", "perplexity")
#: task type -> the scalar metrics its evaluation may produce on every split (token tasks: by tag scheme)
TASK_METRICS: dict[str, tuple[str, ...]] = {SEQ_CLS: CLASSIFICATION_METRICS,
                                            TOKEN_CLS: tuple(dict.fromkeys(TOKEN_METRICS + TAG_METRICS)),
                                            CAUSAL_LM: LM_METRICS}
#: tag scheme -> (the metrics a token task with such tags produces, its default primary metric)
SCHEME_METRICS: dict[str, tuple[tuple[str, ...], str]] = {"bio": (TOKEN_METRICS, "f1"), "bioes": (TOKEN_METRICS, "f1"),
                                                          "bilou": (TOKEN_METRICS, "f1"), "tags": (TAG_METRICS,
                                                                                                   "token_accuracy")}
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


_ENTITY_TAG = re.compile(r"^([BIESLU])-.+$")


def tag_scheme(tags: Iterable[str]) -> str:
    """The scheme of a tag set: ``bio`` (``O``, ``B-x``, ``I-x``), ``bioes`` (also ``E-x``, ``S-x``), ``bilou``
    (``L-x``, ``U-x``), or ``tags`` (anything else: UPOS, XPOS, ..., scored per tag, never as entities)."""
    tags = {str(t) for t in tags}
    prefixes = set()
    for t in tags - {"O"}:
        m = _ENTITY_TAG.match(t)
        if m is None:
            return "tags"
        prefixes.add(m.group(1))
    if not prefixes:
        return "tags"
    if prefixes <= {"B", "I"}:
        return "bio"
    if prefixes <= {"B", "I", "E", "S"}:
        return "bioes"
    if prefixes <= {"B", "I", "L", "U"}:
        return "bilou"
    return "tags"


def scheme_metrics(scheme: str) -> tuple[tuple[str, ...], str]:
    """(the scalar metrics, the default primary metric) of a token task whose tags have ``scheme``."""
    return SCHEME_METRICS[scheme]


def token_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]],
                  labels: Sequence[str] | None = None) -> dict:
    """Per-word tags scored by their scheme (:func:`tag_scheme` of ``labels``, default the tags seen): entity tag
    sets entity-level (seqeval, conlleval rules) ``{"precision", "recall", "f1", "token_accuracy"}``, any other
    tag set ``{"token_accuracy", "macro_f1"}`` (macro over the tags present); plus ``n``, ``scheme`` and a
    ``report`` (per entity type, or per tag)."""
    t, p = _tag_lists(true_tags, pred_tags)
    scheme = tag_scheme(labels if labels is not None else {x for s in t + p for x in s})
    n_tok = sum(len(s) for s in t)
    accuracy = sum(x == y for a, b in zip(t, p) for x, y in zip(a, b)) / n_tok if n_tok else 0.0
    if scheme == "tags":
        return {**_per_tag(t, p, accuracy), "n": len(t), "scheme": scheme}
    return {**_entities(t, p, scheme, accuracy), "n": len(t), "scheme": scheme}


def _tag_lists(true_tags, pred_tags) -> tuple[list[list[str]], list[list[str]]]:
    if len(true_tags) != len(pred_tags):
        raise AdapterHubError(f"true tags hold {len(true_tags)} sentences but predictions {len(pred_tags)}")
    if not len(true_tags):
        raise AdapterHubError("no predictions to score (0 sentences)")
    t = [[str(x) for x in s] for s in true_tags]
    p = [[str(x) for x in s] for s in pred_tags]
    for i, (a, b) in enumerate(zip(t, p)):
        if len(a) != len(b):
            raise AdapterHubError(f"sentence {i}: {len(a)} true tags but {len(b)} predicted tags")
    return t, p


def _entities(t: list[list[str]], p: list[list[str]], scheme: str, accuracy: float) -> dict:
    try:
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
        from seqeval.scheme import BILOU, IOBES
    except ImportError:
        raise AdapterHubError("entity metrics need seqeval: pip install seqeval") from None
    kw = {"mode": "strict", "scheme": {"bioes": IOBES, "bilou": BILOU}[scheme]} if scheme != "bio" else {}
    has_entities = any(x != "O" for s in t + p for x in s)
    report = (classification_report(t, p, digits=4, zero_division=0, **kw) if has_entities
              else "no entities in the true or predicted tags\n")
    values = (float(precision_score(t, p, zero_division=0, **kw)), float(recall_score(t, p, zero_division=0, **kw)),
              float(f1_score(t, p, zero_division=0, **kw)), accuracy)
    return {**dict(zip(TOKEN_METRICS, values)), "report": report}


def _per_tag(t: list[list[str]], p: list[list[str]], accuracy: float) -> dict:
    """Token accuracy and macro F1 over the tags present in the true or predicted tags, with a per-tag report."""
    from sklearn.metrics import classification_report, f1_score

    flat_t, flat_p = [x for s in t for x in s], [x for s in p for x in s]
    present = sorted(set(flat_t) | set(flat_p))
    macro = float(f1_score(flat_t, flat_p, labels=present, average="macro", zero_division=0))
    return {**dict(zip(TAG_METRICS, (accuracy, macro))),
            "report": classification_report(flat_t, flat_p, labels=present, digits=4, zero_division=0)}


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
