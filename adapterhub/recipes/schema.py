"""The recipe schema: typed, frozen pydantic models (``recipe.training.steps``, ``recipe.tasks["x"].data.path``).

Every key a run reads later is typed and checked here, strictly (``True`` is no int, ``"4"`` is no number).
Method-specific ``training.*`` keys are not listed here: :func:`recipe_model` adds each registered method's
``training_options`` to :class:`TrainingSpec`, and the methods check their own options and adapter configs."""
from __future__ import annotations

import codecs
import os
import string
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model, field_validator, model_validator

from ..data.metrics import DEFAULT_PRIMARY, TASK_METRICS
from ..data import FILE_TYPES, PACKAGE_SOURCES, SOURCE_TYPES, normalize_task
from ..data.conll import TAG_FIELDS
from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, TASKS, check_head_options
from ..methods import config_from_dict, get_method, methods, training_option_fields
from ..model.quantize import check_trainable_mode
from .multitask import LOSS_WEIGHTINGS, check_multitask, check_shared_adapter, check_weighting_options
from ..names import validate_name
from .errors import At, RecipeError

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
FILE_SOURCES = FILE_TYPES


class Spec(BaseModel):
    """Base of the recipe models: strict types, unknown keys refused, read-only after validation."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class DataSpec(Spec):
    """A task's data source (see :mod:`adapterhub.data.sources`) and its held-out splits: a fraction carved out of
    the data, or (file sources) a file path, read like ``path``. Relative paths resolve against the recipe's
    directory."""

    type: Literal[SOURCE_TYPES]
    path: Optional[str] = None
    name: Optional[str] = None
    split: Optional[str] = None
    config: Optional[str] = None
    task: Optional[str] = None
    limit: Optional[PositiveInt] = None
    validation: Optional[Union[Fraction, str]] = None
    test: Optional[Union[Fraction, str]] = None
    text_field: Optional[str] = None
    label_field: Optional[str] = None
    tokens_field: Optional[str] = None
    tags_field: Optional[str] = None
    tag_field: Optional[Literal[tuple(TAG_FIELDS)]] = None
    prompt_field: Optional[str] = None
    completion_field: Optional[str] = None
    encoding: Optional[str] = None
    delimiter: Optional[str] = None
    data_files: Optional[Union[str, list[str], dict[str, Union[str, list[str]]]]] = None
    revision: Optional[str] = None
    cache_dir: Optional[str] = None

    @model_validator(mode="after")
    def _source_is_readable(self) -> "DataSpec":
        if self.type in FILE_SOURCES and not self.path:
            raise At("path", f"required key is missing (a {self.type} source reads a file)")
        if self.type == "package" and self.name is None:
            raise At("name", f"required key is missing (a package source is one of {sorted(PACKAGE_SOURCES)})")
        if self.type == "package" and self.name not in PACKAGE_SOURCES:
            raise At("name", f"{self.name!r} is not a packaged data set (known: {sorted(PACKAGE_SOURCES)})")
        if self.type == "hf" and not (self.name or self.path):
            raise At("name", "required key is missing (a hf source needs a data set name or a path)")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise At("delimiter", f"must be one character, got {self.delimiter!r}")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise At("encoding", f"unknown text encoding {self.encoding!r}") from None
        if self.tag_field is not None and self.type != "conllu":
            raise At("tag_field", f"picks the tag column of a conllu source, not of a {self.type} source (use "
                                  "tags_field to name the tags field of jsonl / json / hf rows)")
        for key in ("validation", "test"):
            if isinstance(getattr(self, key), str) and self.type not in FILE_SOURCES:
                raise At(key, f"a file path is for file sources ({', '.join(FILE_SOURCES)}); a {self.type} "
                              "source takes a fraction (or has its own split)")
        fractions = [v for v in (self.validation, self.test) if isinstance(v, float)]
        if sum(fractions) >= 1:
            raise ValueError(f"validation ({self.validation}) + test ({self.test}) fractions must be < 1")
        return self

    def source(self) -> dict[str, Any]:
        """The source mapping :func:`adapterhub.data.load_splits` reads (the keys given, without the fractions)."""
        return self.model_dump(exclude_none=True, exclude={"validation", "test"})

    def fractions(self) -> dict[str, float | str]:
        """The held-out splits given (``validation``, ``test``): fractions, or file paths."""
        return self.model_dump(exclude_none=True, include={"validation", "test"})

    @property
    def label(self) -> str:
        """What the adapter card lists under ``datasets``: the data set name, else the file name."""
        return str(self.name or Path(str(self.path or "data")).name)


class TaskSpec(Spec):
    """One task: its data, its adapter (a method config mapping) and its head."""

    type: Literal[TASKS]
    data: DataSpec
    adapter: dict[str, Any]
    labels: Optional[Annotated[list[str], Field(min_length=1)]] = None
    head: dict[str, Any] = {}
    loss_weight: Annotated[float, Field(ge=0)] = 1.0
    sampling_weight: Annotated[float, Field(gt=0)] = 1.0  # joint sampling: this task's probability times this
    lr: Optional[Annotated[float, Field(gt=0)]] = None
    max_length: Annotated[int, Field(ge=2)] = 128
    primary_metric: Optional[str] = None
    _name: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    @property
    def method(self):
        """The plug-in of this task's adapter method."""
        return get_method(self.adapter["method"])

    @property
    def method_config(self):
        """A fresh method config object from :attr:`adapter`."""
        return config_from_dict(self.adapter)

    @property
    def primary(self) -> str:
        """The validation metric that picks the best checkpoint."""
        return self.primary_metric or DEFAULT_PRIMARY[self.type]

    @field_validator("adapter")
    @classmethod
    def _adapter_trains(cls, adapter: dict[str, Any]) -> dict[str, Any]:
        if "method" not in adapter:
            raise At("method", "required key is missing")
        if adapter["method"] not in methods():
            raise At("method", f"unknown method {adapter['method']!r}; known: {sorted(methods())}")
        try:
            get_method(adapter["method"]).validate_for_training(config_from_dict(adapter))
        except (AdapterHubError, TypeError) as e:
            raise ValueError(str(e)) from None
        return adapter

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        if self.labels is not None and self.type == CAUSAL_LM:
            raise At("labels", "a causal-lm task takes no labels")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise At("labels", f"labels must be unique, got {self.labels}")
        try:
            check_head_options(self.type, self.head)
        except AdapterHubError as e:
            raise At("head", str(e)) from None
        known = TASK_METRICS[self.type]
        if self.primary_metric is not None and self.primary_metric not in known:
            raise At("primary_metric", f"{self.primary_metric!r} is not a metric of {self.type} (known: "
                                       f"{list(known)})")
        package = PACKAGE_SOURCES.get(self.data.name) if self.data.type == "package" else None
        if package is not None and package.task != self.type:
            raise At("type", f"{self.type!r}, but packaged data set {self.data.name!r} is for {package.task!r}")
        if self.data.task is not None:
            try:
                declared = normalize_task(self.data.task)
            except AdapterHubError as e:
                raise At("data.task", str(e)) from None
            if declared != self.type:
                raise At("data.task", f"{self.data.task!r} contradicts the task's type {self.type!r}")
        return self


