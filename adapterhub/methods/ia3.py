"""IA3 (Liu et al. 2022, "(IA)^3"): learned scaling vectors. On the targeted keys/values a vector ``l`` scales the
module's output, ``h = l * (W x + b)``; on feed-forward modules (``feedforward_modules``) it scales the input,
``h = W (l * x) + b``. Files are peft's IA3 format (``ia3_l`` of shape ``[out, 1]``, or ``[1, in]`` on feed-forward
modules), loadable by ``peft.PeftModel``.

Routed per row as deltas (one rule for single rows, stacks and banks; zero slot = no change):
output scaling ``base_out * (l - 1)``, input scaling ``W (x * (l - 1))`` (the kind re-applies the base weight, so
the bias is added once). Mergeable exactly: :meth:`IA3Method.fold` scales W's rows (and the bias) or its columns.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdapterFileError, AdapterHubError
from ..merge import compute_dtype
from ..routing import UnitKind, linear_view
from ..routing.stacks import as_rows, stack_vectors
from .base import Method, MethodConfig, check_shapes, strip_prefix
from .peft_compat import LORA_METADATA, check_peft_fields, check_target_spec, default_ia3_modules, jsonable
from .registry import register_method


@dataclasses.dataclass
class IA3(MethodConfig):
    """IA3 config. ``target_modules`` and ``feedforward_modules`` default to peft's per-architecture choice (e.g.
    key/value/output.dense with output.dense feed-forward for BERT; k_proj/v_proj/down_proj with down_proj
    feed-forward for Llama). A list matches module-name suffixes, a string is a full-match regex (peft semantics:
    ``feedforward_modules`` list entries match any path that ends with them)."""

    method = "ia3"
    target_modules: list[str] | str | None = None
    feedforward_modules: list[str] | str | None = None

    def validate(self) -> None:
        for key in ("target_modules", "feedforward_modules"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str) and not (
                    isinstance(v, (list, tuple)) and all(isinstance(s, str) and s for s in v)):
                raise AdapterHubError(f"IA3.{key} must be a list of module names or a regex string, got {v!r}")
        tm, ff = self.target_modules, self.feedforward_modules
        if isinstance(tm, (list, tuple)) and isinstance(ff, (list, tuple)) and not set(ff) <= set(tm):
            raise AdapterHubError(f"IA3.feedforward_modules {sorted(set(ff) - set(tm))} are not in "
                                  f"IA3.target_modules {list(tm)} (they must be a subset, as in peft)")

    def is_feedforward(self, path: str) -> bool:
        """Whether module ``path`` scales its input (peft's rule: regex full match, or a list entry the path ends
        with)."""
        ff = self.feedforward_modules
        if not ff:
            return False
        if isinstance(ff, str):
            return re.fullmatch(ff, path) is not None
        return any(path.endswith(k) for k in ff)


class IA3Unit(nn.Module):
    """One module's scaling vector, named as in peft (``ia3_l``)."""

    def __init__(self, in_features: int, out_features: int, feedforward: bool, dtype, device, init: bool = True):
        super().__init__()
        shape = (1, in_features) if feedforward else (out_features, 1)
        self.ia3_l = nn.Parameter(torch.empty(shape, dtype=dtype, device=device))
        if init:
            nn.init.ones_(self.ia3_l)  # peft's init: the identity
        self.feedforward = bool(feedforward)


def _scaled(base: nn.Module, x: torch.Tensor, d: torch.Tensor, base_out: torch.Tensor, out: torch.Tensor,
            feedforward: bool, n_rows: int | None = None) -> torch.Tensor:
    """``out`` plus IA3's delta for scalings ``l = 1 + d`` (``d`` is ``[F]``, or ``[rows, 1, F]`` gathered per row)."""
    if feedforward:  # W (x * l) = base_out + W (x * d)
        w = linear_view(base).weight  # [out, in], a transposed view for a Conv1D
        xs = x if n_rows is None else as_rows(x, n_rows)
        scaled = (xs * d.to(xs.dtype)).to(w.dtype)
        delta = F.linear(scaled, w)
        if scaled.requires_grad and torch.is_grad_enabled() and not delta.requires_grad:  # e.g. a dynamic int8 base
            raise AdapterHubError(f"IA3: the base weight ({type(w).__name__}) gives no gradient through its product, "
                                  "so input scalings would silently not train; train on a full-precision (or "
                                  "weight-only quantized) base, or run under torch.no_grad()")
    else:            # l * base_out = base_out + base_out * d
        bo = base_out if n_rows is None else as_rows(base_out, n_rows)
        delta = bo * d.to(bo.dtype)
    return out + delta.reshape(out.shape).to(out.dtype)


