"""Rank compression of a trained linear adapter: each module's ``delta_W = scale * B @ A`` re-factored by
truncated SVD (:mod:`adapterhub.merge`) to a lower rank, as a new adapter of the factor-holding method (a plain
LoRA, like :func:`.merging.combine`).

Per module the rank is ``min(rank, current)`` (``rank=``), or the smallest rank keeping ``energy`` of
``sum s_i^2`` (``energy=``), never above the module's current rank. The current ranks come from the method
plug-in (:meth:`~adapterhub.methods.Method.module_ranks`): for AdaLoRA its per-module allocation, which compression
starts from and never exceeds (modules it left at rank 0 stay out), instead of a uniform rank. The result keeps
per-module ranks (``rank_pattern``): nothing is zero-padded.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import torch

from ..errors import AdapterHubError
from ..heads import head_from_config
from ..merge import compute_dtype, energy_rank, lowrank_svd, split_svd
from ..methods import factor_method
from .entry import AdapterEntry
from .merging import require_linear
from .units import build_units


@dataclasses.dataclass
class Compression:
    """What :func:`compress` did: the ranks and file sizes before and after, and the share of each module's
    ``sum s_i^2`` kept."""

    source: str
    rank: int | None
    energy: float | None
    ranks_before: dict[str, int]
    ranks_after: dict[str, int]
    energy_kept: dict[str, float]
    params_before: int
    params_after: int

    def summary(self) -> dict[str, Any]:
        """The card's ``extra.compression``: the request, totals, and the per-module ranks."""
        kept = list(self.energy_kept.values())
        return {"source": self.source, "rank": self.rank, "energy": self.energy,
                "total_rank": [sum(self.ranks_before.values()), sum(self.ranks_after.values())],
                "params": [self.params_before, self.params_after],
                "min_energy_kept": round(min(kept), 6) if kept else None, "ranks": dict(self.ranks_after)}


def check_request(rank: Any, energy: Any) -> None:
    if (rank is None) == (energy is None):
        raise AdapterHubError("compress: give exactly one of rank= (a positive int) or energy= (in (0, 1])")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise AdapterHubError(f"compress: rank must be a positive int, got {rank!r}")
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, numbers.Real)
                               or not math.isfinite(float(energy)) or not 0.0 < float(energy) <= 1.0):
        raise AdapterHubError(f"compress: energy must be in (0, 1], got {energy!r}")


def compress(model, name: str, new_name: str, rank: int | None = None,
             energy: float | None = None) -> tuple[AdapterEntry, Compression]:
    """A new adapter ``new_name`` holding linear adapter ``name`` at a lower rank (see the module docstring);
    ``name`` is left as it is. Refused (nothing changes): a rank above the adapter's current largest rank, a
    nonlinear adapter, a name already loaded."""
    check_request(rank, energy)
    e = require_linear(model, name, "compressed (compression re-factors low-rank deltas)")
    model.check_new_name(new_name)
    units = model.adapter_units(name)
    current = e.method.module_ranks(units)
    top = max(current.values(), default=0)
    if rank is not None and rank > top:
        raise AdapterHubError(f"compress: rank {rank} is above {name!r}'s current rank ({top}); compression only "
                              "lowers ranks")
    factors, kept = {}, {}
    with torch.no_grad():
        for path, r in current.items():
            if r == 0:
                continue
            u, s, vh = _svd(e.method, units[path], compute_dtype(e.method.lowrank_factors(units[path])[0].device))
            k = min(rank, r) if rank is not None else min(energy_rank(s, energy), r)
            factors[path] = split_svd(u, s, vh, k)
            total = float(s.double().pow(2).sum())
            kept[path] = float(s[:k].double().pow(2).sum()) / total if total > 0 else 1.0
    if not factors:
        raise AdapterHubError(f"compress: every module of {name!r} has rank 0; nothing to compress")
    ranks = {p: int(a.shape[0]) for p, (a, _b) in factors.items()}
    target = factor_method()
    config = target.factor_config(max(ranks.values()), sorted(ranks), ranks)
    new_units = build_units(model.module_map, target, config, sorted(ranks), init=False)
    for path, unit in new_units.items():
        target.set_factors(unit, *factors[path])
    report = Compression(name, rank, energy, {p: current[p] for p in ranks}, ranks, kept,
                         _file_params(e.method, units), _file_params(target, new_units))
    how = f"rank={rank}" if rank is not None else f"energy={energy:g}"
    extra = {**{k: v for k, v in e.extra.items() if k == "datasets"}, "compression": report.summary()}
    entry = AdapterEntry(new_name, config, target, e.task, sorted(ranks), source=f"compress:{name}({how})",
                         extra=extra)
    return model.attach_adapter(entry, new_units, _head_copy(model, e.head)), report


def _svd(method, unit, dtype):
    a, b, scale = method.lowrank_factors(unit)
    s = scale.detach().to(dtype) if torch.is_tensor(scale) else float(scale)
    return lowrank_svd([(a.detach().to(dtype), b.detach().to(dtype) * s)], [1.0])


def _head_copy(model, old):
    head = head_from_config(old.config(), model.hidden_size, init=False)
    ref = next(old.parameters(), None)
    if ref is not None:
        head.to(dtype=ref.dtype)
    head.load_state_dict(old.state_dict())
    return head


def _file_params(method, units) -> int:
    """Values the adapter's weight file holds (AdaLoRA: its pruned ranks only)."""
    return sum(t.numel() for u in units.values() for t in method.unit_file_state(u).values())
