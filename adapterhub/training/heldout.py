"""Scoring adapters that this run did not train on a recipe task's test split, e.g. before and after ``adapterhub
compress``: the task's data is split and encoded exactly as for training (same seed, same cap), and each adapter is
scored as a run's test step scores its own."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..recipes import Recipe, RecipeError
from .evaluate import evaluate
from .metrics_log import MetricsLog
from .setup import Session, make_accelerator
from .state import scalars
from .tasks import TaskData, prepare_task


def task_data(recipe: Recipe, task: str, tokenizer) -> TaskData:
    """Recipe task ``task``'s data, split and encoded as for training."""
    if task not in recipe.tasks:
        raise RecipeError(f"recipe {recipe.name!r} has no task {task!r} (tasks: {sorted(recipe.tasks)})")
    return prepare_task(recipe.tasks[task], tokenizer, recipe.training.seed, recipe.base_dir)


def score_adapters(recipe: Recipe, task: str, model, adapters: list[str],
                   data: TaskData | None = None) -> dict[str, dict[str, Any]]:
    """Adapter name -> its test metrics on ``recipe``'s task ``task`` (the adapters must have that task's type and
    labels). ``data``: the task's :func:`task_data`, when already prepared."""
    data = data if data is not None else task_data(recipe, task, model.tokenizer)
    spec = recipe.tasks[task]
    with tempfile.TemporaryDirectory(prefix="adapterhub-test-") as tmp:
        acc = make_accelerator(recipe, Path(tmp))
        session = Session(recipe, acc, model, Path(tmp), False, MetricsLog(Path(tmp) / "metrics.jsonl", acc))
        session.tasks[task] = data
        for name in adapters:
            e = model.entry(name)
            if e.task != spec.type or e.head.labels != data.labels:
                raise RecipeError(f"tasks.{task}: adapter {name!r} is a {e.task} adapter with labels "
                                  f"{e.head.labels}; the task is {spec.type} with labels {data.labels}")
        return {name: scalars(evaluate(session, task, "test", full=True, adapter=name)) for name in adapters}
