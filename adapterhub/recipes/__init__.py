"""Recipes: YAML data that describes a training run, as typed models (``recipe.training.steps``,
``recipe.tasks["x"].data``). A recipe is validated in full before any work starts; a wrong key or type is a
:class:`RecipeError` naming the key by its dotted path (``tasks.sentiment.adapter.r: ...``).

- :mod:`.schema`: the models (:class:`Recipe`, :class:`TaskSpec`, :class:`DataSpec`, :class:`TrainingSpec`,
  :class:`OutputSpec`); methods add their own ``training.*`` keys;
- :mod:`.overrides`: the one ``a.b.c=value`` override mechanism;
- :mod:`.loading`: :func:`load_recipe` (file + overrides) and :func:`recipe_from_dict`;
- :mod:`.errors`: :class:`RecipeError` and the translation of pydantic's errors into its messages.
"""
from .errors import RecipeError
from .loading import load_recipe, recipe_from_dict
from .overrides import apply_overrides, load_yaml, parse_override
from .schema import DataSpec, OutputSpec, Recipe, TaskSpec, TrainingSpec, recipe_model

__all__ = ["DataSpec", "OutputSpec", "Recipe", "RecipeError", "TaskSpec", "TrainingSpec", "apply_overrides",
           "load_recipe", "load_yaml", "parse_override", "recipe_from_dict", "recipe_model"]
