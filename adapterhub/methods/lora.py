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

from ..errors import AdapterFileError, AdapterHubError
from .base import Method, MethodConfig, check_shapes
from .lowrank_kind import LOWRANK, lowrank_row
from .peft_compat import (LORA_IMPLEMENTED, LORA_METADATA, LORA_REFUSED, LORA_REFUSED_TENSORS, check_peft_fields,
                          check_target_spec, default_lora_targets, jsonable, pattern_key)
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
    rank_pattern: dict[str, int] | None = None   # per-module rank overrides (peft semantics: first match wins)
    alpha_pattern: dict[str, float] | None = None

    def for_module(self, path: str) -> tuple[int, float]:
        r"""(r, alpha) for one module path, honouring rank_pattern/alpha_pattern like peft: the first key, in the
        dict's order (the file's), that matches the path as ``(.*\.)?(key)$``."""
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
        for name, types in (("rank_pattern", int), ("alpha_pattern", (int, float))):
            _check_pattern(name, getattr(self, name), types)

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _check_pattern(name: str, pattern, types) -> None:
    if pattern is None:
        return
    if not isinstance(pattern, dict):
        raise AdapterHubError(f"LoRA.{name} must be a mapping of module pattern -> value, got {pattern!r}")
    for key, v in pattern.items():
        if isinstance(v, bool) or not isinstance(v, types) or v <= 0:
            raise AdapterHubError(f"LoRA.{name}[{key!r}] must be a positive {'int' if types is int else 'number'}, "
                                  f"got {v!r}")
        try:
            re.compile(key)
        except (re.error, TypeError) as e:
            raise AdapterHubError(f"LoRA.{name}: key {key!r} is not a valid regex ({e})") from None


def _pattern_value(pattern: dict | None, path: str, default):
    key = pattern_key(pattern, path) if pattern else None
    return default if key is None else pattern[key]


def _resolved_patterns(config: LoRA, keys: dict[str, str], rp: dict, ap: dict) -> tuple[dict | None, dict | None]:
    """The patterns of a plain peft file, resolved as peft does on its module names (``keys``: our path -> peft's
    name): kept as they are when they give every module the same (r, alpha) on our paths, else one exact entry per
    module that differs from the defaults (peft's names may carry a prefix ours do not, e.g. ``bert.``)."""
    want = {p: (int(_pattern_value(rp, k, config.r)), float(_pattern_value(ap, k, config.lora_alpha)))
            for p, k in keys.items()}
    if all(config.for_module(p) == v for p, v in want.items()):
        return config.rank_pattern, config.alpha_pattern
    ranks = {re.escape(p): r for p, (r, _a) in want.items() if r != config.r}
    alphas = {re.escape(p): a for p, (_r, a) in want.items() if a != config.lora_alpha}
    return ranks or None, alphas or None


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
    peft_fields = LORA_METADATA + LORA_IMPLEMENTED
    peft_refused = LORA_REFUSED
    peft_refused_tensors = LORA_REFUSED_TENSORS

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

    def renamed(self, config: LoRA, names: dict[str, str]) -> LoRA:
        """Patterns matched our names: under new names (a task model's ``bert.`` prefix can change what an anchored
        pattern matches) each module that differs from the defaults gets its own exact entry."""
        if not (config.rank_pattern or config.alpha_pattern):
            return super().renamed(config, names)
        per = {n: config.for_module(p) for p, n in names.items()}
        ranks = {re.escape(n): r for n, (r, _a) in per.items() if r != config.r}
        alphas = {re.escape(n): a for n, (_r, a) in per.items() if a != config.lora_alpha}
        return dataclasses.replace(config, target_modules=sorted(names.values()), rank_pattern=ranks or None,
                                   alpha_pattern=alphas or None)

    def from_adapter_config(self, d: dict[str, Any]) -> LoRA:
        return self.from_peft_config(d, None, "adapter_config.json")

    def from_peft_config(self, d: dict[str, Any], keys: dict[str, str] | None, where: str) -> LoRA:
        check_peft_fields(d, self.peft_fields, self.peft_refused, where)
        check_target_spec(d, where)
        r, alpha = d["r"], d.get("lora_alpha", 8)  # peft's default alpha; a file without r is refused
        if isinstance(r, bool) or not isinstance(r, int) or isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise AdapterFileError(f"{where}: r must be an int and lora_alpha a number, got r={r!r}, "
                                   f"lora_alpha={alpha!r}")
        rp, ap = dict(d.get("rank_pattern") or {}), dict(d.get("alpha_pattern") or {})
        tm = d.get("target_modules")
        config = LoRA(r=r, alpha=float(alpha), dropout=float(d.get("lora_dropout") or 0.0),
                      target_modules=sorted(tm) if isinstance(tm, (list, set, tuple)) else tm,
                      use_rslora=bool(d.get("use_rslora", False)), rank_pattern=rp or None, alpha_pattern=ap or None)
        if keys is not None:
            config.target_modules = sorted(keys)
            config.rank_pattern, config.alpha_pattern = _resolved_patterns(config, keys, rp, ap)
        return config


register_method(LoRAMethod())
