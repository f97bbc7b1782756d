"""Run a validated recipe end to end: set up, train every group, write each adapter once, write the report."""
from __future__ import annotations

from pathlib import Path

from .finish import TaskResult, publish


def train_recipe(recipe, resume: bool = False, run_dir: Path | None = None, model=None,
                 store=None) -> dict[str, TaskResult]:
    """Train a validated recipe; write each task's best adapter (into ``store`` / the local store, or into the run
    dir when ``output.store`` is false) and the report. Returns the per-task results."""
    from .trainer import Trainer

    trainer = Trainer(recipe, model=model, run_dir=run_dir)
    trainer.prepare()
    results = trainer.train(resume=resume)
    if trainer.acc.is_main_process:
        publish(trainer.session, results, store=store)
    trainer.acc.wait_for_everyone()
    trainer.close()
    return results