class TrainingSpec(Spec):
    """How to train. :func:`recipe_model` subclasses it with the registered methods' own options."""

    mode: Literal["joint", "separate"] = "joint"
    steps: Optional[PositiveInt] = None
    epochs: Optional[Annotated[float, Field(gt=0)]] = None
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0)] = 5e-4
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    grad_accum: PositiveInt = 1
    max_grad_norm: Optional[Annotated[float, Field(ge=0)]] = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: Annotated[int, Field(ge=0)] = 0
    eval_every: Optional[PositiveInt] = None
    save_every: Optional[PositiveInt] = None
    early_stopping: Optional[PositiveInt] = None
    sampling: Literal["proportional", "temperature", "equal"] = "proportional"
    temperature: Annotated[float, Field(gt=0)] = 2.0
    progressive: Optional[dict[str, Annotated[int, Field(ge=0)]]] = None
    max_eval_examples: Optional[PositiveInt] = None
    max_test_examples: Optional[PositiveInt] = None
    log_every: PositiveInt = 10
    token_budget: Optional[PositiveInt] = 2048
    loss_weighting: Literal[LOSS_WEIGHTINGS] = "fixed"
    dwa_temperature: Annotated[float, Field(gt=0)] = 2.0
    dwa_window: PositiveInt = 20
    gradnorm_alpha: Annotated[float, Field(ge=0)] = 1.5
    gradnorm_lr: Annotated[float, Field(gt=0)] = 0.025
    gradnorm_on: Literal["auto", "shared", "activations"] = "auto"

    @model_validator(mode="after")
    def _one_length(self) -> "TrainingSpec":
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of training.steps or training.epochs")
        check_weighting_options(self.loss_weighting, self.model_fields_set)
        return self

    def method_options(self, method) -> dict[str, Any]:
        """The ``training.*`` options of one method plug-in (its ``training_options`` keys)."""
        return {k: getattr(self, k) for k in method.training_options}


class OutputSpec(Spec):
    """Where a run's files go (``dir``: relative to the recipe's directory; default ``runs/{name}`` in the working
    directory), and whether its adapters go into the local store (else into the run dir)."""

    dir: str = "runs/{name}"
    store: bool = True
    store_prefix: str = ""

    @field_validator("dir")
    @classmethod
    def _only_name_placeholder(cls, d: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(d) if f is not None}
        except ValueError as e:
            raise ValueError(f"not a valid path template ({e})") from None
        if fields - {"name"}:
            raise ValueError(f"unknown placeholder(s) {sorted(fields - {'name'})}; only {{name}} is known")
        return d


