"""The multi-task keys of a recipe, checked: ``shared`` (an adapter trained on the rows of every task, beneath each
task's own, folded into each task's adapter on store), ``training.loss_weighting`` and its options, and
``training.token_budget``. Each check raises :class:`~adapterhub.recipes.errors.At` naming the dotted key."""
from __future__ import annotations

from typing import Any

from ..errors import AdapterHubError
from ..methods import config_from_dict, get_method, methods
from .errors import At

LOSS_WEIGHTINGS = ("fixed", "uncertainty", "dwa", "gradnorm")
#: the ``training.*`` options of each adaptive loss weighting
WEIGHTING_OPTIONS = {"dwa": ("dwa_temperature", "dwa_window"),
                     "gradnorm": ("gradnorm_alpha", "gradnorm_lr", "gradnorm_on")}


def foldable_methods() -> list[str]:
    """Methods a shared adapter may use: their adapters hold plain low-rank factors, so a shared adapter and a task's
    own concatenate into one adapter of that method."""
    return sorted(n for n, m in methods().items() if m.accepts_factors and m.linear)


def linear_methods() -> list[str]:
    return sorted(n for n, m in methods().items() if m.linear)


def check_shared_adapter(shared: dict[str, Any]) -> dict[str, Any]:
    """The recipe-level ``shared`` mapping: a method config of a method that can be folded into each task's adapter."""
    if "method" not in shared:
        raise At("method", "required key is missing")
    name = shared["method"]
    if name not in methods():
        raise At("method", f"unknown method {name!r}; known: {sorted(methods())}")
    if name not in foldable_methods():
        raise At("method", f"{name!r} adapters cannot be shared: on store the shared adapter is concatenated into "
                           f"each task's adapter, which needs a method whose adapters hold low-rank factors "
                           f"(one of {foldable_methods()})")
    try:
        get_method(name).validate_for_training(config_from_dict(shared))
    except (AdapterHubError, TypeError) as e:
        raise ValueError(str(e)) from None
    return shared


def check_weighting_options(weighting: str, given: set[str]) -> None:
    """Options of a loss weighting the run does not use are refused (they would change nothing)."""
    for other, keys in WEIGHTING_OPTIONS.items():
        for k in keys:
            if k in given and weighting != other:
                raise At(k, f"applies to loss_weighting: {other} (this run's loss_weighting is {weighting!r})")


def check_multitask(recipe) -> None:
    """What the multi-task keys need from the rest of the recipe (``recipe``: the validated :class:`Recipe`)."""
    tr, tasks = recipe.training, recipe.tasks
    joint = tr.mode == "joint" and len(tasks) > 1
    if tr.loss_weighting != "fixed" and not joint:
        why = "training.mode is 'separate' (one task per group)" if tr.mode != "joint" else "the recipe has one task"
        raise At("training.loss_weighting", f"{tr.loss_weighting!r} balances the losses of tasks trained together; "
                                            f"{why}: use fixed")
    for t, spec in tasks.items():
        if "sampling_weight" in spec.model_fields_set and not joint:
            raise At(f"tasks.{t}.sampling_weight", "weighs a task's share of the rows of a joint batch; this run "
                                                   "trains one task per group")
    if tr.loss_weighting == "gradnorm" and tr.gradnorm_on == "shared" and recipe.shared is None:
        raise At("training.gradnorm_on", "'shared' measures gradient norms on the shared adapter's parameters, but "
                                         "the recipe has no shared adapter (add shared: {method: ..., r: ...}, or "
                                         "use gradnorm_on: activations)")
    if recipe.shared is not None:
        if tr.mode != "joint":
            raise At("shared", "a shared adapter trains on the rows of every task in one joint group; "
                               "training.mode is 'separate'")
        for t, spec in tasks.items():
            if not spec.method.linear:
                raise At(f"tasks.{t}.adapter.method",
                         f"{spec.adapter['method']!r} adapters have no low-rank factors, so the shared adapter cannot "
                         f"be folded into this task's adapter on store; with shared: every task's adapter must be "
                         f"one of {linear_methods()}")
    if tr.token_budget is not None and "token_budget" in tr.model_fields_set:  # the default lets a longer row go alone
        for t, spec in tasks.items():
            if spec.max_length > tr.token_budget:
                raise At("training.token_budget", f"{tr.token_budget} is below tasks.{t}.max_length="
                                                  f"{spec.max_length}: one row of that task would not fit a "
                                                  "micro-batch")
