"""Run a validated recipe end to end: set up, train every group, write each adapter once, write the report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .finish import TaskResult, publish


def finished_results(recipe, run_dir: Path) -> dict[str, TaskResult] | None:
    """The results of a finished run of ``recipe`` in ``run_dir`` (its ``results.json``), or None when it has not
    finished. A finished run of another recipe is refused."""
    from ..recipes import RecipeError
    from .checkpoint import recipe_hash

    done, ran = run_dir / "results.json", run_dir / "recipe.json"
    if not done.is_file():
        return None
    if not ran.is_file() or recipe_hash(json.loads(ran.read_text())) != recipe_hash(recipe):
        raise RecipeError(f"resume: {run_dir} holds a finished run of another recipe; nothing to resume")
    return {t: TaskResult(**r) for t, r in json.loads(done.read_text()).items()}


def train_recipe(recipe, resume: bool = False, run_dir: Path | None = None, model=None,
                 store=None) -> dict[str, TaskResult]:
    """Train a validated recipe; write each task's best adapter (into ``store`` / the local store, or into the run
    dir when ``output.store`` is false) and the report. Returns the per-task results. ``resume`` of a run that has
    finished writes nothing again: it returns that run's results."""
    from .trainer import Trainer

    if resume:
        done = finished_results(recipe, Path(run_dir or recipe.run_dir))
        if done is not None:
            print(f"resume: the run in {Path(run_dir or recipe.run_dir)} has finished; nothing to train or store "
                  "again (results.json says where its adapters are)", file=sys.stderr)
            return done
    trainer = Trainer(recipe, model=model, run_dir=run_dir)
    trainer.prepare()
    results = trainer.train(resume=resume)
    if trainer.acc.is_main_process:
        publish(trainer.session, results, store=store)
    trainer.acc.wait_for_everyone()
    trainer.close()
    return results
