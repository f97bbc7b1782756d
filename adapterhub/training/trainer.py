"""``Trainer``: a recipe's training from Python, in torchtune's shape: set up (:meth:`Trainer.prepare`: model,
data, adapters), fit each training group (:meth:`Trainer.train`: setup -> fit -> finish per group), close.
Writing the adapters and the report is :func:`adapterhub.training.run.train_recipe`'s last step."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..methods import TrainingHooks
from ..recipes import Recipe
from .checkpoint import load_checkpoint
from .evaluate import evaluate
from .finish import TaskResult, finish_group
from .fit import fit
from .setup import open_session, prepare_tasks, setup_group, start_run, training_groups
from .state import FitState
from .tasks import TaskData


class Trainer:
    """Trains the tasks of a validated recipe on ``model`` (default: ``recipe.base``) under Accelerate."""

    def __init__(self, recipe: Recipe, model=None, accelerator=None, run_dir: Path | None = None,
                 show_progress: bool = True):
        self.session = open_session(recipe, model=model, accelerator=accelerator, run_dir=run_dir,
                                    show_progress=show_progress)
        #: method name -> its training hooks in the last group trained (e.g. an allocator and its report)
        self.method_hooks: dict[str, TrainingHooks] = {}

    recipe = property(lambda self: self.session.recipe)
    model = property(lambda self: self.session.model)
    acc = property(lambda self: self.session.acc)
    run_dir = property(lambda self: self.session.run_dir)

    @property
    def tasks(self) -> dict[str, TaskData]:
        """Each task's encoded train / validation / test features (after :meth:`prepare`)."""
        return self.session.tasks

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every metric record of the run so far (as in ``metrics.jsonl``)."""
        return self.session.log.history

    def prepare(self) -> None:
        """Load and encode all data and create the adapters; every check happens here, before training."""
        prepare_tasks(self.session)

    def train(self, resume: bool = False) -> dict[str, TaskResult]:
        """Train every group (``resume``: each from its last checkpoint); each task ends at its best validation
        state. Returns the per-task results; writes no adapter."""
        if not self.session.tasks:
            self.prepare()
        start_run(self.session, resume)
        results: dict[str, TaskResult] = {}
        for names, tag in training_groups(self.recipe):
            group = setup_group(self.session, names, tag)
            self.method_hooks = group.hooks
            state = FitState.fresh(names)
            if resume:
                load_checkpoint(self.session, group, state)
            seconds = fit(self.session, group, state)
            results.update(finish_group(self.session, group, state, seconds))
        return results

    def evaluate(self, task: str, split: str = "validation") -> dict[str, Any]:
        """Metrics of ``task``'s adapter as it is now on ``split`` (``"test"``: with test-only metrics)."""
        return evaluate(self.session, task, split, full=split == "test")

    def close(self) -> None:
        """Close trackers and the process group (call once, after the last collective)."""
        self.session.acc.end_training()
