"""Recipes: YAML data that describes a training run. Validated in full before any work starts; a wrong key or
type is an error that names the key (``tasks.sentiment.adapter.r: expected int, got str``)."""
from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import AdapterHubError
from .heads import TASKS
from .methods import config_from_dict, get_method, methods, training_option_fields
from .names import validate_name


class RecipeError(AdapterHubError):
    """A recipe is invalid."""


# ---- schema: key -> (type(s), default); nested dicts are their own schema ----------------------------
TASK_SCHEMA: dict[str, tuple] = {
    "type": (str, None),
    "data": (dict, None),
    "labels": ((list, type(None)), None),
    "adapter": (dict, None),
    "head": (dict, {}),
    "loss_weight": ((int, float), 1.0),
    "lr": ((int, float, type(None)), None),
    "max_length": (int, 128),
    "primary_metric": ((str, type(None)), None),
}
DATA_KEYS = {"type", "path", "name", "split", "text_field", "label_field", "tokens_field", "tags_field",
             "prompt_field", "completion_field", "limit", "validation", "test", "config", "task", "encoding",
             "delimiter", "data_files", "revision", "cache_dir"}
TRAINING_SCHEMA: dict[str, tuple] = {
    "mode": (str, "joint"),
    "steps": ((int, type(None)), None),
    "epochs": ((int, float, type(None)), None),
    "batch_size": (int, 32),
    "eval_batch_size": (int, 64),
    "lr": ((int, float), 5e-4),
    "weight_decay": ((int, float), 0.0),
    "schedule": (str, "linear"),
    "warmup_steps": (int, 0),
    "grad_accum": (int, 1),
    "max_grad_norm": ((int, float, type(None)), 1.0),
    "mixed_precision": (str, "no"),
    "seed": (int, 0),
    "eval_every": ((int, type(None)), None),
    "save_every": ((int, type(None)), None),
    "early_stopping": ((int, type(None)), None),
    "sampling": (str, "proportional"),
    "temperature": ((int, float), 2.0),
    "progressive": ((dict, type(None)), None),
    "max_eval_examples": ((int, type(None)), None),
    "max_test_examples": ((int, type(None)), None),
    "log_every": (int, 10),
}
OUTPUT_SCHEMA: dict[str, tuple] = {
    "dir": (str, "runs/{name}"),
    "store": (bool, True),
    "store_prefix": (str, ""),
}
TOP_SCHEMA = {"name": (str, None), "base": (str, None), "tasks": (dict, None), "training": (dict, {}),
              "output": (dict, {}), "description": (str, "")}

MODES = ("joint", "separate")
SCHEDULES = ("linear", "cosine", "constant")
SAMPLINGS = ("proportional", "temperature", "equal")
PRECISIONS = ("no", "fp16", "bf16")


@dataclasses.dataclass
class TaskSpec:
    name: str
    type: str
    data: dict[str, Any]
    labels: list[str] | None
    adapter: dict[str, Any]
    head: dict[str, Any]
    loss_weight: float
    lr: float | None
    max_length: int
    primary_metric: str | None

    @property
    def method_config(self):
        return config_from_dict(self.adapter)


@dataclasses.dataclass
class Recipe:
    name: str
    base: str
    tasks: dict[str, TaskSpec]
    training: dict[str, Any]
    output: dict[str, Any]
    description: str = ""
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)
    base_dir: Path | None = None  # the recipe file's directory: relative data paths resolve against it

    @property
    def run_dir(self) -> Path:
        return Path(self.output["dir"].format(name=self.name))


def _check(d: dict, schema: dict, where: str) -> dict:
    if not isinstance(d, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(schema))
    if unknown:
        raise RecipeError(f"{where + '.' if where else ''}{unknown[0]}: unknown key (known: {sorted(schema)})")
    out = {}
    for key, (types, default) in schema.items():
        path = f"{where}.{key}" if where else key
        if key not in d:
            if default is None and not (isinstance(types, tuple) and type(None) in types):
                raise RecipeError(f"{path}: required key is missing")
            out[key] = copy.deepcopy(default)
            continue
        v = d[key]
        ok_types = types if isinstance(types, tuple) else (types,)
        if isinstance(v, bool) and bool not in ok_types:
            ok = False
        else:
            ok = isinstance(v, ok_types)
        if not ok:
            names = "/".join(t.__name__ for t in ok_types if t is not type(None))
            raise RecipeError(f"{path}: expected {names}, got {type(v).__name__} ({v!r})")
        out[key] = v
    return out


def _choice(value, choices, path):
    if value not in choices:
        raise RecipeError(f"{path}: {value!r} is not one of {list(choices)}")


