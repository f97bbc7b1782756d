"""What a method plug-in is.

A method (LoRA, AdaLoRA, Bottleneck, ...) is a plain dataclass config plus a plug-in class that knows
- which base modules it attaches to (``resolve_targets``),
- what parameters it creates on each targeted module (``create``),
- how its tensors are named in a PEFT-style ``adapter_model.safetensors`` (``to_file_state`` / ``from_file_state``),
- what its ``adapter_config.json`` holds (``to_adapter_config`` / ``from_adapter_config``).

Every method computes through the one routing mechanism in :mod:`adapterhub.routing`: a per-module *unit* is
either a low-rank delta on the module's input (``x -> scale * B(A(x))``) or a bottleneck on its output
(``h -> h + up(act(down(h)))``). Both are stacked across adapters and gathered per row.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import AdapterHubError

#: unit kinds understood by :class:`adapterhub.layers.AdaptedLinear`
LOWRANK = "lowrank"
BOTTLENECK = "bottleneck"


@dataclasses.dataclass
class MethodConfig:
    """Base of method configs. Subclasses are plain dataclasses with a ``method`` name."""

    method: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    def validate(self) -> None:  # pragma: no cover - overridden
        pass


class Method:
    """Plug-in interface. One instance per method kind, stateless."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    unit_kind: ClassVar[str] = LOWRANK

    # --- targets -------------------------------------------------------------------------------
    def default_targets(self, config: MethodConfig, base: nn.Module) -> list[str] | str:
        raise NotImplementedError

    def resolve_targets(self, config: MethodConfig, base: nn.Module) -> list[str]:
        """Full module paths (relative to the base) of the nn.Linear modules this adapter attaches to."""
        spec = getattr(config, "target_modules", None)
        if spec is None:
            spec = self.default_targets(config, base)
        names = match_linear_modules(base, spec)
        if not names:
            raise AdapterHubError(
                f"{self.name}: target_modules={spec!r} matches no nn.Linear module of the base "
                f"({type(base).__name__}); some linear modules are: {linear_module_names(base)[:8]}"
            )
        return names

    # --- parameters ----------------------------------------------------------------------------
    def create(self, config: MethodConfig, module: nn.Linear, path: str, init: bool = True) -> "nn.Module":
        """Return the unit (an nn.Module with the parameters) for one targeted Linear. ``init=False`` leaves the
        parameters uninitialised (their values are about to be loaded from a file)."""
        raise NotImplementedError

    # --- files ---------------------------------------------------------------------------------
    def to_adapter_config(self, config: MethodConfig, targets: list[str], base_id: str, units=None) -> dict[str, Any]:
        raise NotImplementedError

    def from_adapter_config(self, d: dict[str, Any]) -> MethodConfig:
        raise NotImplementedError

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

    def card_extra(self, units: dict[str, nn.Module]) -> dict[str, Any]:
        """Method-specific facts for the adapter card (e.g. AdaLoRA's rank allocation)."""
        return {}

    # --- routing view ---------------------------------------------------------------------------
    def lowrank_factors(self, unit: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        """(A [r, in], B [out, r], scale) such that delta(x) = scale * x @ A.T @ B.T. Low-rank kinds only."""
        raise NotImplementedError


def linear_module_names(base: nn.Module) -> list[str]:
    return [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and n]


_OUTPUT_HEAD_NAMES = ("lm_head", "embed_out", "output_projection", "classifier", "score", "pooler.dense")


def match_linear_modules(base: nn.Module, spec: list[str] | str) -> list[str]:
    """Resolve ``target_modules`` like peft does: a list matches module-name suffixes on ``.`` boundaries,
    a string is a full-match regex, ``"all-linear"`` is every Linear but output heads."""
    from ..layers import AdaptedLinear  # local import: layers imports methods

    out = []
    for name, mod in base.named_modules():
        if not name or ".units." in name:  # never target another adapter's own layers
            continue
        if isinstance(mod, AdaptedLinear):
            pass
        elif not isinstance(mod, nn.Linear) or name.endswith(".base_layer"):
            continue
        if spec == "all-linear":
            ok = not any(name == h or name.endswith("." + h) for h in _OUTPUT_HEAD_NAMES)
        elif isinstance(spec, str):
            ok = re.fullmatch(spec, name) is not None
        else:
            ok = any(name == t or name.endswith("." + t) for t in spec)
        if ok:
            out.append(name)
    return out
