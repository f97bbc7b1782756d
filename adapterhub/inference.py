"""Inference-time operations on an :class:`~adapterhub.model.AdapterModel` (mixed into it):

- :meth:`~InferenceMixin.merge` / :meth:`~InferenceMixin.unmerge`: fold one low-rank adapter into the base
  weights for zero-overhead inference, and restore the base bit for bit;
- :meth:`~InferenceMixin.export_merged`: write a standalone transformers model directory with one adapter
  folded in (plus the tokenizer, and the task head for classification adapters);
- :meth:`~InferenceMixin.combine`: build a new LoRA adapter from a weighted combination of low-rank adapters
  (``linear``, ``ties``, ``dare``, ``svd``), in delta-W space so adapters of different ranks combine.

The math lives in :mod:`adapterhub.merge`.
"""
from __future__ import annotations

import copy
import math
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from .adapter_files import HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, write_dir_atomically, write_json, write_safetensors
from .errors import AdapterHubError
from .heads import SEQ_CLS, TOKEN_CLS, head_from_config
from .merge import (COMBINE_METHODS, combine_deltas, compute_dtype, lowrank_delta, lowrank_sum_factors,
                    truncated_svd)
from .methods import factor_method, methods
from .routing import AdaptedLinear

if TYPE_CHECKING:  # pragma: no cover
    from .model import AdapterEntry

#: written beside an exported merged model: which adapter was folded into which base
MERGED_INFO_FILE = "adapterhub_merged.json"


