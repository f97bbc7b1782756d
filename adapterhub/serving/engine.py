"""What one batch does on the model: the two kinds of job and the :class:`Engine` that runs them.

- :class:`PredictJob` (``/v1/predict``): rows of texts, one adapter each. A batch of them is ONE
  :func:`adapterhub.model.predicting.predict` call with one adapter per row (one routed forward for its
  classification rows, one batched decode for its causal-LM rows); probabilities are the softmax of that forward's
  logits (:func:`~adapterhub.model.predicting.sequence_probabilities`).
- :class:`GenerateJob` (``/v1/completions``, ``/v1/chat/completions``): prompts for one causal-LM adapter (or the
  bare base). A batch of them is ONE batched ``generate`` (one adapter per row) that runs to the longest
  ``max_tokens`` of the batch; each row stops at its own ``max_tokens``, stop strings or end of sequence
  (:class:`~.textstream.Tracker`), and streams as it goes.
"""
from __future__ import annotations

import asyncio
from typing import Any

from transformers import StoppingCriteriaList

from ..heads import CAUSAL_LM, SEQ_CLS
from ..model import predicting
from .scheduler import Job
from .textstream import RowOutput, RowText, Tracker


class PredictJob(Job):
    def __init__(self, texts: list[str], adapters: list[str], probabilities: bool, max_new_tokens: int):
        super().__init__(len(texts), frozenset(adapters))
        self.texts, self.adapters, self.probabilities = texts, adapters, probabilities
        self.key = ("predict", max_new_tokens)
        self.max_new_tokens = max_new_tokens


class GenerateJob(Job):
    """``adapter``: a causal-LM adapter, or None for the bare base. ``stream``: deltas go to :attr:`events` as
    ``("delta", row, text)`` and ``("done", row, RowOutput)``, then ``None`` once the result is set."""

    def __init__(self, prompts: list[str], adapter: str | None, max_tokens: int, temperature: float, top_p: float,
                 stops: list[str], stream: bool):
        super().__init__(len(prompts), frozenset() if adapter is None else frozenset({adapter}))
        self.prompts, self.adapter, self.max_tokens, self.stops = prompts, adapter, max_tokens, stops
        self.temperature, self.top_p = temperature, top_p
        self.key = ("generate", adapter is None, temperature, top_p if temperature > 0 else None)
        self.events: asyncio.Queue | None = asyncio.Queue() if stream else None
        self.outputs: list[RowOutput | None] = [None] * len(prompts)

    def delta(self, row: int, text: str) -> None:
        if self.events is not None:
            self.started = True
            self._call(self.events.put_nowait, ("delta", row, text))

    def row_done(self, row: int, out: RowOutput) -> None:
        self.outputs[row] = out
        if self.events is not None:
            self._call(self.events.put_nowait, ("done", row, out))
        if all(o is not None for o in self.outputs):
            self.resolve(list(self.outputs))

    def finished(self) -> None:
        if self.events is not None:
            self.events.put_nowait(None)


class Engine:
    """Runs batches of one kind of job on ``model`` (called by the scheduler's worker thread)."""

    def __init__(self, model):
        self.model = model
        gen = getattr(getattr(model.base, "generation_config", None), "eos_token_id", None)
        tok_eos = getattr(model.tokenizer, "eos_token_id", None)
        self.eos = {t for t in ([gen] if isinstance(gen, int) else list(gen or [])) + [tok_eos] if t is not None}

    def run(self, jobs: list[Job]) -> None:
        if isinstance(jobs[0], PredictJob):
            self._predict(jobs)
        else:
            self._generate(jobs)

    # -- predict ---------------------------------------------------------------------------------------------
    def _predict(self, jobs: list[PredictJob]) -> None:
        texts = [t for j in jobs for t in j.texts]
        adapters = [a for j in jobs for a in j.adapters]
        want_probs = any(j.probabilities for j in jobs)
        seen: dict[int, tuple[Any, list[float] | None]] = {}  # row -> (entry, probabilities)

        def hook(rows: list[int], res) -> None:
            probs = predicting.sequence_probabilities(res) if want_probs else {}
            for name, idx in res.rows.items():
                for r in idx.tolist():
                    seen[rows[r]] = (res.entries[name], probs.get(r))

        preds = predicting.predict(self.model, texts, adapters, batch_size=len(texts),
                                   max_new_tokens=jobs[0].max_new_tokens, on_output=hook)
        start = 0
        for job in jobs:
            job.resolve([_row(adapters[k], preds[k], seen.get(k), job.probabilities)
                         for k in range(start, start + job.rows)])
            start += job.rows

    # -- generate --------------------------------------------------------------------------------------------
    def _generate(self, jobs: list[GenerateJob]) -> None:
        tok = self.model.tokenizer

        def decode(ids: list[int]) -> str:
            with predicting.TOKENIZER_LOCK:
                return tok.decode(ids, skip_special_tokens=True)

        rows = [(job, i, RowText(decode, job.max_tokens, job.stops, job.events is not None or bool(job.stops)))
                for job in jobs for i in range(job.rows)]
        tracker = Tracker(rows, self.eos)
        head = jobs[0]
        kw: dict[str, Any] = {"max_new_tokens": max(j.max_tokens for j in jobs),
                              "stopping_criteria": StoppingCriteriaList([tracker]), "do_sample": head.temperature > 0}
        if head.temperature > 0:
            kw.update(temperature=head.temperature, top_p=head.top_p)
        prompts = [p for j in jobs for p in j.prompts]
        if head.adapter is None:
            predicting.generate_base(self.model, prompts, **kw)
        else:
            predicting.generate(self.model, prompts, [j.adapter for j in jobs for _ in j.prompts], **kw)
        tracker.close()


def _row(adapter: str, pred: Any, seen: tuple | None, with_probs: bool) -> dict[str, Any]:
    """One row of a ``/v1/predict`` answer. Rows no classification forward saw are causal-LM rows."""
    if seen is None:
        return {"adapter": adapter, "task": CAUSAL_LM, "text": pred}
    entry, probs = seen
    if entry.task == SEQ_CLS:
        out = {"adapter": adapter, "task": SEQ_CLS, "label": pred}
        if with_probs:
            out["probabilities"] = dict(zip(entry.head.labels, probs))
        return out
    return {"adapter": adapter, "task": entry.task, "tags": pred}


__all__ = ["PredictJob", "GenerateJob", "Engine"]
