"""Merge, unmerge, export and combine: functions over an :class:`~adapterhub.model.AdapterModel` (its methods of
the same names call them), through its public API.

- :func:`merge` / :func:`unmerge`: fold one adapter into the base weights for zero-overhead inference (methods
  whose units fold: ``Method.mergeable``), and restore the base bit for bit (the backup lives in ``model.merge_state``);
- :func:`export_merged`: write a standalone transformers model directory with one adapter folded in (plus the
  tokenizer, and the task head for classification adapters);
- :func:`combine`: a new adapter of the factor-holding method from a weighted combination of linear adapters
  (``linear``, ``ties``, ``dare``, ``svd``), in delta-W space so adapters of different ranks combine.

The math lives in :mod:`adapterhub.merge` (pure functions).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..files.adapter_dir import HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, write_dir_atomically, write_json, write_safetensors
from ..errors import AdapterHubError
from ..heads import SEQ_CLS, TOKEN_CLS, head_from_config
from ..merge import (COMBINE_METHODS, combine_deltas, compute_dtype, lowrank_delta, lowrank_sum_factors,
                     truncated_svd)
from ..methods import factor_method, methods
from ..routing import AdaptedLinear, linear_view, stored_weight
from .entry import AdapterEntry
from .units import build_units, unwrap_all

#: written beside an exported merged model: which adapter was folded into which base
MERGED_INFO_FILE = "adapterhub_merged.json"


@dataclasses.dataclass
class MergeState:
    """The adapter folded into the base, and each touched module's original weight."""

    name: str
    backup: dict[str, tuple[AdaptedLinear, torch.Tensor, torch.Tensor | None]]  # path -> (module, weight, bias)


def require_linear(model, name: str, what: str) -> AdapterEntry:
    e = model.entry(name)
    if not e.method.linear:
        linear = sorted(n for n, m in methods().items() if m.linear)
        why = "its delta is not a low-rank product B @ A" if e.method.mergeable else e.method.nonlinear_effect
        raise AdapterHubError(f"adapter {name!r} is a {e.method.name} adapter: {why}, so it cannot be {what}; only "
                              f"low-rank adapters ({', '.join(linear)}) can")
    return e


def require_mergeable(model, name: str) -> AdapterEntry:
    """The entry of ``name`` if its method folds into the base weights (:attr:`Method.mergeable`), else a refusal
    that says why (the method's ``nonlinear_effect``)."""
    e = model.entry(name)
    if not e.method.mergeable:
        ok = sorted(n for n, m in methods().items() if m.mergeable)
        raise AdapterHubError(f"adapter {name!r} is a {e.method.name} adapter: {e.method.nonlinear_effect}, so it "
                              f"cannot be merged into the base weights; only adapters that fold into them "
                              f"({', '.join(ok)}) can")
    return e


# ----------------------------------------------------------------------------------------------------
# merge / unmerge
# ----------------------------------------------------------------------------------------------------
def merge(model, name: str) -> None:
    """Fold adapter ``name`` into the base (its method's ``fold``: ``W += scale * B @ A`` for low-rank methods) on each
    Linear it targets. Until :func:`unmerge`, the model serves only ``name`` (its unit is skipped, its delta being in
    ``W``): a batch routing any other adapter is refused, and ``name`` cannot be deleted. Meant for inference (the
    merged unit gets no gradient while merged); not to be run concurrently with requests (it rewrites base
    weights)."""
    e = require_mergeable(model, name)
    current = model.merged
    if current is not None:
        if current == name:
            raise AdapterHubError(f"adapter {name!r} is already merged")
        raise AdapterHubError(f"adapter {current!r} is merged; call unmerge() before merging {name!r}")
    if model.quantization is not None:
        raise AdapterHubError(
            f"cannot merge {name!r} into the base: the base is quantized ({model.quantization.mode}), and folding "
            "the delta would re-round every targeted weight (lossy, and unmerge could not restore them). Serve "
            "it unmerged (adapters run in full precision on top), merge on the full-precision base, or call "
            f"export_merged({name!r}, directory, quantize=...) for a merged quantized model")
    key = e.key
    units = model.adapter_units(name)  # banked adapters: detached copies of their rows
    mods = {path: model.base.get_submodule(path) for path in units}
    for path, mod in mods.items():
        if not mod.base_layer.weight.is_floating_point():
            raise AdapterHubError(f"cannot merge into {path!r}: its weight is {mod.base_layer.weight.dtype}, "
                                  "not a floating-point tensor (quantized base?)")
    backup: dict[str, tuple[AdaptedLinear, torch.Tensor, torch.Tensor | None]] = {}
    with torch.no_grad():
        try:
            for path, mod in mods.items():
                w, b = linear_view(mod.base_layer).weight, mod.base_layer.bias  # [out, in] (a view for Conv1D)
                backup[path] = (mod, w.detach().clone(), None if b is None else b.detach().clone())
                new_w, new_b = e.method.fold(w, b, units[path])
                w.copy_(new_w)
                if new_b is not b:
                    b.copy_(new_b)
                mod.merged_name = key
        except BaseException:
            _restore(backup)
            raise
    model.merge_state = MergeState(name, backup)


