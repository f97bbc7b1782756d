"""AdaLoRA: SVD-parameterised LoRA, ``delta = B diag(E * mask) A x * alpha / init_r``, whose ranks are allocated
during training (:mod:`.allocation`: the rank allocator and the training hooks).

Files follow peft's AdaLoRA format (keys ``lora_A``, ``lora_E``, ``lora_B``; ``rank_pattern`` in the config),
PRUNED: only the allocated ranks are written, and ``rank_pattern`` holds each module's keep-mask over ``init_r``,
which is exactly what ``peft.PeftModel.from_pretrained`` expects to resize its modules. In memory a unit keeps all
``init_r`` triplets and a ``rank_mask`` buffer; masked triplets contribute (and receive) nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ...errors import AdapterFileError, AdapterHubError
from ..base import Method, MethodConfig, check_shapes, sizes_table, strip_prefix
from ..lowrank_kind import LOWRANK, lowrank_row
from ..peft_compat import (LORA_IMPLEMENTED, LORA_METADATA, LORA_REFUSED, LORA_REFUSED_TENSORS, check_peft_fields,
                           check_target_spec, default_lora_targets, jsonable)
from ..registry import register_method


@dataclasses.dataclass
class AdaLoRA(MethodConfig):
    """AdaLoRA config. ``total_step`` (the schedule's length, usually the run's optimizer steps) is required for
    training: the budget goes from ``init_r`` to ``target_r`` per module between ``tinit`` and
    ``total_step - tfinal``, re-allocated every ``deltaT`` steps."""

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
    rank_pattern: dict[str, list[bool]] | None = None  # set when loading a pruned file

    def validate(self) -> None:
        for k in ("init_r", "target_r", "deltaT"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise AdapterHubError(f"AdaLoRA.{k} must be a positive int, got {v!r}")
        if self.target_r > self.init_r:
            raise AdapterHubError(f"AdaLoRA.target_r ({self.target_r}) must be <= init_r ({self.init_r})")
        if self.tinit < 0 or self.tfinal < 0:
            raise AdapterHubError("AdaLoRA.tinit and AdaLoRA.tfinal must be >= 0")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise AdapterHubError("AdaLoRA.beta1 and AdaLoRA.beta2 must be in [0, 1)")
        if self.orth_reg_weight < 0:
            raise AdapterHubError(f"AdaLoRA.orth_reg_weight must be >= 0, got {self.orth_reg_weight}")
        if self.total_step is not None and self.total_step <= self.tinit + self.tfinal:
            raise AdapterHubError(
                f"AdaLoRA.total_step ({self.total_step}) must be larger than tinit + tfinal "
                f"({self.tinit} + {self.tfinal})")

    def validate_for_training(self) -> None:
        self.validate()
        if self.total_step is None:
            raise AdapterHubError("AdaLoRA.total_step is missing: the rank budget schedule needs it (usually the "
                                  "run's training.steps)")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.init_r)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("rank_pattern", None)
        return d


class AdaLoRAUnit(nn.Module):
    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float,
                 dtype: torch.dtype, device):
        super().__init__()
        self.lora_A = nn.Parameter(torch.randn(r, in_features, dtype=dtype, device=device) * 0.02)
        self.lora_E = nn.Parameter(torch.zeros(r, 1, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.randn(out_features, r, dtype=dtype, device=device) * 0.02)
        self.register_buffer("rank_mask", torch.ones(r, dtype=torch.bool, device=device))
        self.init_r = r
        self.alpha = float(alpha)
        self.dropout = float(dropout)

    @property
    def rank(self) -> int:
        return int(self.rank_mask.sum())

    @property
    def scale(self) -> float:
        return self.alpha / (self.init_r + 1e-5)  # peft's scaling: alpha / (ranknum + eps), ranknum = init_r

    def set_mask(self, mask: torch.Tensor) -> None:
        with torch.no_grad():
            self.rank_mask.copy_(mask.to(self.rank_mask.device, torch.bool))
            self.lora_E.masked_fill_(~self.rank_mask.unsqueeze(1), 0.0)


class AdaLoRAMethod(Method):
    name = "adalora"
    display_name = "AdaLoRA"
    config_cls = AdaLoRA
    kind = LOWRANK
    peft_type = "ADALORA"
    peft_loadable = True
    linear = True
    card_keys = ("init_r", "target_r", "alpha", "tinit", "tfinal", "deltaT")
    file_keys = ("lora_A", "lora_E", "lora_B")
    card_extra_keys = ("rank_allocation", "total_rank")
    size_label = "rank in use (non-zero singular values)"
    training_options = {"adalora_budget": (str, "per_task"), "adalora_total_rank": ((int, type(None)), None)}
    # AdaLoRA's schedule fields (training only) on top of LoRA's; rank_pattern holds the keep-masks, alpha_pattern
    # is not read by peft's AdaLoRA
    peft_fields = LORA_METADATA + LORA_IMPLEMENTED + ("init_r", "target_r", "tinit", "tfinal", "deltaT", "beta1",
                                                      "beta2", "orth_reg_weight", "total_step")
    peft_refused = LORA_REFUSED
    peft_refused_tensors = LORA_REFUSED_TENSORS

    def default_targets(self, config, base):
        return default_lora_targets(base)

    def create(self, config: AdaLoRA, module: nn.Linear, path: str, init: bool = True) -> AdaLoRAUnit:
        w = module.weight
        unit = AdaLoRAUnit(module.in_features, module.out_features, config.init_r, config.lora_alpha,
                           config.dropout, w.dtype if w.is_floating_point() else torch.float32, w.device)
        if config.rank_pattern is not None:
            pattern = config.rank_pattern.get(f"{path}.lora_E")
            if pattern is None or len(pattern) != config.init_r:
                raise AdapterFileError(f"adapter_config.json rank_pattern: no {config.init_r}-long mask for {path}")
            unit.set_mask(torch.tensor([bool(x) for x in pattern]))
        return unit

    def lowrank_factors(self, unit: AdaLoRAUnit):
        e = unit.lora_E * unit.rank_mask.unsqueeze(1).to(unit.lora_E.dtype)
        return unit.lora_A * e, unit.lora_B, unit.scale

    # banks: pruned to the allocated ranks, like the files
    def unit_row(self, unit: AdaLoRAUnit) -> dict:
        m = unit.rank_mask
        return lowrank_row(unit.lora_A[m], unit.lora_B[:, m], unit.lora_E[m], unit.scale)

    def file_row(self, config: AdaLoRA, path: str, module: nn.Linear, state: dict[str, torch.Tensor]) -> dict:
        k = config.init_r
        if config.rank_pattern is not None:
            pattern = config.rank_pattern.get(f"{path}.lora_E")
            if pattern is None or len(pattern) != config.init_r:
                raise AdapterFileError(f"adapter_config.json rank_pattern: no {config.init_r}-long mask for {path}")
            k = sum(bool(x) for x in pattern)
        check_shapes(path, state, {"lora_A": (k, module.in_features), "lora_E": (k, 1),
                                   "lora_B": (module.out_features, k)})
        dtype = module.weight.dtype if module.weight.is_floating_point() else torch.float32
        scale = config.lora_alpha / (config.init_r + 1e-5)  # peft's scaling, as AdaLoRAUnit.scale
        return lowrank_row(state["lora_A"].to(dtype), state["lora_B"].to(dtype), state["lora_E"].to(dtype), scale)

    def row_file_state(self, config: AdaLoRA, path: str, row: dict) -> dict[str, torch.Tensor]:
        e = row["e"] if row["e"] is not None else torch.ones(row["a"].shape[0], dtype=row["a"].dtype)
        return {"lora_A": row["a"], "lora_E": e.unsqueeze(1), "lora_B": row["bt"].t()}

    # files: pruned to the allocated ranks
    def unit_file_state(self, unit: AdaLoRAUnit) -> dict[str, torch.Tensor]:
        m = unit.rank_mask
        return {"lora_A": unit.lora_A[m], "lora_E": unit.lora_E[m], "lora_B": unit.lora_B[:, m]}

    def load_unit_file_state(self, unit: AdaLoRAUnit, state: dict[str, torch.Tensor], path: str) -> None:
        super().load_unit_file_state(unit, state, path)  # checks names and (pruned) shapes
        m = unit.rank_mask
        with torch.no_grad():
            unit.lora_A[m] = state["lora_A"].to(unit.lora_A.dtype)
            unit.lora_E[m] = state["lora_E"].to(unit.lora_E.dtype)
            unit.lora_B[:, m] = state["lora_B"].to(unit.lora_B.dtype)

    def file_module_sizes(self, f) -> dict[str, int]:
        """Ranks in use: the non-zero singular values of each module's (small) ``lora_E``."""
        return {strip_prefix(k)[: -len(".lora_E")]: int((f.get_tensor(k) != 0).sum())
                for k in sorted(f.keys()) if k.endswith(".lora_E")}

    def describe_sizes(self, config: dict[str, Any], sizes: dict[str, int]) -> tuple[str, list[str]]:
        return "Rank allocation", [
            f"AdaLoRA starts every module at rank {config.get('init_r')} and prunes to a total budget of about "
            f"{config.get('target_r')} per module; total rank in use: {sum(sizes.values())}.", "",
            *sizes_table(self.size_label, sizes)]

    def card_extra(self, units: dict[str, AdaLoRAUnit]) -> dict[str, Any]:
        alloc = self.module_ranks(units)
        return {"rank_allocation": alloc, "total_rank": sum(alloc.values())}

    def module_ranks(self, units: dict[str, AdaLoRAUnit]) -> dict[str, int]:
        """The allocated ranks (the mask), not ``init_r``: rank compression starts from them."""
        return {p: u.rank for p, u in sorted(units.items())}

    def rank_pattern(self, units: dict[str, AdaLoRAUnit]) -> dict[str, list[bool]]:
        return {f"{p}.lora_E": u.rank_mask.tolist() for p, u in sorted(units.items())}

    def to_adapter_config(self, config: AdaLoRA, targets: list[str], base_id: str, units=None) -> dict[str, Any]:
        from peft import AdaLoraConfig

        total = config.total_step or (config.tinit + config.tfinal + 1)
        pc = AdaLoraConfig(init_r=config.init_r, target_r=config.target_r, lora_alpha=config.lora_alpha,
                           lora_dropout=config.dropout, target_modules=list(targets), tinit=config.tinit,
                           tfinal=config.tfinal, deltaT=config.deltaT, beta1=config.beta1, beta2=config.beta2,
                           orth_reg_weight=config.orth_reg_weight, total_step=total,
                           base_model_name_or_path=base_id, inference_mode=True)
        d = pc.to_dict()
        d["target_modules"] = sorted(targets)
        if units is not None:
            d["rank_pattern"] = self.rank_pattern(units)
        return jsonable(d)

    def from_adapter_config(self, d: dict[str, Any]) -> AdaLoRA:
        return self.from_peft_config(d, None, "adapter_config.json")

    def from_peft_config(self, d: dict[str, Any], keys: dict[str, str] | None, where: str) -> AdaLoRA:
        check_peft_fields(d, self.peft_fields, self.peft_refused, where)
        check_target_spec({k: v for k, v in d.items() if k != "rank_pattern"}, where)
        tm = d.get("target_modules")
        rp = d.get("rank_pattern")
        if rp is not None and not (isinstance(rp, dict) and all(isinstance(v, list) for v in rp.values())):
            raise AdapterFileError(f"{where}: rank_pattern must map '<module>.lora_E' to a list of bools")
        config = AdaLoRA(init_r=int(d["init_r"]), target_r=int(d["target_r"]),
                         alpha=float(d.get("lora_alpha") or d["init_r"]), dropout=float(d.get("lora_dropout") or 0.0),
                         target_modules=sorted(tm) if isinstance(tm, (list, set, tuple)) else tm,
                         tinit=int(d.get("tinit", 0)), tfinal=int(d.get("tfinal", 0)), deltaT=int(d.get("deltaT", 1)),
                         beta1=float(d.get("beta1", 0.85)), beta2=float(d.get("beta2", 0.85)),
                         orth_reg_weight=float(d.get("orth_reg_weight", 0.5)), total_step=d.get("total_step"),
                         rank_pattern=rp)
        if keys is not None:  # peft's masks are keyed by its module names; a module without one keeps init_r
            config.target_modules = sorted(keys)
            if rp is not None:
                full = [True] * config.init_r
                config.rank_pattern = {f"{p}.lora_E": rp.get(f"{k}.lora_E", full) for p, k in keys.items()}
        return config

    def convert(self, config: AdaLoRA, units: dict[str, AdaLoRAUnit], target: str, base_id: str):
        """The same adapter as plain LoRA (``target="lora"``): per module A' = diag(E) A, B' = B over the kept ranks, with
        ``rank_pattern``/``alpha_pattern`` so that alpha'_m / r_m equals AdaLoRA's alpha / init_r. Modules left
        with rank 0 are dropped (LoRA needs r >= 1). Returns (adapter_config dict, tensors by module path)."""
        from peft import LoraConfig

        if target != "lora":
            return super().convert(config, units, target, base_id)
        tensors, ranks, alphas = {}, {}, {}
        for path, u in sorted(units.items()):
            r = u.rank
            if r == 0:
                continue
            m = u.rank_mask
            tensors[path] = {"lora_A.weight": (u.lora_A[m] * u.lora_E[m]).detach(),
                             "lora_B.weight": u.lora_B[:, m].detach()}
            ranks[path] = r
            alphas[path] = u.scale * r
        if not tensors:
            raise AdapterHubError("every module has rank 0: nothing to export as LoRA")
        r0 = max(set(ranks.values()), key=list(ranks.values()).count)
        pc = LoraConfig(r=r0, lora_alpha=alphas[next(iter(alphas))] * r0 / ranks[next(iter(ranks))],
                        target_modules=sorted(tensors), rank_pattern=dict(ranks), alpha_pattern=dict(alphas),
                        base_model_name_or_path=base_id, inference_mode=True, bias="none")
        d = jsonable(pc.to_dict())
        d["target_modules"] = sorted(tensors)
        return d, tensors

    # --- training ------------------------------------------------------------------------------
    def validate_for_training(self, config: AdaLoRA) -> None:
        config.validate_for_training()

    def validate_training_options(self, options: dict[str, Any], adapters: list[str], mode: str) -> None:
        E = AdapterHubError
        budget, total = options["adalora_budget"], options["adalora_total_rank"]
        if budget not in ("per_task", "shared"):
            raise E(f"training.adalora_budget: {budget!r} is not one of ['per_task', 'shared']")
        if not adapters and (budget != "per_task" or total is not None):
            raise E("training.adalora_budget/adalora_total_rank: AdaLoRA options given, but no task uses an AdaLoRA "
                    "adapter")
        if total is not None:
            if budget != "shared":
                raise E("training.adalora_total_rank needs training.adalora_budget: shared")
            if total < 1:
                raise E(f"training.adalora_total_rank: must be >= 1, got {total}")
        if budget == "shared" and mode != "joint":
            raise E("training.adalora_budget: shared needs training.mode: joint (one run, one budget)")

    def training_hooks(self, model, names: list[str], options: dict[str, Any]):
        from .allocation import AdaLoRAHooks

        return AdaLoRAHooks(model, names, shared=options["adalora_budget"] == "shared",
                            shared_budget=options["adalora_total_rank"])


register_method(AdaLoRAMethod())