class ScaleKind(UnitKind):
    """IA3's scalings; units (and banks) with input and with output scaling stack apart."""

    name = "scale"
    own_rows_only = True  # input scaling costs a base matmul per row: rows of other adapters are skipped
    bank_side_keys = ("l",)  # the file's vector, kept per slot (exact files); forwards use d = l - 1

    def apply_one(self, method, unit, base, x, base_out, out, training):
        return _scaled(base, x, unit.ia3_l.reshape(-1) - 1, base_out, out, unit.feedforward)

    def group_key(self, method, unit):
        return unit.feedforward

    def build_stack(self, entries):
        units = [u for _n, _m, u in entries]
        return stack_vectors([u.ia3_l.reshape(-1) - 1 for u in units]), units[0].feedforward

    def apply_rows(self, stack, base, x, base_out, out, idx, n_rows, training):
        d, ff = stack
        return _scaled(base, x, d.index_select(0, idx).unsqueeze(1), base_out, out, ff, n_rows)

    # banks: rows {"d": l - 1 [F], "l": the file's vector (side), "ff"}; one bank per scaling side
    def bank_group(self, row):
        return row["ff"]

    def apply_bank_row(self, row, base, x, base_out, out):
        return _scaled(base, x, row["d"], base_out, out, row["ff"])

    def apply_bank_rows(self, state, base, x, base_out, out, idx, n_rows):
        d = state.rows["d"].index_select(0, idx).unsqueeze(1)
        return _scaled(base, x, d, base_out, out, state.static["ff"], n_rows)


def _row(l: torch.Tensor, feedforward: bool) -> dict:
    l = l.detach()
    return {"d": l.reshape(-1) - 1, "l": l, "ff": bool(feedforward)}