def _restore(backup: dict[str, tuple[AdaptedLinear, torch.Tensor, torch.Tensor | None]]) -> None:
    with torch.no_grad():
        for mod, weight, bias in backup.values():
            linear_view(mod.base_layer).weight.copy_(weight)
            if bias is not None:
                mod.base_layer.bias.copy_(bias)
            mod.merged_name = None


def unmerge(model) -> str | None:
    """Restore the base weights bit for bit (the originals were kept at merge time); returns the adapter that
    was merged, or ``None`` if none was (then nothing changes)."""
    state = model.merge_state
    if state is None:
        return None
    _restore(state.backup)
    model.merge_state = None
    return state.name


# ----------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------
def clean_base_copy(model) -> nn.Module:
    """A copy of the base without any adapter wrapper (and without the current merge). Its tensors are shared
    with the model's base (nothing is duplicated); do not modify them in place."""
    memo: dict[int, Any] = {id(t): t for t in list(model.base.parameters()) + list(model.base.buffers())}
    clean = copy.deepcopy(model.base, memo)
    unwrap_all(clean)
    if model.merge_state is not None:
        for path, (_mod, weight, bias) in model.merge_state.backup.items():
            lin = clean.get_submodule(path)
            lin.weight = nn.Parameter(stored_weight(lin, weight), requires_grad=False)
            if bias is not None:
                lin.bias = nn.Parameter(bias, requires_grad=False)
    clean.requires_grad_(False)
    return clean


def export_merged(model, name: str, directory: str | os.PathLike, overwrite: bool = False,
                  quantize: str | None = None) -> Path:
    """Write a standalone transformers model directory: the base with adapter ``name`` folded in (no
    adapterhub wrapper; loads with ``AutoModel``/``AutoModelForCausalLM.from_pretrained``), its tokenizer, and for
    classification adapters the task head files. Written atomically (temp dir, then rename). The model is left as
    it is. ``quantize`` (default: the base's own mode, if it is quantized): the merged weights quantized, with the
    ``quantization_config`` in ``config.json`` (see :mod:`.export_quantized`). From a quantized base the delta is
    folded into the dequantized weights and re-quantized; the sizes and the weights' error go into
    ``adapterhub_merged.json`` under ``quantization``."""
    from .export_quantized import densify, save_quantized
    from .quantize import check_mode

    e = require_mergeable(model, name)
    source = model.quantization.mode if model.quantization is not None else None
    mode = quantize if quantize is not None else source
    if mode is not None:
        check_mode(mode)
    clean = clean_base_copy(model)
    densify(clean)
    with torch.no_grad():
        for path, unit in model.adapter_units(name).items():
            lin = clean.get_submodule(path)
            new_w, new_b = e.method.fold(linear_view(lin).weight, lin.bias, unit)
            lin.weight = nn.Parameter(stored_weight(lin, new_w), requires_grad=False)
            if new_b is not lin.bias:
                lin.bias = nn.Parameter(new_b, requires_grad=False)
    head = model.entry(name).head

    def write(d: Path) -> None:
        quant = save_quantized(clean, d, mode) if mode is not None else None
        if quant is None:
            clean.save_pretrained(str(d))
        elif source is not None:
            quant["requantized_from"] = source
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(d))
        if e.task in (SEQ_CLS, TOKEN_CLS):
            write_json(d / HEAD_CONFIG_FILE, head.config())
            write_safetensors(d / HEAD_WEIGHTS_FILE, dict(head.state_dict()))
        write_json(d / MERGED_INFO_FILE, {"adapter": name, "method": e.method.name, "task": e.task,
                                          "labels": head.labels, "base_model": model.base_id,
                                          "method_config": e.config.to_dict(), "quantization": quant})

    return write_dir_atomically(directory, overwrite, write, kind_files=(MERGED_INFO_FILE, "config.json"),
                                kind="exported model")