class InferenceMixin:
    """Model-level merge / unmerge / export / combine. Needs the attributes of ``AdapterModel``."""

    # ------------------------------------------------------------------------------------------------
    # merge / unmerge
    # ------------------------------------------------------------------------------------------------
    @property
    def merged(self) -> str | None:
        """The adapter currently folded into the base weights, or ``None``."""
        state = self.__dict__.get("_merge_state")
        return state[0] if state is not None else None

    def _adapted(self, name: str) -> dict[str, AdaptedLinear]:
        return {path: mod for path, mod in self.base.named_modules()
                if isinstance(mod, AdaptedLinear) and name in mod.units}

    def _require_lowrank(self, name: str, what: str) -> "AdapterEntry":
        e = self.entry(name)
        if not e.method.linear:
            linear = sorted(n for n, m in methods().items() if m.linear)
            raise AdapterHubError(
                f"adapter {name!r} is a {e.method.name} adapter: its delta is nonlinear (not a linear map B @ A), so it "
                f"cannot be {what}; only low-rank adapters ({', '.join(linear)}) can")
        return e

    def merge(self, name: str) -> None:
        """Fold low-rank adapter ``name`` into the base: ``W += scale * B @ A`` on each Linear it targets
        (computed in float64 on CPU / float32 elsewhere, then cast to ``W``'s dtype). Until :meth:`unmerge`,
        the model serves only ``name`` (its unit is skipped, its delta being in ``W``): a batch routing any
        other adapter is refused, and ``name`` cannot be deleted. Meant for inference (the merged unit gets no
        gradient while merged); not to be run concurrently with requests (it rewrites base weights in place)."""
        e = self._require_lowrank(name, "merged into the base weights")
        current = self.merged
        if current is not None:
            if current == name:
                raise AdapterHubError(f"adapter {name!r} is already merged")
            raise AdapterHubError(f"adapter {current!r} is merged; call unmerge() before merging {name!r}")
        mods = self._adapted(name)
        for path, mod in mods.items():
            if not mod.base_layer.weight.is_floating_point():
                raise AdapterHubError(f"cannot merge into {path!r}: its weight is {mod.base_layer.weight.dtype}, "
                                      "not a floating-point tensor (quantized base?)")
        backup: dict[str, tuple[AdaptedLinear, torch.Tensor]] = {}
        with torch.no_grad():
            try:
                for path, mod in mods.items():
                    w = mod.base_layer.weight
                    backup[path] = (mod, w.detach().clone())
                    a, b, scale = e.method.lowrank_factors(mod.units[name])
                    delta = lowrank_delta(a, b, scale, compute_dtype(w.device))
                    w.copy_((w.detach().to(delta.dtype) + delta.to(w.device)).to(w.dtype))
                    mod.merged_name = name
            except BaseException:
                self._restore(backup)
                raise
        self._merge_state = (name, backup)

    def _restore(self, backup: dict[str, tuple[AdaptedLinear, torch.Tensor]]) -> None:
        with torch.no_grad():
            for mod, original in backup.values():
                mod.base_layer.weight.copy_(original)
                mod.merged_name = None

    def unmerge(self) -> str | None:
        """Restore the base weights bit for bit (the originals were kept at merge time); returns the adapter
        that was merged, or ``None`` if none was (then nothing changes)."""
        state = self.__dict__.get("_merge_state")
        if state is None:
            return None
        name, backup = state
        self._restore(backup)
        self._merge_state = None
        return name

    # ------------------------------------------------------------------------------------------------
    # export
    # ------------------------------------------------------------------------------------------------
    def _original_weights(self) -> dict[str, torch.Tensor]:
        """Module path -> the base weight before the current merge (empty when nothing is merged)."""
        state = self.__dict__.get("_merge_state")
        return {} if state is None else {p: orig for p, (_, orig) in state[1].items()}

    def _clean_base_copy(self) -> nn.Module:
        """A copy of the base without any adapter wrapper (and without the current merge). Its tensors are
        shared with this model's base (nothing is duplicated); do not modify them in place."""
        memo: dict[int, Any] = {}
        for t in list(self.base.parameters()) + list(self.base.buffers()):
            memo[id(t)] = t
        clean = copy.deepcopy(self.base, memo)
        for path, mod in list(clean.named_modules()):
            if isinstance(mod, AdaptedLinear):
                parent_name, _, child = path.rpartition(".")
                parent = clean.get_submodule(parent_name) if parent_name else clean
                setattr(parent, child, mod.base_layer)
        for path, original in self._original_weights().items():
            clean.get_submodule(path).weight = nn.Parameter(original, requires_grad=False)
        clean.requires_grad_(False)
        return clean

    def export_merged(self, name: str, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write a standalone transformers model directory: the base with low-rank adapter ``name`` folded in
        (no adapterhub wrapper; loads with ``AutoModel``/``AutoModelForCausalLM.from_pretrained``), its
        tokenizer, and for classification adapters the task head files (``adapterhub_head.json`` /
        ``.safetensors``). Written atomically (temp dir, then rename). This model is left as it is."""
        e = self._require_lowrank(name, "merged into the base weights")
        clean = self._clean_base_copy()
        with torch.no_grad():
            for path, mod in self._adapted(name).items():
                lin = clean.get_submodule(path)
                w = lin.weight
                a, b, scale = e.method.lowrank_factors(mod.units[name])
                delta = lowrank_delta(a, b, scale, compute_dtype(w.device))
                lin.weight = nn.Parameter((w.detach().to(delta.dtype) + delta.to(w.device)).to(w.dtype),
                                          requires_grad=False)
        head = self.heads[name]

        def write(d: Path) -> None:
            clean.save_pretrained(str(d))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(d))
            if e.task in (SEQ_CLS, TOKEN_CLS):
                write_json(d / HEAD_CONFIG_FILE, head.config())
                write_safetensors(d / HEAD_WEIGHTS_FILE, dict(head.state_dict()))
            write_json(d / MERGED_INFO_FILE, {"adapter": name, "method": e.method.name, "task": e.task,
                                              "labels": head.labels, "base_model": self.base_id,
                                              "method_config": e.config.to_dict()})

        return write_dir_atomically(directory, overwrite, write)

    # ------------------------------------------------------------------------------------------------
    # combine
    # ------------------------------------------------------------------------------------------------
    def combine(self, weights: Mapping[str, float], name: str, method: str = "linear", rank: int | None = None,
                density: float = 0.5, seed: int = 0) -> "AdapterEntry":
        """A new LoRA adapter ``name`` from a weighted combination of low-rank adapters of one task (and one
        label set). Per targeted module, ``delta_i = scale_i * B_i @ A_i`` (0 where adapter ``i`` does not
        target the module) are combined with ``method``:

        - ``"linear"``: ``sum_i w_i delta_i``, re-factored exactly (default rank: the sum of the input ranks);
        - ``"svd"``: the same sum, truncated to ``rank`` by SVD (default: the largest input rank);
        - ``"ties"``: TIES-Merging with ``density`` (default rank: the largest input rank);
        - ``"dare"``: DARE with drop probability ``1 - density``, seeded by ``seed`` (default: largest rank).

        The result is re-factored by truncated SVD (``B' = U_r sqrt(S_r)``, ``A' = sqrt(S_r) V_r^T``) into a
        LoRA with ``r = alpha = rank`` (scale 1), so it saves as a plain peft LoRA. The task head is the same
        weighted sum of the input heads."""
        weights = self._check_combine(weights, name, method, rank, density, seed)
        names = list(weights)
        entries = [self._require_lowrank(n, "combined (combination works on low-rank deltas)") for n in names]
        self._check_compatible(names, entries)

        per_adapter = {n: self._adapted(n) for n in names}
        paths = [p for p, m in self.base.named_modules()
                 if isinstance(m, AdaptedLinear) and any(n in m.units for n in names)]
        ranks = {}
        for n, e in zip(names, entries):
            a, _, _ = e.method.lowrank_factors(next(iter(per_adapter[n].values())).units[n])
            ranks[n] = int(a.shape[0])
        if rank is None:
            rank = sum(ranks.values()) if method == "linear" else max(ranks.values())
        gen = torch.Generator().manual_seed(int(seed))
        factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            for path in paths:
                lin = self.base.get_submodule(path).base_layer
                dev, cdt = lin.weight.device, compute_dtype(lin.weight.device)
                present = [(n, e) for n, e in zip(names, entries) if path in per_adapter[n]]
                if method in ("linear", "svd"):
                    fl = []
                    for n, e in present:
                        a, b, s = e.method.lowrank_factors(per_adapter[n][path].units[n])
                        s = s.detach().to(cdt) if torch.is_tensor(s) else float(s)
                        fl.append((a.detach().to(cdt), b.detach().to(cdt) * s))
                    a_new, b_new = lowrank_sum_factors(fl, [weights[n] for n, _ in present], rank)
                else:
                    deltas = []
                    for n, e in zip(names, entries):
                        if path in per_adapter[n]:
                            a, b, s = e.method.lowrank_factors(per_adapter[n][path].units[n])
                            deltas.append(lowrank_delta(a, b, s, cdt).to(dev))
                        else:
                            deltas.append(torch.zeros(lin.out_features, lin.in_features, dtype=cdt, device=dev))
                    combined = combine_deltas(deltas, [weights[n] for n in names], method, density, gen)
                    a_new, b_new = truncated_svd(combined, rank)
                if not (torch.isfinite(a_new).all() and torch.isfinite(b_new).all()):
                    raise AdapterHubError(f"combine: the combined delta of module {path!r} is not finite")
                factors[path] = (a_new, b_new)

            target = factor_method()
            config = target.factor_config(int(rank), sorted(paths))
            units = self._build_units(target, config, paths, init=False)
            for path, unit in units.items():
                target.set_factors(unit, *factors[path])
            first = self.heads[names[0]]
            head = head_from_config(first.config(), self.hidden_size)
            ref = next(first.parameters(), None)
            if ref is not None:
                head.to(dtype=ref.dtype)
            state = {}
            for k, t in first.state_dict().items():
                acc = torch.zeros_like(t, dtype=compute_dtype(t.device))
                for n in names:
                    acc += self.heads[n].state_dict()[k].to(acc.dtype) * weights[n]
                state[k] = acc.to(t.dtype)
            head.load_state_dict(state)
        from .model import AdapterEntry

        summary = ", ".join(f"{n}={weights[n]:g}" for n in names)
        entry = AdapterEntry(name, config, target, entries[0].task, sorted(paths),
                             source=f"combine:{method}({summary}; rank={rank})")
        return self._attach(entry, units, head)

    def _check_combine(self, weights, name, method, rank, density, seed) -> dict[str, float]:
        if not isinstance(weights, Mapping) or not weights:
            raise AdapterHubError("combine: weights must be a non-empty dict {adapter name: weight}, got "
                                  f"{weights!r}")
        out = {}
        for n, w in weights.items():
            if not isinstance(n, str):
                raise AdapterHubError(f"combine: adapter names must be strings, got {n!r}")
            self.entry(n)
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
                raise AdapterHubError(f"combine: the weight of {n!r} must be a finite number, got {w!r}")
            out[n] = float(w)
        if method not in COMBINE_METHODS:
            raise AdapterHubError(f"combine: unknown method {method!r}; known: {list(COMBINE_METHODS)}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise AdapterHubError(f"combine: rank must be a positive int or None, got {rank!r}")
        if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 < float(density) <= 1.0:
            raise AdapterHubError(f"combine: density must be in (0, 1], got {density!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise AdapterHubError(f"combine: seed must be an int, got {seed!r}")
        self._check_new_name(name)
        return out

    def _check_compatible(self, names: list[str], entries: list["AdapterEntry"]) -> None:
        tasks = {n: e.task for n, e in zip(names, entries)}
        if len(set(tasks.values())) > 1:
            raise AdapterHubError(f"combine: the adapters have different tasks ({_listing(tasks)}); only adapters "
                                  "of one task combine")
        labels = {n: self.heads[n].labels for n in names}
        if any(v != labels[names[0]] for v in labels.values()):
            raise AdapterHubError(f"combine: the adapters have different labels ({_listing(labels)}); only "
                                  "adapters with the same labels, in the same order, combine")
        shapes = {n: {k: tuple(t.shape) for k, t in self.heads[n].state_dict().items()} for n in names}
        pooling = {n: getattr(self.heads[n], "pooling", None) for n in names}
        if any(v != pooling[names[0]] for v in pooling.values()) or \
                any(v != shapes[names[0]] for v in shapes.values()):
            raise AdapterHubError(f"combine: the adapters' heads differ (pooling: {_listing(pooling)}); only "
                                  "adapters with the same head combine")


def _listing(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k!r}: {v!r}" for k, v in d.items())


__all__ = ["InferenceMixin", "MERGED_INFO_FILE"]
