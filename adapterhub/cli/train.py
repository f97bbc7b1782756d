"""``adapterhub train RECIPE [key=value ...] [--resume] [--run-dir DIR]``.

Also run under ``accelerate launch -m adapterhub train ...``. The training code (torch, accelerate, the optional
``adapterhub[train]`` dependencies) is imported inside the handler only.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType

from ..errors import AdapterHubError

TRAINING_MODULE = "adapterhub.training.run"


def _training_module() -> ModuleType:
    """The module holding ``train_recipe``, or a clean error naming what is missing."""
    try:
        return importlib.import_module(TRAINING_MODULE)
    except ModuleNotFoundError as e:
        if e.name in (TRAINING_MODULE, TRAINING_MODULE.rpartition(".")[0]):
            raise AdapterHubError("training is not available in this build") from None
        if e.name and not e.name.startswith("adapterhub"):
            raise AdapterHubError(f"training needs the optional dependencies (missing module {e.name!r}): "
                                  "pip install 'adapterhub[train]'") from None
        raise


def cmd_train(args: argparse.Namespace) -> int:
    """Load the recipe (with its ``key=value`` overrides) and train it: 0 when training returned results."""
    training = _training_module()  # first: a build without training fails the same whatever the recipe
    from ..recipes import load_recipe

    recipe = load_recipe(args.recipe, list(args.overrides or []))
    results = training.train_recipe(recipe, resume=bool(args.resume),
                                    run_dir=Path(args.run_dir) if args.run_dir else None)
    return 0 if results is not None else 1


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``train`` to the main parser's sub-commands."""
    s = sub.add_parser("train", parents=[common], help="train an adapter from a recipe",
                       description="Train an adapter from a recipe file, with key=value overrides.")
    s.add_argument("recipe", metavar="RECIPE", help="recipe file (YAML)")
    s.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="recipe overrides (values are YAML), e.g. training.lr=1e-4")
    s.add_argument("--resume", action="store_true", help="resume from the last checkpoint of this run")
    s.add_argument("--run-dir", metavar="DIR", help="where the run's checkpoints and report go "
                                                     "(default: chosen by the recipe)")
    s.set_defaults(func=cmd_train)