# ----------------------------------------------------------------------------------------------------
# combine
# ----------------------------------------------------------------------------------------------------
def combine(model, weights: Mapping[str, float], name: str, method: str = "linear", rank: int | None = None,
            density: float = 0.5, seed: int = 0) -> AdapterEntry:
    """A new adapter ``name`` (of the factor-holding method: a plain LoRA) from a weighted combination of linear
    adapters of one task and label set. Per targeted module, ``delta_i = scale_i * B_i @ A_i`` (0 where adapter
    ``i`` does not target the module) are combined with ``method``:

    - ``"linear"``: ``sum_i w_i delta_i``, re-factored exactly (default rank: the sum of the input ranks);
    - ``"svd"``: the same sum, truncated to ``rank`` by SVD (default: the largest input rank);
    - ``"ties"``: TIES-Merging with ``density`` (default rank: the largest input rank);
    - ``"dare"``: DARE with drop probability ``1 - density``, seeded by ``seed`` (default: largest rank).

    The result is re-factored by truncated SVD (``B' = U_r sqrt(S_r)``, ``A' = sqrt(S_r) V_r^T``) with
    ``r = alpha = rank`` (scale 1), so it saves as a plain peft LoRA. The task head is the same weighted sum of
    the input heads."""
    weights = _check_combine(model, weights, name, method, rank, density, seed)
    names = list(weights)
    entries = [require_linear(model, n, "combined (combination works on low-rank deltas)") for n in names]
    _check_compatible(model, names, entries)
    units = {n: model.adapter_units(n) for n in names}
    keys = {e.key for e in entries}
    paths = [p for p, m in model.base.named_modules()  # module order
             if isinstance(m, AdaptedLinear) and any(m.holds(k) for k in keys)]
    _check_rank(model, paths, rank)
    if rank is None:
        ranks = [int(e.method.lowrank_factors(next(iter(units[n].values())))[0].shape[0]) for n, e in
                 zip(names, entries)]
        rank = sum(ranks) if method == "linear" else max(ranks)
    with torch.no_grad():
        factors = _combined_factors(model, names, entries, units, weights, paths, method, rank, density, seed)
        target = factor_method()
        config = target.factor_config(int(rank), sorted(paths))
        new_units = build_units(model.module_map, target, config, paths, init=False)
        for path, unit in new_units.items():
            target.set_factors(unit, *factors[path])
        head = _combined_head(model, names, weights)
    summary = ", ".join(f"{n}={weights[n]:g}" for n in names)
    entry = AdapterEntry(name, config, target, entries[0].task, sorted(paths),
                         source=f"combine:{method}({summary}; rank={rank})")
    return model.attach_adapter(entry, new_units, head)


def _combined_factors(model, names, entries, units, weights, paths, method, rank, density, seed):
    """{path: (A', B')} of the combined delta of every module any input adapter targets."""
    gen = torch.Generator().manual_seed(int(seed))
    factors = {}
    for path in paths:
        lin = linear_view(model.base.get_submodule(path).base_layer)
        dev, cdt = lin.weight.device, compute_dtype(lin.weight.device)
        if method in ("linear", "svd"):
            fl, ws = [], []
            for n, e in zip(names, entries):
                if path in units[n]:
                    a, b, s = e.method.lowrank_factors(units[n][path])
                    s = s.detach().to(cdt) if torch.is_tensor(s) else float(s)
                    fl.append((a.detach().to(cdt), b.detach().to(cdt) * s))
                    ws.append(weights[n])
            a_new, b_new = lowrank_sum_factors(fl, ws, rank)
        else:
            deltas = []
            for n, e in zip(names, entries):
                if path in units[n]:
                    a, b, s = e.method.lowrank_factors(units[n][path])
                    deltas.append(lowrank_delta(a, b, s, cdt).to(dev))
                else:
                    deltas.append(torch.zeros(lin.out_features, lin.in_features, dtype=cdt, device=dev))
            a_new, b_new = truncated_svd(combine_deltas(deltas, [weights[n] for n in names], method, density, gen),
                                         rank)
        if not (torch.isfinite(a_new).all() and torch.isfinite(b_new).all()):
            raise AdapterHubError(f"combine: the combined delta of module {path!r} is not finite")
        factors[path] = (a_new, b_new)
    return factors