def validate(raw: dict[str, Any], source: str = "recipe", base_dir: Path | None = None) -> Recipe:
    raw = copy.deepcopy(raw)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping")
    raw.setdefault("name", Path(source).stem if source != "recipe" else "run")
    top = _check(raw, TOP_SCHEMA, "")
    method_options = training_option_fields()
    tr = _check(top["training"], {**TRAINING_SCHEMA, **{k: v[:2] for k, v in method_options.items()}}, "training")
    _choice(tr["mode"], MODES, "training.mode")
    _choice(tr["schedule"], SCHEDULES, "training.schedule")
    _choice(tr["sampling"], SAMPLINGS, "training.sampling")
    _choice(tr["mixed_precision"], PRECISIONS, "training.mixed_precision")
    if (tr["steps"] is None) == (tr["epochs"] is None):
        raise RecipeError("training: give exactly one of training.steps or training.epochs")
    for k in ("steps", "batch_size", "eval_batch_size", "grad_accum", "eval_every", "save_every", "log_every"):
        if tr[k] is not None and tr[k] < 1:
            raise RecipeError(f"training.{k}: must be >= 1, got {tr[k]}")
    if tr["lr"] <= 0:
        raise RecipeError(f"training.lr: must be > 0, got {tr['lr']}")
    if tr["temperature"] <= 0:
        raise RecipeError(f"training.temperature: must be > 0, got {tr['temperature']}")
    out = _check(top["output"], OUTPUT_SCHEMA, "output")
    if not top["tasks"]:
        raise RecipeError("tasks: at least one task is required")
    tasks = {}
    for tname, td in top["tasks"].items():
        where = f"tasks.{tname}"
        try:
            validate_name(str(tname))
        except AdapterHubError as e:
            raise RecipeError(f"{where}: bad task name ({e})") from None
        t = _check(td, TASK_SCHEMA, where)
        _choice(t["type"], TASKS, f"{where}.type")
        bad = sorted(set(t["data"]) - DATA_KEYS)
        if bad:
            raise RecipeError(f"{where}.data.{bad[0]}: unknown key (known: {sorted(DATA_KEYS)})")
        if "type" not in t["data"]:
            raise RecipeError(f"{where}.data.type: required key is missing")
        if t["labels"] is not None and not all(isinstance(x, str) for x in t["labels"]):
            raise RecipeError(f"{where}.labels: expected a list of strings")
        if "method" not in t["adapter"]:
            raise RecipeError(f"{where}.adapter.method: required key is missing")
        try:
            config_from_dict(t["adapter"])
        except (AdapterHubError, TypeError) as e:
            raise RecipeError(f"{where}.adapter: {e}") from None
        if t["loss_weight"] < 0:
            raise RecipeError(f"{where}.loss_weight: must be >= 0")
        tasks[tname] = TaskSpec(name=tname, **t)
    for t, spec in tasks.items():
        try:
            get_method(spec.adapter["method"]).validate_for_training(spec.method_config)
        except AdapterHubError as e:
            raise RecipeError(f"tasks.{t}.adapter: {e}") from None
    for mname, method in methods().items():
        using = [t for t, spec in tasks.items() if spec.adapter["method"] == mname]
        try:
            method.validate_training_options({k: tr[k] for k in method.training_options}, using, tr["mode"])
        except AdapterHubError as e:
            raise RecipeError(str(e)) from None
    if tr["progressive"]:
        for k, v in tr["progressive"].items():
            if k not in tasks:
                raise RecipeError(f"training.progressive.{k}: no such task (tasks: {list(tasks)})")
            if not isinstance(v, int) or v < 0:
                raise RecipeError(f"training.progressive.{k}: expected a step number >= 0, got {v!r}")
        if all(tr["progressive"].get(t, 0) > 0 for t in tasks):
            raise RecipeError("training.progressive: at least one task must start at step 0")
    return Recipe(name=top["name"], base=top["base"], tasks=tasks, training=tr, output=out,
                  description=top["description"], raw=raw, base_dir=base_dir)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.2), not as the string PyYAML 1.1 makes of it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _parse_value(text: str) -> Any:
    return _yaml(text) if text != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``training.steps=200 tasks.sentiment.adapter.r=4``: values are parsed as YAML scalars."""
    raw = copy.deepcopy(raw)
    for ov in overrides:
        if "=" not in ov:
            raise RecipeError(f"override {ov!r}: expected key.path=value")
        key, _, val = ov.partition("=")
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p) if isinstance(node, dict) else None
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"override {ov!r}: {p} is not a mapping")
            node = nxt
        node[parts[-1]] = _parse_value(val)
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: no such recipe file")
    try:
        raw = _yaml(p.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML ({e})") from None
    if raw is None:
        raise RecipeError(f"{p}: empty recipe")
    if isinstance(raw, dict):
        raw.setdefault("name", p.stem)
    return validate(apply_overrides(raw, overrides or []), str(p), base_dir=p.resolve().parent)
