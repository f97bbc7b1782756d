"""LoRA: ``h = W x + (alpha / r) * B A x``. Files are peft's LoRA format (loadable by ``peft.PeftModel``)."""
from __future__ import annotations

import dataclasses
import math
import re
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from ..errors import AdapterHubError
from .base import Method, MethodConfig, check_shapes
from .lowrank_kind import LOWRANK, lowrank_row
from .peft_compat import default_lora_targets, jsonable
from .registry import register_method


@dataclasses.dataclass
class LoRA(MethodConfig):
    """LoRA config. ``alpha`` defaults to ``2 * r``; ``target_modules`` defaults to peft's per-architecture
    choice (e.g. query/value for BERT, q_proj/v_proj for Llama); ``"all-linear"`` targets every Linear."""

    method = "lora"
    r: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: list[str] | str | None = None
    use_rslora: bool = False
    rank_pattern: dict[str, int] | None = None   # per-module rank overrides (peft semantics)
    alpha_pattern: dict[str, float] | None = None

    def for_module(self, path: str) -> tuple[int, float]:
        """(r, alpha) for one module path, honouring rank_pattern/alpha_pattern like peft (suffix match)."""
        r = _pattern_value(self.rank_pattern, path, self.r)
        alpha = _pattern_value(self.alpha_pattern, path, self.lora_alpha)
        return int(r), float(alpha)

    def module_scaling(self, path: str) -> float:
        r, alpha = self.for_module(path)
        return alpha / (math.sqrt(r) if self.use_rslora else r)

    def validate(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise AdapterHubError(f"LoRA.r must be a positive int, got {self.r!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise AdapterHubError(f"LoRA.dropout must be in [0, 1), got {self.dropout!r}")
        if self.alpha is not None and float(self.alpha) <= 0:
            raise AdapterHubError(f"LoRA.alpha must be > 0, got {self.alpha!r}")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _pattern_value(pattern: dict | None, path: str, default):
    if not pattern:
        return default
    if path in pattern:
        return pattern[path]
    for key, v in pattern.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return v
    return default


class LoRAUnit(nn.Module):
    """The LoRA factors on one Linear (names match peft's: lora_A / lora_B)."""

    def __init__(self, in_features: int, out_features: int, r: int, scaling: float, dropout: float,
                 dtype: torch.dtype, device: torch.device | None, init: bool = True):
        super().__init__()
        linear = partial(skip_init, nn.Linear, bias=False, dtype=dtype, device=device)
        self.lora_A = linear(in_features, r)
        self.lora_B = linear(r, out_features)
        if init:
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # peft's default init
            nn.init.zeros_(self.lora_B.weight)
        self.scaling = float(scaling)
        self.dropout = float(dropout)


class LoRAMethod(Method):
    name = "lora"
    display_name = "LoRA"
    config_cls = LoRA
    kind = LOWRANK
    peft_type = "LORA"
    peft_loadable = True
    linear = True
    accepts_factors = True
    card_keys = ("r", "alpha", "dropout", "use_rslora")
    file_keys = ("lora_A.weight", "lora_B.weight")
    size_key = "lora_A.weight"

    def default_targets(self, config, base):
        return default_lora_targets(base)

    def create(self, config: LoRA, module: nn.Linear, path: str, init: bool = True) -> LoRAUnit:
        w = module.weight
        r, _ = config.for_module(path)
        return LoRAUnit(module.in_features, module.out_features, r, config.module_scaling(path), config.dropout,
                        w.dtype if w.is_floating_point() else torch.float32, w.device, init=init)

    def lowrank_factors(self, unit: LoRAUnit):
        return unit.lora_A.weight, unit.lora_B.weight, unit.scaling

    def factor_config(self, rank: int, targets: list[str], ranks: dict[str, int] | None = None) -> LoRA:
        other = {p: int(r) for p, r in sorted((ranks or {}).items()) if int(r) != int(rank)}
        return LoRA(r=int(rank), alpha=float(rank), dropout=0.0, target_modules=sorted(targets),
                    rank_pattern=other or None, alpha_pattern={p: float(r) for p, r in other.items()} or None)

    def set_factors(self, unit: LoRAUnit, a: torch.Tensor, b: torch.Tensor) -> None:
        with torch.no_grad():
            unit.lora_A.weight.copy_(a.to(unit.lora_A.weight.dtype))
            unit.lora_B.weight.copy_(b.to(unit.lora_B.weight.dtype))

    def unit_row(self, unit: LoRAUnit) -> dict:
        return lowrank_row(unit.lora_A.weight, unit.lora_B.weight, None, unit.scaling)

    def file_row(self, config: LoRA, path: str, module: nn.Linear, state: dict[str, torch.Tensor]) -> dict:
        r, _ = config.for_module(path)
        check_shapes(path, state, {"lora_A.weight": (r, module.in_features), "lora_B.weight": (module.out_features, r)})
        dtype = module.weight.dtype if module.weight.is_floating_point() else torch.float32
        return lowrank_row(state["lora_A.weight"].to(dtype), state["lora_B.weight"].to(dtype), None,
                           config.module_scaling(path))

    def row_file_state(self, config: LoRA, path: str, row: dict) -> dict[str, torch.Tensor]:
        return {"lora_A.weight": row["a"], "lora_B.weight": row["bt"].t()}

    def unit_file_state(self, unit: LoRAUnit) -> dict[str, torch.Tensor]:
        return {"lora_A.weight": unit.lora_A.weight, "lora_B.weight": unit.lora_B.weight}

    def to_adapter_config(self, config: LoRA, targets: list[str], base_id: str, units=None) -> dict[str, Any]:
        from peft import LoraConfig

        pc = LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.dropout,
                        target_modules=list(targets), use_rslora=config.use_rslora, bias="none",
                        rank_pattern=dict(config.rank_pattern or {}), alpha_pattern=dict(config.alpha_pattern or {}),
                        base_model_name_or_path=base_id, inference_mode=True)
        d = pc.to_dict()
        d["target_modules"] = sorted(targets)  # exact module paths: plain peft re-targets the same set
        return jsonable(d)

    def from_adapter_config(self, d: dict[str, Any]) -> LoRA:
        if d.get("use_dora"):
            raise AdapterHubError("adapter_config.json: DoRA (use_dora=true) is not supported by adapterhub")
        for k in ("rank_pattern", "alpha_pattern"):
            if d.get(k) is not None and not isinstance(d[k], dict):
                raise AdapterHubError(f"adapter_config.json: {k} must be a mapping of module -> value")
        tm = d.get("target_modules")
        return LoRA(r=int(d["r"]), alpha=float(d.get("lora_alpha", 8)), dropout=float(d.get("lora_dropout", 0.0)),
                    target_modules=sorted(tm) if isinstance(tm, (list, set, tuple)) else tm,
                    use_rslora=bool(d.get("use_rslora", False)), rank_pattern=d.get("rank_pattern") or None,
                    alpha_pattern=d.get("alpha_pattern") or None)


register_method(LoRAMethod())