def _combined_head(model, names: list[str], weights: dict[str, float]):
    first = model.entry(names[0]).head
    head = head_from_config(first.config(), model.hidden_size, base=model.base)
    ref = next(first.parameters(), None)
    if ref is not None:
        head.to(dtype=ref.dtype)
    state = {}
    for k, t in first.state_dict().items():
        acc = torch.zeros_like(t, dtype=compute_dtype(t.device))
        for n in names:
            acc += model.entry(n).head.state_dict()[k].to(acc.dtype) * weights[n]
        state[k] = acc.to(t.dtype)
    head.load_state_dict(state)
    return head


def _check_combine(model, weights, name, method, rank, density, seed) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise AdapterHubError(f"combine: weights must be a non-empty dict {{adapter name: weight}}, got {weights!r}")
    out = {}
    for n, w in weights.items():
        if not isinstance(n, str):
            raise AdapterHubError(f"combine: adapter names must be strings, got {n!r}")
        model.entry(n)
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
            raise AdapterHubError(f"combine: the weight of {n!r} must be a finite number, got {w!r}")
        out[n] = float(w)
    if all(w == 0 for w in out.values()):
        raise AdapterHubError(f"combine: every weight is 0 ({weights!r}): the combination would be no adapter")
    if method not in COMBINE_METHODS:
        raise AdapterHubError(f"combine: unknown method {method!r}; known: {list(COMBINE_METHODS)}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise AdapterHubError(f"combine: rank must be a positive int or None, got {rank!r}")
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 < float(density) <= 1.0:
        raise AdapterHubError(f"combine: density must be in (0, 1], got {density!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AdapterHubError(f"combine: seed must be an int, got {seed!r}")
    model.check_new_name(name)
    return out


def _check_rank(model, paths: list[str], rank: int | None) -> None:
    """A rank above a combined layer's size would store more than the full delta: refused, naming the layer."""
    if rank is None:
        return
    for path in paths:
        lin = model.base.get_submodule(path).base_layer
        full = min(int(lin.in_features), int(lin.out_features))
        if rank > full:
            raise AdapterHubError(f"combine: rank={rank} is above the size of layer {path!r} ({lin.in_features} -> "
                                  f"{lin.out_features}: at most rank {full})")


def _check_compatible(model, names: list[str], entries: list[AdapterEntry]) -> None:
    tasks = {n: e.task for n, e in zip(names, entries)}
    if len(set(tasks.values())) > 1:
        raise AdapterHubError(f"combine: the adapters have different tasks ({_listing(tasks)}); only adapters "
                              "of one task combine")
    labels = {n: model.entry(n).head.labels for n in names}
    if any(v != labels[names[0]] for v in labels.values()):
        raise AdapterHubError(f"combine: the adapters have different labels ({_listing(labels)}); only "
                              "adapters with the same labels, in the same order, combine")
    shapes = {n: {k: tuple(t.shape) for k, t in model.entry(n).head.state_dict().items()} for n in names}
    pooling = {n: getattr(model.entry(n).head, "pooling", None) for n in names}
    if any(v != pooling[names[0]] for v in pooling.values()) or any(v != shapes[names[0]] for v in shapes.values()):
        raise AdapterHubError(f"combine: the adapters' heads differ (pooling: {_listing(pooling)}); only "
                              "adapters with the same head combine")


def _listing(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k!r}: {v!r}" for k, v in d.items())
