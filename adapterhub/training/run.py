"""Run a validated recipe end to end: train, store the best adapters, write the report."""
from __future__ import annotations

import sys
from pathlib import Path


def train_recipe(recipe, resume: bool = False, run_dir: Path | None = None, model=None, store=None):
    """Train a validated recipe; store the best adapters; write the report. Returns per-task results."""
    from .loop import Trainer
    from .report import write_report

    trainer = Trainer(recipe, model=model, run_dir=run_dir)
    trainer.prepare()
    results = trainer.train(resume=resume)
    acc = trainer.acc
    if acc.is_main_process:
        out = trainer.run_dir
        text = write_report(out, results, trainer.history)
        print("\n" + text)
        for t in recipe.tasks:
            trainer.model.save_adapter(t, out / "adapters" / t, overwrite=True)
            if recipe.output.store:
                from ..store import Store

                entry = trainer.model.store_adapter(t, store=store or Store()) if not recipe.output.store_prefix \
                    else _store_as(trainer.model, t, recipe.output.store_prefix + t, store)
                print(f"stored {entry.name} v{entry.version} -> {entry.path}")
        print(f"report: {out / 'report.txt'}  curves: {out / 'curves.png'}", file=sys.stderr)
    acc.wait_for_everyone()
    trainer.finish()
    return results


def _store_as(model, name: str, store_name: str, store):
    import tempfile

    from ..store import Store

    store = store or Store()
    with tempfile.TemporaryDirectory() as tmp:
        model.write_adapter_files(name, tmp)
        return store.put(Path(tmp), store_name)
