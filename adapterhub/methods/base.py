"""The method plug-in contract.

A method (LoRA, AdaLoRA, Bottleneck, ...) is a plain dataclass config (:class:`MethodConfig`) plus one stateless
plug-in object (:class:`Method`) registered with :func:`adapterhub.methods.register_method`. The plug-in says

- what it is: ``name`` (recipes, cards), ``display_name``, ``peft_type`` (``adapter_config.json``), whether plain
  peft loads its files (``peft_loadable``), and whether its delta is linear (``linear``: merge/combine apply);
- how it computes: ``kind``, a :class:`~adapterhub.routing.UnitKind` that stacks and applies its units through the
  one routing mechanism;
- where it attaches and what it creates: :meth:`Method.resolve_config` (base-dependent defaults),
  :meth:`Method.resolve_targets`, :meth:`Method.create`;
- how it reads and writes its files: :meth:`Method.to_adapter_config` / :meth:`Method.from_adapter_config` (peft's
  config; :meth:`Method.from_peft_config` and :meth:`Method.peft_targets` for plain peft files, with
  ``peft_fields`` / ``peft_refused`` saying which peft fields it accepts and which it refuses),
  :meth:`Method.unit_file_state` / :meth:`Method.load_unit_file_state` (peft's tensor keys),
  :meth:`Method.file_module_sizes` (ranks from shapes), :meth:`Method.card_extra` and
  :meth:`Method.describe_sizes` (its card summary);
- how it trains: :meth:`Method.validate_for_training`, ``training_options`` (its ``training.*`` recipe keys) and
  :meth:`Method.training_hooks` (e.g. AdaLoRA's rank allocator and orthogonal penalty).

Nothing outside ``adapterhub/methods/`` names a method: callers look plug-ins up in the registry.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..files.adapter_dir import KEY_PREFIX, split_module_keys
from ..errors import AdapterFileError, AdapterHubError
from ..merge import compute_dtype, lowrank_delta
from ..routing import AdaptedLinear, UnitKind, is_linear_like
from .peft_compat import peft_target_match


@dataclasses.dataclass
class MethodConfig:
    """Base of method configs. Subclasses are plain dataclasses with a ``method`` name."""

    method: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    def validate(self) -> None:  # pragma: no cover - overridden
        pass


class CheckpointState:
    """What a training run's checkpoint saves of an object beyond parameters: tensors (safetensors) and JSON, and how
    to put them back (resume exact). Default: nothing. Method hooks and the loss weightings both carry it."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def state_json(self) -> dict[str, Any]:
        return {}

    def load_state_json(self, d: dict[str, Any]) -> None:
        pass