class Recipe(Spec):
    """A validated recipe. ``raw`` is the mapping it was made from (after overrides), ``base_dir`` the directory
    relative data paths resolve against (the recipe file's)."""

    name: str
    base: str
    base_quantize: Optional[str] = None  # train on the base quantized with this mode (QLoRA-style)
    description: str = ""
    tasks: dict[str, TaskSpec]
    training: TrainingSpec = Field(default_factory=dict, validate_default=True)
    shared: Optional[dict[str, Any]] = None
    output: OutputSpec = Field(default_factory=dict, validate_default=True)
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _base_dir: Optional[Path] = PrivateAttr(None)

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw

    @property
    def base_dir(self) -> Path | None:
        return self._base_dir

    @property
    def run_dir(self) -> Path:
        """``output.dir`` with ``{name}`` filled in. One rule for every path a recipe names: a relative one resolves
        against the recipe file's directory (data paths too). With no ``output.dir`` key the run goes to
        ``runs/{name}`` under the working directory."""
        d = Path(os.path.expanduser(self.output.dir.format(name=self.name)))
        if "dir" in self.output.model_fields_set and not d.is_absolute() and self.base_dir is not None:
            return self.base_dir / d
        return d

    def store_name(self, task: str) -> str:
        """The store entry a task's adapter goes to."""
        return self.output.store_prefix + task

    @field_validator("base_quantize")
    @classmethod
    def _quantize_trains(cls, mode: str | None) -> str | None:
        if mode is not None:
            try:
                check_trainable_mode(mode, arg="")  # the error already starts with the field
            except AdapterHubError as e:
                raise ValueError(str(e)) from None
        return mode

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names(cls, tasks: Any) -> Any:
        if isinstance(tasks, dict):
            if not tasks:
                raise ValueError("at least one task is required")
            for name in tasks:
                try:
                    validate_name(name)
                except AdapterHubError as e:
                    raise At(str(name), f"bad task name ({e})") from None
        return tasks

    @field_validator("shared")
    @classmethod
    def _shared_trains(cls, shared: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if shared is None else check_shared_adapter(shared)

    @model_validator(mode="after")
    def _across_sections(self) -> "Recipe":
        for name, spec in self.tasks.items():
            spec._name = name
        _check_progressive(self.training.progressive, list(self.tasks))
        check_multitask(self)
        for mname, method in methods().items():
            using = [t for t, spec in self.tasks.items() if spec.adapter["method"] == mname]
            try:
                method.validate_training_options(self.training.method_options(method), using, self.training.mode)
            except AdapterHubError as e:
                raise At("", str(e)) from None
        if self.output.store:
            for t in self.tasks:
                try:
                    validate_name(self.store_name(t))
                except AdapterHubError as e:
                    raise At("output.store_prefix", f"{self.store_name(t)!r} is no store name ({e})") from None
        return self


def _check_progressive(progressive: dict[str, int] | None, tasks: list[str]) -> None:
    if not progressive:
        return
    for k in progressive:
        if k not in tasks:
            raise At(f"training.progressive.{k}", f"no such task (tasks: {tasks})")
    if all(progressive.get(t, 0) > 0 for t in tasks):
        raise At("training.progressive", "at least one task must start at step 0")


_MODELS: dict[tuple, type[Recipe]] = {}


def recipe_model() -> type[Recipe]:
    """:class:`Recipe` whose ``training`` also holds every registered method's ``training_options`` (built once
    per set of registered options)."""
    options = training_option_fields()
    key = tuple((k, repr(types), repr(default), m.name) for k, (types, default, m) in options.items())
    if key not in _MODELS:
        clash = sorted(set(options) & set(TrainingSpec.model_fields))
        if clash:
            raise RecipeError(f"method {options[clash[0]][2].name!r} declares training option {clash[0]!r}, "
                              "a built-in training key")
        fields = {k: (_annotation(types), default) for k, (types, default, _m) in options.items()}
        training = create_model("TrainingSpec", __base__=TrainingSpec, __module__=__name__, **fields)
        _MODELS[key] = create_model("Recipe", __base__=Recipe, __module__=__name__, training=(
            training, Field(default_factory=dict, validate_default=True)))
    return _MODELS[key]


def _annotation(types: Any) -> Any:
    """A plug-in's ``(types, ...)`` declaration as an annotation: ``(int, float)`` reads as a number, ``None``
    among the types as optional."""
    members = list(types) if isinstance(types, tuple) else [types]
    optional = type(None) in members
    members = [m for m in members if m is not type(None)]
    if {int, float} <= set(members):
        members = [m for m in members if m is not int]
    ann = members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
    return Optional[ann] if optional else ann
