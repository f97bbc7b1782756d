"""``adapterhub tune RECIPE --trials N KEY=SPACE ... [KEY=VALUE ...]``: hyperparameter search on Optuna.

Spaces: ``loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``int:LOW:HIGH``, ``choice:A,B,C``; other ``KEY=VALUE`` items
are fixed overrides. Trials are pruned on their intermediate validation metrics (median pruner); the best trial's
adapters are stored; the study directory gets a results table and a PNG of the trials. The training code and Optuna
are imported inside the handler only."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import positive_int
from .train import _training_module


def cmd_tune(args: argparse.Namespace) -> int:
    _training_module()  # a build without training fails the same way as train
    from ..training.tune import run_study
    from .common import open_store

    result = run_study(args.recipe, list(args.items or []), args.trials,
                       study_dir=Path(args.study_dir) if args.study_dir else None, objective=args.objective,
                       seed=args.seed, prune=not args.no_prune, store=open_store(args))
    print(result.table)
    best = result.study.best_trial
    print(f"\nbest trial {best.number}: objective {best.value:.4f} with "
          + " ".join(f"{k}={v!r}" for k, v in best.params.items()))
    for task, where in result.stored.items():
        print(f"  {task}: " + (f"store {where['store']} v{where['version']} ({where['path']})" if "store" in where
                               else where["path"]))
    print(f"trials: {result.best_dir.parent / 'trials.txt'}  plot: {result.best_dir.parent / 'trials.png'}",
          file=sys.stderr)
    return 0


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``tune`` to the main parser's sub-commands."""
    s = sub.add_parser("tune", parents=[common], help="search a recipe's hyperparameters (Optuna)",
                       description="Hyperparameter search over a recipe: each KEY=SPACE is searched "
                                   "(loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, choice:A,B,C), other "
                                   "KEY=VALUE items are fixed overrides. Trials are pruned on intermediate "
                                   "validation metrics; the best trial's adapters are stored.")
    s.add_argument("recipe", metavar="RECIPE", help="recipe file (YAML)")
    s.add_argument("items", metavar="KEY=SPACE", nargs="+",
                   help="e.g. training.lr=loguniform:1e-4:3e-3 tasks.ner.adapter.r=choice:4,8,16")
    s.add_argument("--trials", type=positive_int, required=True, help="number of trials")
    s.add_argument("--objective", metavar="TASK", help="optimise this task's primary validation metric (default: "
                                                       "the mean over the tasks)")
    s.add_argument("--study-dir", metavar="DIR", help="trial run dirs, table and plot (default: the recipe's run "
                                                      "dir + '-tune')")
    s.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    s.add_argument("--no-prune", action="store_true", help="run every trial to its end")
    s.set_defaults(func=cmd_tune)
