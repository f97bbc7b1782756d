"""Recipes from YAML files or mappings: overrides applied, then validated in full before any work starts."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import RecipeError, recipe_error
from .overrides import apply_overrides, load_yaml
from .schema import Recipe, recipe_model


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe", base_dir: Path | None = None) -> Recipe:
    """Validate a raw recipe mapping; a :class:`RecipeError` names every wrong key by its dotted path."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping")
    raw = copy.deepcopy(raw)
    raw.setdefault("name", Path(source).stem if source != "recipe" else "run")
    model = recipe_model()
    try:
        recipe = model.model_validate(raw)
    except ValidationError as e:
        raise recipe_error(e, model) from None
    recipe._raw, recipe._base_dir = raw, base_dir
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply ``key.path=value`` overrides, validate. Relative data paths resolve against the
    file's directory."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: no such recipe file")
    try:
        raw = load_yaml(p.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: cannot read the recipe ({e})") from None
    if raw is None:
        raise RecipeError(f"{p}: empty recipe")
    if not isinstance(raw, dict):
        raise RecipeError(f"{p}: a recipe is a YAML mapping")
    raw.setdefault("name", p.stem)
    return recipe_from_dict(apply_overrides(raw, overrides or []), str(p), base_dir=p.resolve().parent)