class IA3Method(Method):
    name = "ia3"
    display_name = "IA3"
    config_cls = IA3
    kind = ScaleKind()
    peft_type = "IA3"
    peft_loadable = True
    card_keys = ("target_modules", "feedforward_modules")
    file_keys = ("ia3_l",)
    size_key = "ia3_l"
    size_label = "vector length"

    def resolve_config(self, config: IA3, base: nn.Module) -> IA3:
        if config.target_modules is not None and config.feedforward_modules is not None:
            return config
        targets, feedforward = default_ia3_modules(base)
        what = "target_modules" if config.target_modules is None else "feedforward_modules"
        if (targets if what == "target_modules" else feedforward) is None:
            model_type = getattr(getattr(base, "config", None), "model_type", None)
            raise AdapterHubError(f"IA3: peft has no default {what} for model_type {model_type!r} "
                                  f"({type(base).__name__}); pass IA3({what}=[...])")
        return dataclasses.replace(config, target_modules=config.target_modules
                                   if config.target_modules is not None else targets,
                                   feedforward_modules=config.feedforward_modules
                                   if config.feedforward_modules is not None else feedforward)

    def default_targets(self, config, base):
        raise AdapterHubError("IA3: target_modules must be resolved first (Method.resolve_config)")

    def create(self, config: IA3, module: nn.Linear, path: str, init: bool = True) -> IA3Unit:
        w = module.weight
        return IA3Unit(module.in_features, module.out_features, config.is_feedforward(path),
                       w.dtype if w.is_floating_point() else torch.float32, w.device, init=init)

    def fold(self, weight, bias, unit: IA3Unit):
        """``W * l`` (rows for output scaling, columns for input scaling) and, for output scaling, ``b * l``, in
        float64 on CPU / float32 elsewhere: peft's merge."""
        cdt = compute_dtype(weight.device)
        l = unit.ia3_l.detach().to(device=weight.device, dtype=cdt)
        new_w = (weight.detach().to(cdt) * l).to(weight.dtype)
        if bias is None or unit.feedforward:
            return new_w, bias
        return new_w, (bias.detach().to(cdt) * l.reshape(-1)).to(bias.dtype)

    def unit_row(self, unit: IA3Unit) -> dict:
        return _row(unit.ia3_l, unit.feedforward)

    def file_row(self, config: IA3, path: str, module: nn.Linear, state: dict[str, torch.Tensor]) -> dict:
        ff = config.is_feedforward(path)
        check_shapes(path, state, {"ia3_l": (1, module.in_features) if ff else (module.out_features, 1)})
        dtype = module.weight.dtype if module.weight.is_floating_point() else torch.float32
        return _row(state["ia3_l"].to(dtype), ff)

    def row_file_state(self, config: IA3, path: str, row: dict) -> dict[str, torch.Tensor]:
        return {"ia3_l": row["l"]}

    def unit_file_state(self, unit: IA3Unit) -> dict[str, torch.Tensor]:
        return {"ia3_l": unit.ia3_l}

    def file_module_sizes(self, f) -> dict[str, int]:
        return {strip_prefix(k)[: -len(".ia3_l")]: max(f.get_slice(k).get_shape()) for k in sorted(f.keys())
                if k.endswith(".ia3_l")}

    def describe_sizes(self, config: dict[str, Any], sizes: dict[str, int]) -> tuple[str, list[str]]:
        return "IA3 vectors", super().describe_sizes(config, sizes)[1]

    def to_adapter_config(self, config: IA3, targets: list[str], base_id: str, units=None) -> dict[str, Any]:
        from peft import IA3Config

        ff = sorted(p for p in targets if config.is_feedforward(p))  # exact paths: a subset of the targets
        pc = IA3Config(target_modules=sorted(targets), feedforward_modules=ff, base_model_name_or_path=base_id,
                       inference_mode=True)
        return jsonable(pc.to_dict())

    peft_fields = LORA_METADATA + ("target_modules", "exclude_modules", "feedforward_modules", "modules_to_save",
                                   "task_type", "init_ia3_weights",  # an initialisation: every value is in the file
                                   "fan_in_fan_out")  # peft's merge layout for Conv1D: the forward is the same

    def from_peft_config(self, d: dict[str, Any], keys: dict[str, str] | None, where: str) -> IA3:
        """peft's IA3 on the modules ``keys`` it adapts (our path -> peft's name): feed-forward modules by peft's
        rule on peft's names (a regex full match, or a list entry the name ends with), kept as our exact paths."""
        check_peft_fields(d, self.peft_fields, self.peft_refused, where)
        check_target_spec(d, where)
        ff = d.get("feedforward_modules")
        if ff is not None and not isinstance(ff, (str, list)):
            raise AdapterFileError(f"{where}: feedforward_modules must be a list of names or a regex, got {ff!r}")
        rule = IA3(target_modules=d.get("target_modules"), feedforward_modules=ff)
        try:
            rule.validate()  # list feed-forward modules must be among the list targets (peft refuses them too)
        except AdapterHubError as e:
            raise AdapterFileError(f"{where}: {e}") from None
        keys = keys if keys is not None else {}
        return IA3(target_modules=sorted(keys), feedforward_modules=sorted(p for p, k in keys.items()
                                                                          if rule.is_feedforward(k)))

    def renamed(self, config: IA3, names: dict[str, str]) -> IA3:
        return IA3(target_modules=sorted(names.values()),
                   feedforward_modules=sorted(n for p, n in names.items() if config.is_feedforward(p)))

    def from_adapter_config(self, d: dict[str, Any]) -> IA3:
        if d.get("fan_in_fan_out"):
            raise AdapterHubError("adapter_config.json: IA3 with fan_in_fan_out=true (Conv1D layers) is not supported")
        if d.get("exclude_modules"):
            raise AdapterHubError("adapter_config.json: IA3 exclude_modules is not supported")

        def names(v):
            return sorted(v) if isinstance(v, (list, set, tuple)) else v

        return IA3(target_modules=names(d.get("target_modules")),
                   feedforward_modules=names(d.get("feedforward_modules")))


register_method(IA3Method())
