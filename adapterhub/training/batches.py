"""Training batches. Each draw takes ``batch_size`` rows from the per-task example streams (by the task sampler when
several tasks train together); the draw is then cut into micro-batches by length (:func:`micro_batches`): rows
sorted by length, each micro-batch at most ``token_budget`` padded tokens, so short rows (sentiment, NER) are not
padded to the longest row of the draw (topic); the cut points, and whether a run of rows is one micro-batch or one per
adapter, are chosen to cost least (:func:`plan`). Every micro-batch carries, per task, the share of that task's loss
it holds in the draw (labelled rows, or labelled tokens): the sum over the micro-batches of ``share * loss`` is the
draw's per-task mean loss, so the gradient is the one of the whole draw (the same rows, the same proportions). Rows
are padded by the one :func:`adapterhub.data.collate`, which groups the labels per task."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..data import collate
from ..heads import CAUSAL_LM, SEQ_CLS
from .sampling import ExampleStream, TaskSampler
from .tasks import TaskData


@dataclasses.dataclass
class MicroBatch:
    batch: dict[str, Any]       # collate's batch: input_ids, attention_mask, adapters, labels {task: ...}
    shares: dict[str, float]    # per task: its part of the draw's loss of that task (sums to 1 over the draw)
    first: set[str]             # tasks whose first micro-batch of the draw this is (method penalties go there)
    tokens: int                 # real tokens
    padded: int                 # token positions computed (rows x longest row)


def draw_rows(streams: dict[str, ExampleStream], sampler: TaskSampler, batch_size: int,
              step: int) -> list[tuple[str, int]]:
    """``batch_size`` (task, example index) rows. One task: its next rows; several: the sampler draws each row's
    task (tasks that have not started yet or have stopped early are left out), rows grouped by task."""
    names = list(streams)
    if len(names) == 1:
        return [(names[0], i) for i in streams[names[0]].take(batch_size)]
    drawn = sampler.draw(batch_size, step)
    rows = []
    for t in names:
        k = drawn.count(t)
        if k:
            rows += [(t, i) for i in streams[t].take(k)]
    return rows


def draw_batch(tasks: dict[str, TaskData], streams: dict[str, ExampleStream], sampler: TaskSampler,
               batch_size: int, step: int, tokenizer) -> dict[str, Any]:
    """One padded batch of ``batch_size`` rows (see :func:`draw_rows`): ``input_ids``, ``attention_mask``,
    ``adapters`` (each row's task) and ``labels`` ({task: that task's labels in row order})."""
    rows = draw_rows(streams, sampler, batch_size, step)
    return collate([tasks[t].train[i] for t, i in rows], tokenizer, tasks=[t for t, _ in rows])


#: what one more micro-batch costs, in padded tokens (its fixed forward + backward work): measured on MiniLM, one CPU
#: thread, about 21 ms against 0.38 ms per padded token (``benchmarks/micro_batches.py`` prints both)
MICRO_BATCH_COST = 56
#: what each further adapter in one micro-batch costs, in padded tokens: rows of several adapters (several methods
#: above all: LoRA and bottleneck rows) go through every adapter's factors, masked per row; measured 31-60 tokens
#: for two LoRA adapters, 73-217 for LoRA with bottleneck (``benchmarks/micro_batches.py``): 64 is the low end
MIXED_ADAPTER_COST = 64


def plan(lengths: list[int], budget: int | None, tasks: list[str] | None = None) -> list[list[int]]:
    """Row positions per micro-batch: all rows in one when they fit ``budget`` padded tokens (or there is no
    budget) and use one adapter; else the rows sorted by length (stable), cut into consecutive runs, each run one
    micro-batch of at most ``budget`` padded tokens (rows x longest row; a longer row goes alone) or, when
    ``tasks`` (each row's adapter) are given, one micro-batch per adapter in the run, whichever costs less. The
    cuts and choices minimise the padded tokens plus ``MICRO_BATCH_COST`` per micro-batch plus
    ``MIXED_ADAPTER_COST`` per further adapter in a micro-batch (an exact dynamic programme over the cut points)."""
    tags = tasks if tasks is not None else [None] * len(lengths)
    if budget is None or (len(lengths) * max(lengths) <= budget and len(set(tags)) == 1):
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda j: lengths[j])
    ls, ts = [lengths[j] for j in order], [tags[j] for j in order]
    cost, choice = [0] + [float("inf")] * len(ls), [(0, False)] * (len(ls) + 1)
    for end in range(1, len(ls) + 1):  # the last run holds sorted rows start .. end-1
        per_task: dict = {}            # task -> [rows, longest] in the run
        for start in range(end - 1, -1, -1):
            per_task.setdefault(ts[start], [0, ls[start]])[0] += 1  # rows ascend: the first seen is the longest
            mixed = (end - start) * ls[end - 1]
            mixed_ok = mixed <= budget or end - start == 1
            split_ok = len(per_task) > 1 and all(n * longest <= budget or n == 1 for n, longest in per_task.values())
            if not (mixed_ok or split_ok):
                break  # runs only grow from here
            if mixed_ok:
                c = cost[start] + mixed + MICRO_BATCH_COST + MIXED_ADAPTER_COST * (len(per_task) - 1)
                if c < cost[end]:
                    cost[end], choice[end] = c, (start, False)
            if split_ok:
                c = cost[start] + sum(n * longest + MICRO_BATCH_COST for n, longest in per_task.values())
                if c < cost[end]:
                    cost[end], choice[end] = c, (start, True)
    parts, end = [], len(ls)
    while end:
        start, split = choice[end]
        run = order[start:end]
        parts += reversed([[j for j in run if tags[j] == t] for t in dict.fromkeys(tags[j] for j in run)]
                          if split else [run])
        end = start
    return parts[::-1]


def loss_count(task_type: str, labels: torch.Tensor) -> int:
    """What a task's mean loss averages over in ``labels``: rows (classification) or labelled tokens (token tasks;
    causal LM: the shifted next-token targets)."""
    if task_type == SEQ_CLS:
        return int(labels.shape[0])
    if task_type == CAUSAL_LM:
        labels = labels[:, 1:]
    return int((labels != -100).sum())


def micro_batches(tasks: dict[str, TaskData], rows: list[tuple[str, int]], budget: int | None,
                  tokenizer) -> list[MicroBatch]:
    """One draw's rows as length-sorted micro-batches with their per-task loss shares."""
    feats = [tasks[t].train[i] for t, i in rows]
    parts = plan([len(f["input_ids"]) for f in feats], budget, [t for t, _ in rows])
    out, counts, seen = [], {}, set()
    for part in parts:
        names = [rows[j][0] for j in part]
        batch = collate([feats[j] for j in part], tokenizer, tasks=names)
        n = {t: loss_count(tasks[t].type, y) for t, y in batch["labels"].items()}
        first = set(n) - seen
        seen |= set(n)
        mask = batch["attention_mask"]
        out.append(MicroBatch(batch, n, first, int(mask.sum()), int(mask.numel())))
        for t, c in n.items():
            counts[t] = counts.get(t, 0) + c
    for mb in out:
        mb.shares = {t: (c / counts[t] if counts[t] else 0.0) for t, c in mb.shares.items()}
    return out


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    """``batch`` with its tensors (also those in the per-task ``labels`` mapping) on ``device``."""
    def move(v):
        if torch.is_tensor(v):
            return v.to(device)
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v

    return {k: move(v) for k, v in batch.items()}
