"""Hyperparameter search over a recipe with Optuna (``adapterhub tune RECIPE --trials N key=space ...``).

Each ``key=space`` names a recipe key (dotted, as for overrides) and a space: ``loguniform:LOW:HIGH``,
``uniform:LOW:HIGH``, ``int:LOW:HIGH`` or ``choice:A,B,C`` (each choice read as YAML); a ``key=value`` without a space
is a plain override for every trial. Every space is checked against the recipe before the first trial (a typo in a
key is an error naming it). Each trial trains the recipe with its values into its own run directory; after each
validation round it reports the objective (the mean over the tasks of each task's best primary validation metric so
far, signed so that larger is better; or one task's, ``objective=TASK``) and the pruner may stop it. At the end the
best trial's adapters go into the store (unless the recipe says ``output.store: false``), and the study directory
holds ``trials.json``, ``trials.txt`` (a table) and ``trials.png``."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import AdapterHubError
from ..recipes import RecipeError, load_recipe, parse_override

SPACES = ("loguniform", "uniform", "int", "choice")


@dataclasses.dataclass
class Space:
    key: str
    kind: str
    args: tuple

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.args))
        if self.kind == "int":
            return trial.suggest_int(self.key, *self.args)
        return trial.suggest_float(self.key, *self.args, log=self.kind == "loguniform")

    def corners(self) -> list[Any]:
        """Values that must each make a valid recipe (checked before the first trial)."""
        return list(self.args)


def parse_item(item: str) -> tuple[str, Space | None, str]:
    """``key=space`` -> (key, Space, item); ``key=value`` -> (key, None, item) (a fixed override)."""
    parts, _value = parse_override(item)
    key, _, text = item.partition("=")
    kind, colon, rest = text.strip().partition(":")
    if not colon or kind not in SPACES:
        return ".".join(parts), None, item
    return ".".join(parts), Space(".".join(parts), kind, _space_args(item, kind, rest)), item


def _space_args(item: str, kind: str, rest: str) -> tuple:
    if kind == "choice":
        values = [parse_override(f"x={v.strip()}")[1] for v in rest.split(",") if v.strip()]
        if len(values) < 2:
            raise AdapterHubError(f"tune: {item!r}: a choice needs at least two values (choice:A,B)")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise AdapterHubError(f"tune: {item!r}: the choices repeat a value")
        return tuple(values)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise AdapterHubError(f"tune: {item!r}: expected {kind}:LOW:HIGH")
    try:
        low, high = (int(b) if kind == "int" else float(b) for b in bounds)
    except ValueError:
        raise AdapterHubError(f"tune: {item!r}: LOW and HIGH must be {'integers' if kind == 'int' else 'numbers'}"
                              ) from None
    if not low < high or (kind == "loguniform" and low <= 0) or not all(map(math.isfinite, (low, high))):
        raise AdapterHubError(f"tune: {item!r}: need LOW < HIGH" + (" and LOW > 0" if kind == "loguniform" else ""))
    return low, high


def check_spaces(recipe_path, fixed: list[str], spaces: list[Space]) -> None:
    """Every space's corner values give a valid recipe: a wrong key or value fails here, before any training."""
    keys = [s.key for s in spaces]
    if len(set(keys)) != len(keys):
        raise AdapterHubError(f"tune: a key is searched twice ({sorted(k for k in keys if keys.count(k) > 1)[0]})")
    for s in spaces:
        for v in s.corners():
            try:
                load_recipe(recipe_path, fixed + [f"{s.key}={json.dumps(v)}"])
            except RecipeError as e:
                raise RecipeError(f"tune: {s.key}={s.kind}:...: the value {v!r} makes an invalid recipe: {e}") from None


def objective_value(state, tasks: list[str], target: str | None) -> float:
    """The mean of each task's best signed primary validation metric so far (or ``target``'s alone)."""
    scores = [state.best[t].score for t in ([target] if target else tasks)]
    return float(sum(scores) / len(scores)) if all(math.isfinite(s) for s in scores) else float("-inf")


@dataclasses.dataclass
class TuneResult:
    study: Any
    best_dir: Path
    stored: dict[str, Any]
    table: str


def run_study(recipe_path, items: list[str], trials: int, study_dir: Path | None = None, objective: str | None = None,
              seed: int = 0, prune: bool = True, store=None) -> TuneResult:
    """Run the search (see the module doc); returns the study, the best trial's run dir, where its adapters went
    and the results table."""
    optuna = _optuna()
    parsed = [parse_item(i) for i in items]
    fixed = [i for _k, s, i in parsed if s is None]
    spaces = [s for _k, s, _i in parsed if s is not None]
    if not spaces:
        raise AdapterHubError("tune: give at least one key=space (e.g. training.lr=loguniform:1e-4:3e-3)")
    recipe = load_recipe(recipe_path, fixed)
    if objective is not None and objective not in recipe.tasks:
        raise AdapterHubError(f"tune: --objective {objective!r} is not a task of the recipe ({list(recipe.tasks)})")
    check_spaces(recipe_path, fixed, spaces)
    # absolute: each trial's output.dir override must not resolve against the recipe's directory
    root = Path(study_dir or f"{recipe.run_dir}-tune").resolve()
    root.mkdir(parents=True, exist_ok=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if prune else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(lambda trial: _trial(optuna, trial, recipe_path, fixed, spaces, root, objective), n_trials=trials,
                   catch=())
    from .tune_report import best_adapters, write_trials

    table = write_trials(study, root)
    best_dir = root / f"trial-{study.best_trial.number}"
    stored = best_adapters(load_recipe(recipe_path, fixed), best_dir, store)
    return TuneResult(study, best_dir, stored, table)


def _trial(optuna, trial, recipe_path, fixed: list[str], spaces: list[Space], root: Path, target: str | None):
    from .run import train_recipe

    values = {s.key: s.suggest(trial) for s in spaces}
    run_dir = root / f"trial-{trial.number}"
    recipe = load_recipe(recipe_path, fixed + [f"{k}={json.dumps(v)}" for k, v in values.items()]
                         + ["output.store=false", f"output.dir={json.dumps(str(run_dir))}"])
    print(f"tune: trial {trial.number}: " + " ".join(f"{k}={v!r}" for k, v in values.items()), file=sys.stderr)

    def report(group, state):
        value = objective_value(state, group.names, target)
        trial.report(value, state.step)
        if trial.should_prune():
            print(f"tune: trial {trial.number} pruned at step {state.step} (objective {value:.4f})", file=sys.stderr)
            raise optuna.TrialPruned()

    results = train_recipe(recipe, on_validation=report, show_progress=False)
    names = [target] if target else list(results)
    scores = [recipe_signed(results[t]) for t in names]
    trial.set_user_attr("best_steps", {t: r.best_step for t, r in results.items()})
    trial.set_user_attr("validation", {t: r.validation.get(r.primary) for t, r in results.items()})
    return float(sum(scores) / len(scores))


def recipe_signed(result) -> float:
    """A task result's primary validation metric, signed so that larger is better."""
    from ..data.metrics import LOWER_IS_BETTER

    v = float(result.validation[result.primary])
    return -v if result.primary in LOWER_IS_BETTER else v


def _optuna():
    try:
        import optuna
    except ImportError:
        raise AdapterHubError("tune needs Optuna: pip install 'adapterhub[train]'") from None
    return optuna
