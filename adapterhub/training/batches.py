"""Training batches: rows drawn from the per-task example streams (by the task sampler when several tasks train
together), padded by the one :func:`adapterhub.data.collate`, which groups the labels per task."""
from __future__ import annotations

from typing import Any

import torch

from ..data import collate
from .sampling import ExampleStream, TaskSampler
from .tasks import TaskData


def draw_batch(tasks: dict[str, TaskData], streams: dict[str, ExampleStream], sampler: TaskSampler,
               batch_size: int, step: int, tokenizer) -> dict[str, Any]:
    """One batch of ``batch_size`` training rows over the tasks of ``streams``: ``input_ids``, ``attention_mask``,
    ``adapters`` (each row's task) and ``labels`` ({task: that task's labels in row order}). One task: its next
    rows; several: the sampler draws each row's task (tasks that have not started yet are left out) and the rows
    come grouped by task."""
    names = list(streams)
    if len(names) == 1:
        rows = [(names[0], i) for i in streams[names[0]].take(batch_size)]
    else:
        drawn = sampler.draw(batch_size, step)
        rows = []
        for t in names:
            k = drawn.count(t)
            if k:
                rows += [(t, i) for i in streams[t].take(k)]
    return collate([tasks[t].train[i] for t, i in rows], tokenizer, tasks=[t for t, _ in rows])


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    """``batch`` with its tensors (also those in the per-task ``labels`` mapping) on ``device``."""
    def move(v):
        if torch.is_tensor(v):
            return v.to(device)
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v

    return {k: move(v) for k, v in batch.items()}
