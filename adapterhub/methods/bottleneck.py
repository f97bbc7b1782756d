"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): ``h -> h + up(act(down(h)))`` on the output
of a sublayer's output projection, before its residual connection.

Placement ``houlsby``: after the attention block and after the feed-forward block of every layer.
Placement ``pfeiffer``: after the feed-forward block only.
peft has no bottleneck adapters; files use the same directory format (``adapter_config.json`` with
``peft_type: "BOTTLENECK"`` + ``adapter_model.safetensors`` with ``base_model.model.<module>.adapter_down.*``).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from ..errors import AdapterHubError
from ..routing import UnitKind
from ..routing.stacks import as_rows, concat_mlp, gathered_mlp, side_by_side, stack_padded, stack_vectors
from .base import Method, MethodConfig, check_shapes, targetable_modules
from .registry import register_method

ACTIVATIONS = {"relu": torch.relu, "gelu": nn.functional.gelu, "silu": nn.functional.silu, "tanh": torch.tanh}

# (attention-output, feed-forward-output) module patterns, full-match regexes over module paths
_PLACEMENT_PATTERNS = [
    (r".*attention\.output\.dense", r".*layer\.\d+\.output\.dense"),          # BERT, RoBERTa, MiniLM, ELECTRA
    (r".*self_attn\.o_proj", r".*mlp\.down_proj"),                               # Llama, Mistral, Qwen, Gemma
    (r".*attention\.out_lin", r".*ffn\.lin2"),                                   # DistilBERT
    (r".*self_attn\.out_proj", r".*fc2"),                                        # OPT, BART-like
    (r".*self_attention\.dense", r".*mlp\.dense_4h_to_h"),                       # GPT-NeoX/Falcon-like
]


@dataclasses.dataclass
class Bottleneck(MethodConfig):
    method = "bottleneck"
    reduction_factor: int = 16
    placement: str = "houlsby"
    non_linearity: str = "relu"
    attn_modules: str | None = None  # regex override for the attention-output projections
    ffn_modules: str | None = None   # regex override for the feed-forward-output projections

    def validate(self) -> None:
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 1:
            raise AdapterHubError(f"Bottleneck.reduction_factor must be a positive int, got {self.reduction_factor!r}")
        if self.placement not in ("houlsby", "pfeiffer"):
            raise AdapterHubError(f"Bottleneck.placement must be 'houlsby' or 'pfeiffer', got {self.placement!r}")
        if self.non_linearity not in ACTIVATIONS:
            raise AdapterHubError(f"Bottleneck.non_linearity must be one of {sorted(ACTIVATIONS)}, got {self.non_linearity!r}")


class BottleneckUnit(nn.Module):
    def __init__(self, hidden: int, bottleneck: int, non_linearity: str, dtype, device, init: bool = True):
        super().__init__()
        self.adapter_down = skip_init(nn.Linear, hidden, bottleneck, dtype=dtype, device=device)
        self.adapter_up = skip_init(nn.Linear, bottleneck, hidden, dtype=dtype, device=device)
        if init:
            nn.init.normal_(self.adapter_down.weight, std=1e-2)
            nn.init.zeros_(self.adapter_down.bias)
            nn.init.zeros_(self.adapter_up.weight)  # starts as the identity
            nn.init.zeros_(self.adapter_up.bias)
        self.non_linearity = non_linearity


class BottleneckKind(UnitKind):
    """``h -> h + up(act(down(h)))`` on the module's output; units with different activations stack apart."""

    name = "mlp-on-output"

    def apply_one(self, method, unit, base, x, base_out, out, training):
        act = ACTIVATIONS[unit.non_linearity]
        h = base_out.to(unit.adapter_down.weight.dtype)
        return out + unit.adapter_up(act(unit.adapter_down(h))).to(out.dtype)

    def group_key(self, method, unit):
        return unit.non_linearity

    def build_stack(self, entries):
        units = [u for _n, _m, u in entries]
        return (stack_padded([u.adapter_down.weight for u in units], 0),
                stack_vectors([u.adapter_down.bias for u in units]),
                stack_padded([u.adapter_up.weight for u in units], 1),
                torch.stack([u.adapter_up.bias for u in units] + [torch.zeros_like(units[0].adapter_up.bias)]),
                ACTIVATIONS[units[0].non_linearity])

    def apply_rows(self, stack, base, x, base_out, out, idx, n_rows, training):
        dw, db, uw, ub, act = stack
        rows = concat_mlp if side_by_side(dw) else gathered_mlp
        d = rows(as_rows(base_out, n_rows).to(dw.dtype), idx, dw, db, uw, ub, act)
        return out + d.reshape(*out.shape).to(out.dtype)

    # banks: rows {"dw", "db", "uw", "ub", "act"}; one bank per activation
    def bank_group(self, row):
        return row["act"]

    def apply_bank_row(self, row, base, x, base_out, out):
        act = ACTIVATIONS[row["act"]]
        h = base_out.to(row["dw"].dtype)
        return out + nn.functional.linear(act(nn.functional.linear(h, row["dw"], row["db"])), row["uw"],
                                          row["ub"]).to(out.dtype)

    def apply_bank_rows(self, state, base, x, base_out, out, idx, n_rows):
        r = state.rows
        d = gathered_mlp(as_rows(base_out, n_rows).to(r["dw"].dtype), idx, r["dw"], r["db"], r["uw"], r["ub"],
                         ACTIVATIONS[state.static["act"]])
        return out + d.reshape(*out.shape).to(out.dtype)


