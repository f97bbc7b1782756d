"""``adapterhub train RECIPE [key=value ...] [--resume]`` (also under ``accelerate launch -m adapterhub train``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..recipes import load_recipe
from .run import train_recipe


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, list(getattr(args, "overrides", []) or []))
    results = train_recipe(recipe, resume=bool(getattr(args, "resume", False)),
                           run_dir=Path(args.run_dir) if getattr(args, "run_dir", None) else None)
    return 0 if results is not None else 1
