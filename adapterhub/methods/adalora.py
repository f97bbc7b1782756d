"""AdaLoRA: SVD-parameterised LoRA, ``delta = B diag(E) A x * alpha / r``, whose ranks are allocated during
training. Files follow peft's AdaLoRA format (keys ``lora_A``, ``lora_E``, ``lora_B``).

This module holds the config and the per-module parameters. The rank allocator is driven by the training loop.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..errors import AdapterHubError
from .base import LOWRANK, Method, MethodConfig
from .lora import _jsonable, default_lora_targets


@dataclasses.dataclass
class AdaLoRA(MethodConfig):
    method = "adalora"
    init_r: int = 12
    target_r: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: list[str] | str | None = None
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: int | None = None

    def validate(self) -> None:
        for k in ("init_r", "target_r", "deltaT"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise AdapterHubError(f"AdaLoRA.{k} must be a positive int, got {v!r}")
        if self.target_r > self.init_r:
            raise AdapterHubError(f"AdaLoRA.target_r ({self.target_r}) must be <= init_r ({self.init_r})")
        if self.tinit < 0 or self.tfinal < 0:
            raise AdapterHubError("AdaLoRA.tinit and AdaLoRA.tfinal must be >= 0")
        if self.total_step is not None and self.total_step <= self.tinit + self.tfinal:
            raise AdapterHubError(
                f"AdaLoRA.total_step ({self.total_step}) must be larger than tinit + tfinal "
                f"({self.tinit} + {self.tfinal})")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.init_r)


class AdaLoRAUnit(nn.Module):
    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float,
                 dtype: torch.dtype, device):
        super().__init__()
        self.lora_A = nn.Parameter(torch.randn(r, in_features, dtype=dtype, device=device) * 0.02)
        self.lora_E = nn.Parameter(torch.zeros(r, 1, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.randn(out_features, r, dtype=dtype, device=device) * 0.02)
        self.register_buffer("ranknum", torch.tensor(float(r)), persistent=False)
        self.alpha = float(alpha)
        self.dropout = float(dropout)


class AdaLoRAMethod(Method):
    name = "adalora"
    config_cls = AdaLoRA
    unit_kind = LOWRANK

    def default_targets(self, config, base):
        return default_lora_targets(base)

    def create(self, config: AdaLoRA, module: nn.Linear, path: str) -> AdaLoRAUnit:
        w = module.weight
        return AdaLoRAUnit(module.in_features, module.out_features, config.init_r, config.lora_alpha,
                           config.dropout, w.dtype if w.is_floating_point() else torch.float32, w.device)

    def lowrank_factors(self, unit: AdaLoRAUnit):
        scale = unit.alpha / (float(unit.ranknum) + 1e-5)  # peft's scaling
        return unit.lora_A * unit.lora_E, unit.lora_B, scale

    def unit_file_state(self, unit: AdaLoRAUnit) -> dict[str, torch.Tensor]:
        return {"lora_A": unit.lora_A, "lora_E": unit.lora_E, "lora_B": unit.lora_B}

    def to_adapter_config(self, config: AdaLoRA, targets: list[str], base_id: str) -> dict[str, Any]:
        from peft import AdaLoraConfig

        pc = AdaLoraConfig(init_r=config.init_r, target_r=config.target_r, lora_alpha=config.lora_alpha,
                           lora_dropout=config.dropout, target_modules=list(targets), tinit=config.tinit,
                           tfinal=config.tfinal, deltaT=config.deltaT, beta1=config.beta1, beta2=config.beta2,
                           orth_reg_weight=config.orth_reg_weight, total_step=config.total_step or 1_000_000,
                           base_model_name_or_path=base_id, inference_mode=True)
        d = pc.to_dict()
        d["target_modules"] = sorted(targets)
        d["total_step"] = config.total_step
        return _jsonable(d)

    def from_adapter_config(self, d: dict[str, Any]) -> AdaLoRA:
        tm = d.get("target_modules")
        return AdaLoRA(init_r=int(d["init_r"]), target_r=int(d["target_r"]), alpha=float(d.get("lora_alpha") or d["init_r"]),
                       dropout=float(d.get("lora_dropout", 0.0)),
                       target_modules=sorted(tm) if isinstance(tm, (list, set, tuple)) else tm,
                       tinit=int(d.get("tinit", 0)), tfinal=int(d.get("tfinal", 0)), deltaT=int(d.get("deltaT", 1)),
                       beta1=float(d.get("beta1", 0.85)), beta2=float(d.get("beta2", 0.85)),
                       orth_reg_weight=float(d.get("orth_reg_weight", 0.5)), total_step=d.get("total_step"))