class BottleneckMethod(Method):
    name = "bottleneck"
    display_name = "Bottleneck adapter"
    config_cls = Bottleneck
    kind = BottleneckKind()
    peft_type = "BOTTLENECK"
    card_keys = ("reduction_factor", "placement", "non_linearity")
    file_keys = ("adapter_down.weight", "adapter_down.bias", "adapter_up.weight", "adapter_up.bias")
    size_key = "adapter_down.weight"
    size_label = "bottleneck width"

    def resolve_targets(self, config: Bottleneck, base: nn.Module) -> list[str]:
        names = [n for n, _m in targetable_modules(base)]
        candidates = [(config.attn_modules, config.ffn_modules)] if (config.attn_modules or config.ffn_modules) \
            else _PLACEMENT_PATTERNS
        for attn, ffn in candidates:
            pats = [ffn] if config.placement == "pfeiffer" else [attn, ffn]
            found = [n for n in names if any(p and re.fullmatch(p, n) for p in pats)]
            if found:
                return sorted(found)
        raise AdapterHubError(
            f"Bottleneck: cannot find attention/feed-forward output projections in {type(base).__name__}; "
            "pass Bottleneck(attn_modules=<regex>, ffn_modules=<regex>)")

    def create(self, config: Bottleneck, module: nn.Linear, path: str, init: bool = True) -> BottleneckUnit:
        w = module.weight
        hidden = module.out_features
        return BottleneckUnit(hidden, max(1, hidden // config.reduction_factor), config.non_linearity,
                              w.dtype if w.is_floating_point() else torch.float32, w.device, init=init)

    def describe_sizes(self, config: dict[str, Any], sizes: dict[str, int]) -> tuple[str, list[str]]:
        return "Bottleneck sizes", super().describe_sizes(config, sizes)[1]

    def unit_row(self, unit: BottleneckUnit) -> dict:
        return {"dw": unit.adapter_down.weight.detach(), "db": unit.adapter_down.bias.detach(),
                "uw": unit.adapter_up.weight.detach(), "ub": unit.adapter_up.bias.detach(), "act": unit.non_linearity}

    def file_row(self, config: Bottleneck, path: str, module: nn.Linear, state: dict[str, torch.Tensor]) -> dict:
        h = module.out_features
        w = max(1, h // config.reduction_factor)
        check_shapes(path, state, {"adapter_down.weight": (w, h), "adapter_down.bias": (w,),
                                   "adapter_up.weight": (h, w), "adapter_up.bias": (h,)})
        dtype = module.weight.dtype if module.weight.is_floating_point() else torch.float32
        return {"dw": state["adapter_down.weight"].to(dtype), "db": state["adapter_down.bias"].to(dtype),
                "uw": state["adapter_up.weight"].to(dtype), "ub": state["adapter_up.bias"].to(dtype),
                "act": config.non_linearity}

    def row_file_state(self, config: Bottleneck, path: str, row: dict) -> dict[str, torch.Tensor]:
        return {"adapter_down.weight": row["dw"], "adapter_down.bias": row["db"], "adapter_up.weight": row["uw"],
                "adapter_up.bias": row["ub"]}

    def unit_file_state(self, unit: BottleneckUnit) -> dict[str, torch.Tensor]:
        return {"adapter_down.weight": unit.adapter_down.weight, "adapter_down.bias": unit.adapter_down.bias,
                "adapter_up.weight": unit.adapter_up.weight, "adapter_up.bias": unit.adapter_up.bias}

    def to_adapter_config(self, config: Bottleneck, targets: list[str], base_id: str, units=None) -> dict[str, Any]:
        return {"peft_type": "BOTTLENECK", "base_model_name_or_path": base_id, "task_type": None,
                "inference_mode": True, "reduction_factor": config.reduction_factor, "placement": config.placement,
                "non_linearity": config.non_linearity, "target_modules": sorted(targets),
                "attn_modules": config.attn_modules, "ffn_modules": config.ffn_modules}

    def from_adapter_config(self, d: dict[str, Any]) -> Bottleneck:
        return Bottleneck(reduction_factor=int(d["reduction_factor"]), placement=d.get("placement", "houlsby"),
                          non_linearity=d.get("non_linearity", "relu"), attn_modules=d.get("attn_modules"),
                          ffn_modules=d.get("ffn_modules"))


register_method(BottleneckMethod())
