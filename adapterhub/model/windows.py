"""Prediction within each adapter's ``max_length``, and over texts longer than it.

An adapter trained with ``max_length: 64`` saw at most 64 tokens per example; its card records that, and predict
cuts (sequence classification) where training did. A token-classification text longer than the limit is not cut:
its words are split into overlapping windows that each fit, every window is predicted, and each word takes its tag
from the window where it has the most context on both sides. So every word gets a tag, and the same tags as
training-length inputs would give where the text is short enough."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..heads import TOKEN_CLS

DEFAULT_MAX_LENGTH = 512  # when neither the card nor the tokenizer says (as the data encoders do)


def max_length_of(model, entry) -> int:
    """The token limit of ``entry``'s rows: the card's ``max_length`` (what it was trained with), else the
    tokenizer's ``model_max_length`` when that is a real limit, else 512; never more positions than the base has."""
    given = (entry.extra or {}).get("max_length")
    m = getattr(model.tokenizer, "model_max_length", None)
    if isinstance(given, int) and not isinstance(given, bool) and given >= 2:
        limit = given
    else:
        limit = int(m) if isinstance(m, int) and 0 < m < 100_000 else DEFAULT_MAX_LENGTH
    positions = getattr(getattr(model.base, "config", None), "max_position_embeddings", None)
    return min(limit, positions) if isinstance(positions, int) and positions >= 2 else limit


def _word_windows(counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Word spans ``[start, end)`` whose sub-tokens fit ``budget`` (a word longer than it gets a window alone), each
    overlapping the previous by about a quarter of the budget."""
    spans, start, n = [], 0, len(counts)
    while True:
        end, used = start, 0
        while end < n and (end == start or used + counts[end] <= budget):
            used += counts[end]
            end += 1
        spans.append((start, end))
        if end >= n:
            return spans
        back, overlap = end, 0
        while back - 1 > start and overlap + counts[back - 1] <= budget // 4:
            back -= 1
            overlap += counts[back]
        start = back


def _owner(w: int, spans: list[tuple[int, int]], n: int) -> int:
    """The window where word ``w`` has the most context on both sides (text edges count as full context)."""
    best, best_score = 0, -1.0
    for k, (s, e) in enumerate(spans):
        if s <= w < e:
            score = min(w - s if s > 0 else float("inf"), e - 1 - w if e < n else float("inf"))
            if score > best_score:
                best, best_score = k, score
    return best


@dataclasses.dataclass
class Plan:
    """Rows to predict (long token-classification rows replaced by their windows) and how to merge them back."""

    texts: list[str]
    entries: list[Any]
    parts: list[tuple[int, list[tuple[int, int]]]]  # per input row: (first planned row, its word spans)

    def origins(self) -> list[int]:
        """The input row of each planned row."""
        return [i for i, (_first, spans) in enumerate(self.parts) for _ in (spans or [None])]

    def merge(self, preds: Sequence[Any]) -> list[Any]:
        out = []
        for first, spans in self.parts:
            if not spans:
                out.append(preds[first])
                continue
            n = spans[-1][1]
            owners = [_owner(w, spans, n) for w in range(n)]
            out.append([preds[first + k][w - spans[k][0]] for w, k in enumerate(owners)])
        return out


def plan(model, texts: Sequence[str], entries: Sequence[Any]) -> Plan:
    """Split each token-classification text whose words do not fit its adapter's ``max_length`` into windows."""
    tok = model.tokenizer
    specials = tok.num_special_tokens_to_add(pair=False) if tok is not None else 0
    out_t, out_e, parts = [], [], []
    for text, e in zip(texts, entries):
        spans: list[tuple[int, int]] = []
        words = text.split() if e.task == TOKEN_CLS and isinstance(text, str) else []
        if words:
            ids = tok(words, is_split_into_words=True, add_special_tokens=False)
            counts = [0] * len(words)
            for w in ids.word_ids():
                if w is not None:
                    counts[w] += 1
            budget = max(1, max_length_of(model, e) - specials)
            if sum(counts) > budget:
                spans = _word_windows(counts, budget)
        parts.append((len(out_t), spans))
        for s, t in spans or [(None, None)]:
            out_t.append(text if s is None else " ".join(words[s:t]))
            out_e.append(e)
    return Plan(out_t, out_e, parts)