class TrainingHooks(CheckpointState):
    """What a method adds to a training run for its adapters (``names``). The loop calls every hook generically.

    - :meth:`penalty`: a term added to the loss of one adapter (inside the DDP-wrapped forward);
    - :meth:`after_optimizer_step`: after each real (synchronised) optimizer step, gradients still present;
    - :meth:`is_settled`: whether the adapter's structure is final at ``step`` (best-checkpoint selection waits);
    - :meth:`finish`: at the end of training, after the best states were restored;
    - :meth:`state_tensors` / :meth:`state_json` (+ loaders): checkpoint state;
    - :meth:`write_report`: files for the run directory (JSON, PNG)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)

    def penalty(self, name: str) -> torch.Tensor | None:
        return None

    def after_optimizer_step(self, step: int) -> None:
        pass

    def is_settled(self, name: str, step: int) -> bool:
        return True

    def finish(self) -> None:
        pass

    def write_report(self, run_dir, tag: str) -> list:
        return []


class Method:
    """Plug-in interface. One instance per method, stateless."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    kind: ClassVar[UnitKind]
    peft_type: ClassVar[str] = ""
    peft_loadable: ClassVar[bool] = False
    linear: ClassVar[bool] = False           # delta(x) = scale * B @ A @ x: :meth:`lowrank_factors` exists
    identity_at_init: ClassVar[bool] = True  # a fresh adapter leaves the base's outputs exactly as they were
    #: why an adapter that does not fold into the base weights cannot be merged (the refusal names it)
    nonlinear_effect: ClassVar[str] = "its delta is nonlinear (not a linear map of the module's input)"
    accepts_factors: ClassVar[bool] = False  # the target of combine(): :meth:`factor_config` / :meth:`set_factors`
    card_keys: ClassVar[tuple[str, ...]] = ()
    file_keys: ClassVar[tuple[str, ...]] = ()  # tensor suffixes of one module in adapter_model.safetensors
    card_extra_keys: ClassVar[tuple[str, ...]] = ()  # the keys :meth:`card_extra` writes
    size_key: ClassVar[str] = ""             # the file tensor whose ``size_dim`` is the module's size (rank, width)
    size_dim: ClassVar[int] = 0
    size_label: ClassVar[str] = "rank"
    training_options: ClassVar[dict[str, tuple[Any, Any]]] = {}  # training.<key>: (types, default)
    module_files: ClassVar[bool] = True  # files key tensors by module (peft's base_model.model.<path>.<suffix>)
    peft_fields: ClassVar[tuple[str, ...]] = ()  # peft config fields read from a plain peft file (see from_peft_config)
    peft_refused: ClassVar[dict[str, tuple[tuple, str]]] = {}  # peft field -> (values accepted, why others are not)
    peft_refused_tensors: ClassVar[dict[str, str]] = {}  # peft tensor names (a part) it does not implement -> why

    # --- targets -------------------------------------------------------------------------------
    def resolve_config(self, config: MethodConfig, base: nn.Module) -> MethodConfig:
        """The config with its base-dependent defaults filled in (what the files record, as peft writes them), checked
        against ``base``: called when an adapter is added and when one is loaded, before targets are resolved.
        Default: ``config`` unchanged."""
        return config

    def default_targets(self, config: MethodConfig, base: nn.Module) -> list[str] | str:
        raise NotImplementedError

    def resolve_targets(self, config: MethodConfig, base: nn.Module) -> list[str]:
        """Full module paths (relative to the base) of the linear-like modules this adapter attaches to."""
        spec = getattr(config, "target_modules", None)
        if spec is None:
            spec = self.default_targets(config, base)
        names = match_linear_modules(base, spec)
        if not names:
            raise AdapterHubError(
                f"{self.name}: target_modules={spec!r} matches no nn.Linear module (nor Conv1D) of the base "
                f"({type(base).__name__}); some linear modules are: {linear_module_names(base)[:8]}"
            )
        return names

    # --- parameters ----------------------------------------------------------------------------
    def create(self, config: MethodConfig, module: nn.Linear, path: str, init: bool = True) -> nn.Module:
        """The unit (an nn.Module with the parameters) for one targeted Linear. ``init=False`` leaves the
        parameters uninitialised (their values are about to be loaded from a file)."""
        raise NotImplementedError

    # --- files ---------------------------------------------------------------------------------
    def to_adapter_config(self, config: MethodConfig, targets: list[str], base_id: str, units=None) -> dict[str, Any]:
        raise NotImplementedError

    def from_adapter_config(self, d: dict[str, Any]) -> MethodConfig:
        raise NotImplementedError

    def from_peft_config(self, d: dict[str, Any], keys: dict[str, str] | None, where: str) -> MethodConfig:
        """The config of a plain peft ``adapter_config.json`` ``d`` (``where`` names it in errors), with peft's
        semantics for the modules ``keys`` it adapts (our module path -> the module's name in the peft model, whose
        names peft's patterns match; None: the names are ours). Refuses, naming it, every field that changes the
        computation and that this method does not implement."""
        raise AdapterFileError(f"{where}: {self.display_name or self.name} adapters have no plain peft format")

    def renamed(self, config: MethodConfig, names: dict[str, str]) -> MethodConfig:
        """The config of the same adapter with its modules renamed (``names``: our path -> new name, e.g. the
        module's name in a peft task model): per-module values must hold under the new names."""
        return dataclasses.replace(config, target_modules=sorted(names.values()))

    def peft_targets(self, d: dict[str, Any], keys: dict[str, str], output_paths: set[str]) -> list[str]:
        """The module paths peft adapts for config ``d``, among ``keys`` (our path -> its name in the peft model, for
        every linear-like layer of the base; ``output_paths``: the output embedding, which "all-linear" skips)."""
        linear = {k for p, k in keys.items() if p not in output_paths}
        return [p for p, k in keys.items() if peft_target_match(d, k, linear)]

    def unit_file_state(self, unit: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors of one unit, keyed by the suffix used in files (e.g. ``lora_A.weight``)."""
        raise NotImplementedError

    def load_unit_file_state(self, unit: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
        expected = self.unit_file_state(unit)
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise AdapterHubError(f"module {path}: missing tensors {missing}, unexpected tensors {extra}")
        with torch.no_grad():
            for key, target in expected.items():
                src = state[key]
                if tuple(src.shape) != tuple(target.shape):
                    raise AdapterHubError(
                        f"module {path}: tensor {key} has shape {tuple(src.shape)}, the base needs "
                        f"{tuple(target.shape)} (adapter made for another base?)"
                    )
                target.copy_(src.to(dtype=target.dtype))

    def file_key(self, path: str, suffix: str) -> str:
        """The ``adapter_model.safetensors`` key of one unit tensor: peft's ``base_model.model.<path>.<suffix>``."""
        return f"{KEY_PREFIX}{path}.{suffix}"

    def split_file_keys(self, state: dict[str, torch.Tensor], suffixes: set[str]) -> dict[str, dict[str, torch.Tensor]]:
        """The inverse of :meth:`file_key` over a whole file: ``{path: {suffix: tensor}}``; unknown keys raise."""
        return split_module_keys(state, suffixes)

    def file_module_sizes(self, f) -> dict[str, int]:
        """Per module, its size (rank, width) read from an open safetensors file ``f`` (shapes only)."""
        suffix = "." + self.size_key
        out = {}
        for key in sorted(f.keys()):
            if key.endswith(suffix):
                out[strip_prefix(key)[: -len(suffix)]] = int(f.get_slice(key).get_shape()[self.size_dim])
        return out

    def card_extra(self, units: dict[str, nn.Module]) -> dict[str, Any]:
        """Method-specific facts for the adapter card (e.g. AdaLoRA's rank allocation)."""
        return {}

    def describe_sizes(self, config: dict[str, Any], sizes: dict[str, int]) -> tuple[str, list[str]]:
        """(section title, markdown lines) describing the per-module sizes in a README model card."""
        vals = sorted(set(sizes.values()))
        if len(vals) == 1:
            return "Rank allocation", [f"{len(sizes)} modules, {self.size_label} {vals[0]} each.", ""]
        return "Rank allocation", sizes_table(self.size_label, sizes)

    # --- banks (the inference layout) ----------------------------------------------------------
    @property
    def bankable(self) -> bool:
        """Whether this method's adapters can be held in banks (it defines :meth:`unit_row`, :meth:`file_row`'s
        inverse :meth:`row_file_state`, ``file_keys``, and its kind applies bank rows). Adapters of other methods
        load as trainable units."""
        return type(self).unit_row is not Method.unit_row and bool(self.file_keys)

    def unit_row(self, unit: nn.Module) -> dict[str, Any]:
        """The banked row of a unit (a trainable adapter moving into the inference layout)."""
        raise AdapterHubError(f"{self.name} adapters cannot be held in banks")

    def file_row(self, config: MethodConfig, path: str, module: nn.Linear, state: dict[str, torch.Tensor]) -> dict:
        """The banked row of one module's file tensors (``state``: suffix -> tensor), checked against ``module``.
        Default: through a unit (slower: builds the module)."""
        unit = self.create(config, module, path, init=False)
        self.load_unit_file_state(unit, state, path)
        return self.unit_row(unit)

    def row_file_state(self, config: MethodConfig, path: str, row: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The file tensors (suffix -> tensor) of one module's banked row: the inverse of :meth:`file_row`."""
        raise AdapterHubError(f"{self.name} adapters cannot be held in banks")

    def unit_from_row(self, config: MethodConfig, path: str, module: nn.Linear, row: dict[str, Any]) -> nn.Module:
        """A (detached) unit holding a banked row's values: for saving, merging and moving back to training."""
        unit = self.create(config, module, path, init=False)
        self.load_unit_file_state(unit, self.row_file_state(config, path, row), path)
        return unit

    # --- merge: folding a unit into its module's weights -------------------------------------------
    @property
    def mergeable(self) -> bool:
        """Whether this method's units fold exactly into their modules' weights (:meth:`fold`): ``linear`` methods,
        and methods that define their own :meth:`fold` (e.g. IA3's diagonal scalings)."""
        return self.linear or type(self).fold is not Method.fold

    def fold(self, weight: torch.Tensor, bias: torch.Tensor | None, unit: nn.Module):
        """The module's ``(weight, bias)`` with ``unit`` folded in (new tensors, in the weight's dtype). Default, for
        ``linear`` methods: ``W + scale * B @ A`` computed in float64 on CPU / float32 elsewhere; the bias is kept."""
        a, b, scale = self.lowrank_factors(unit)
        delta = lowrank_delta(a, b, scale, compute_dtype(weight.device))
        return (weight.detach().to(delta.dtype) + delta.to(weight.device)).to(weight.dtype), bias

    # --- linear view (merge / combine) ---------------------------------------------------------
    def lowrank_factors(self, unit: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        """(A [r, in], B [out, r], scale) such that delta(x) = scale * x @ A.T @ B.T. ``linear`` methods only."""
        raise AdapterHubError(f"{self.name} adapters have no low-rank factors")

    def module_ranks(self, units: dict[str, nn.Module]) -> dict[str, int]:
        """Per module, the rank its delta can have (the rank in use): what rank compression starts from. Default:
        the factors' inner size; methods that allocate ranks per module (AdaLoRA) report their allocation."""
        return {path: int(self.lowrank_factors(unit)[0].shape[0]) for path, unit in units.items()}

    def factor_config(self, rank: int, targets: list[str], ranks: dict[str, int] | None = None) -> MethodConfig:
        """A config whose units hold given factors ``B @ A`` at scale 1 (``accepts_factors`` methods only);
        ``ranks``: per-module ranks where they differ from ``rank``."""
        raise AdapterHubError(f"{self.name} adapters cannot hold combined factors")

    def set_factors(self, unit: nn.Module, a: torch.Tensor, b: torch.Tensor) -> None:
        raise AdapterHubError(f"{self.name} adapters cannot hold combined factors")

    # --- conversion ----------------------------------------------------------------------------
    def convert(self, config: MethodConfig, units: dict[str, nn.Module], target: str, base_id: str):
        """The same adapter as method ``target``: (its adapter_config dict, {module path: {suffix: tensor}})."""
        raise AdapterHubError(f"{self.name} adapters do not convert to {target!r}")

    # --- training ------------------------------------------------------------------------------
    def validate_for_training(self, config: MethodConfig) -> None:
        config.validate()

    def validate_training_options(self, options: dict[str, Any], adapters: list[str], mode: str) -> None:
        """Check this method's ``training.*`` options (``options`` holds every key of ``training_options``, with
        defaults filled) against the adapters of this method in the run (``adapters``, maybe empty)."""

    def training_hooks(self, model, names: list[str], options: dict[str, Any]) -> TrainingHooks | None:
        """Hooks for this method's adapters ``names`` in one training group, or None."""
        return None

    def __repr__(self) -> str:
        return f"<method {self.name}>"


def check_shapes(path: str, state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    """A module's file tensors must be exactly ``expected`` (suffix -> shape)."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise AdapterHubError(f"module {path}: missing tensors {missing}, unexpected tensors {extra}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise AdapterHubError(f"module {path}: tensor {key} has shape {tuple(state[key].shape)}, the base needs "
                                  f"{tuple(shape)} (adapter made for another base?)")


def strip_prefix(key: str) -> str:
    return key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else key


def sizes_table(label: str, sizes: dict[str, int]) -> list[str]:
    return [f"| module | {label} |", "|---|---|"] + [f"| `{m}` | {r} |" for m, r in sizes.items()] + [""]


def linear_module_names(base: nn.Module) -> list[str]:
    return [n for n, m in base.named_modules() if is_linear_like(m) and n]


def targetable_modules(base: nn.Module):
    """(path, module) of every linear-like layer (``nn.Linear``, ``Conv1D``) a method may target: plain ones and
    already adapted ones, never the
    ``base_layer`` inside a wrapper nor another adapter's own layers."""
    for name, mod in base.named_modules():
        if not name or ".units." in name:
            continue
        if isinstance(mod, AdaptedLinear) or (is_linear_like(mod) and not name.endswith(".base_layer")):
            yield name, mod


_OUTPUT_HEAD_NAMES = ("lm_head", "embed_out", "output_projection", "classifier", "score", "pooler.dense")


def match_linear_modules(base: nn.Module, spec: list[str] | str) -> list[str]:
    """Resolve ``target_modules`` like peft does: a list matches module-name suffixes on ``.`` boundaries,
    a string is a full-match regex, ``"all-linear"`` is every Linear but output heads."""
    out = []
    for name, _mod in targetable_modules(base):
        if spec == "all-linear":
            ok = not any(name == h or name.endswith("." + h) for h in _OUTPUT_HEAD_NAMES)
        elif isinstance(spec, str):
            ok = re.fullmatch(spec, name) is not None
        else:
            ok = any(name == t or name.endswith("." + t) for t in spec)
        if ok:
            out.append(name)
    return out
