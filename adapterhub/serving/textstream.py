"""Generated text, row by row, while a batched ``generate`` runs: each row's token ids, the text decoded from them
(cut at the first stop string, or at end-of-sequence, or after its own ``max_tokens``), and the pieces of it that
are safe to stream. :class:`Tracker` is a ``StoppingCriteria``: ``generate`` calls it after every step with the
ids so far, and it tells ``generate`` which rows are finished, so one batch serves requests with different
``max_tokens`` and stop strings, and a row whose client went away stops early."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from transformers import StoppingCriteria


@dataclasses.dataclass(frozen=True)
class RowOutput:
    text: str
    finish_reason: str  # "stop" (end of sequence or a stop string), "length" (max_tokens), "cancelled"
    completion_tokens: int


def first_stop(text: str, stops: list[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def holdback(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string (not streamed yet)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class RowText:
    """One generated row. ``incremental``: decode after every token (streams, stop strings); else once, at the
    end. :meth:`add` and :meth:`close` return the text to send since the last call ('' when none)."""

    def __init__(self, decode: Callable[[list[int]], str], max_tokens: int, stops: list[str], incremental: bool):
        self.decode, self.max_tokens, self.stops, self.incremental = decode, max_tokens, stops, incremental
        self.tokens: list[int] = []
        self.sent = ""
        self.text: str | None = None
        self.reason: str | None = None

    def add(self, token: int) -> str:
        self.tokens.append(token)
        if self.incremental:
            text = self.decode(self.tokens)
            cut = first_stop(text, self.stops)
            if cut is not None:
                self.text, self.reason = text[:cut], "stop"
                return self._delta(self.text, final=True)
            if len(self.tokens) < self.max_tokens:
                return self._delta(text, final=False)
        return self.close("length") if len(self.tokens) >= self.max_tokens else ""

    def close(self, reason: str) -> str:
        if self.reason is None:
            self.reason = reason
        if self.text is None:
            text = self.decode(self.tokens)
            cut = first_stop(text, self.stops)
            if cut is not None:
                text, self.reason = text[:cut], "stop"
            self.text = text
        return self._delta(self.text, final=True)

    def _delta(self, text: str, final: bool) -> str:
        if not final:
            text = text[:len(text) - holdback(text, self.stops)]
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return ""
        if not text.startswith(self.sent):  # decoding was not prefix-stable: the final answer still is right
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def output(self) -> RowOutput:
        return RowOutput(self.text or "", self.reason or "length", len(self.tokens))


class Tracker(StoppingCriteria):
    """``rows[i]`` = (job, row index in the job, :class:`RowText`) of batch row ``i``; ``eos``: end-of-sequence
    ids. Sends each row's text to its job (``job.delta(i, text)``, ``job.row_done(i, RowOutput)``)."""

    def __init__(self, rows: list, eos: set[int]):
        super().__init__()
        self.rows, self.eos = rows, eos

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for (job, i, row), token in zip(self.rows, last):
            if row.reason is not None:
                continue
            if job.cancelled:
                self._finish(job, i, row, "cancelled")
            elif token in self.eos:
                self._finish(job, i, row, "stop")
            else:
                delta = row.add(token)
                if delta:
                    job.delta(i, delta)
                if row.reason is not None:
                    job.row_done(i, row.output())
        return torch.tensor([row.reason is not None for _j, _i, row in self.rows], dtype=torch.bool,
                            device=input_ids.device)

    def close(self) -> None:
        """After ``generate`` returns: rows it ended (its ``max_new_tokens``) are finished by length."""
        for job, i, row in self.rows:
            if row.reason is None:
                self._finish(job, i, row, "cancelled" if job.cancelled else "length")

    @staticmethod
    def _finish(job, i: int, row: RowText, reason: str) -> None:
        delta = row.close(reason)
        if delta and reason != "cancelled":
            job.delta(i, delta)
        job.row_done(i, row.output())


__all__ = ["RowOutput", "RowText", "Tracker", "first_stop", "holdback"]
