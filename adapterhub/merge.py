"""Pure math for merging and combining low-rank adapters, in delta-W space.

A low-rank unit on a Linear ``W [out, in]`` contributes ``delta_W = scale * B @ A`` (``A [r, in]``,
``B [out, r]``). Working on ``delta_W`` rather than on the factors lets adapters of different ranks (and with
different target modules: a module an adapter does not target has ``delta_W = 0``) be combined:

- :func:`linear_merge`: the weighted sum ``sum_i w_i * delta_i``;
- :func:`ties_merge`: TIES-Merging (Yadav et al., 2023): trim each task vector to its top-``density`` entries
  by magnitude, elect a sign per entry (sign of the weighted sum), average the entries that agree with it;
- :func:`dare_merge`: DARE (Yu et al., 2023): drop each entry with probability ``1 - density``, rescale the
  kept ones by ``1 / density``, then take the weighted sum (seeded through a ``torch.Generator``);
- :func:`truncated_svd`: re-factor a combined delta into LoRA factors of a given rank
  (``B' = U_r sqrt(S_r)``, ``A' = sqrt(S_r) V_r^T``), zero-padded when the rank exceeds ``min(out, in)``;
- :func:`lowrank_sum_factors`: the same re-factoring of a weighted sum of low-rank deltas, computed from the
  factors (QR + an SVD of an ``R x R`` core) without ever forming the ``out x in`` matrix;
- :func:`lowrank_svd` (the thin SVD behind it), :func:`energy_rank` and :func:`split_svd`: rank compression of
  one adapter's delta (keep the top singular directions, by count or by the share of ``sum s_i^2`` kept).

Nothing here touches a model; :mod:`adapterhub.inference` drives these functions.
"""
from __future__ import annotations

from typing import Sequence

import torch

COMBINE_METHODS = ("linear", "ties", "dare", "svd")


def compute_dtype(device: torch.device) -> torch.dtype:
    """float64 where it is cheap and supported (CPU), float32 elsewhere (GPU SVD in float64 is slow, MPS has none)."""
    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


def lowrank_delta(a: torch.Tensor, b: torch.Tensor, scale: float | torch.Tensor,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """``scale * B @ A`` (``A [r, in]``, ``B [out, r]``) computed in ``dtype`` (default: :func:`compute_dtype`)."""
    dtype = dtype or compute_dtype(a.device)
    s = scale.detach().to(dtype) if isinstance(scale, torch.Tensor) else float(scale)
    return (b.detach().to(dtype) @ a.detach().to(dtype)) * s


def _check(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> None:
    if len(deltas) == 0:
        raise ValueError("nothing to combine: no deltas given")
    if len(deltas) != len(weights):
        raise ValueError(f"{len(deltas)} deltas but {len(weights)} weights")
    shape = deltas[0].shape
    for d in deltas:
        if d.shape != shape:
            raise ValueError(f"deltas differ in shape: {tuple(shape)} vs {tuple(d.shape)}")


def _check_density(density: float) -> None:
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")


def linear_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``sum_i weights[i] * deltas[i]``."""
    _check(deltas, weights)
    out = torch.zeros_like(deltas[0])
    for d, w in zip(deltas, weights):
        out.add_(d, alpha=float(w))
    return out


def magnitude_prune(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density * numel)`` entries of largest magnitude, zero the rest (TIES' "trim" step)."""
    _check_density(density)
    k = int(float(density) * t.numel())
    if k >= t.numel():
        return t.clone()
    out = torch.zeros_like(t)
    if k == 0:
        return out
    flat = t.reshape(-1)
    idx = flat.abs().topk(k, largest=True, sorted=False).indices
    out.view(-1)[idx] = flat[idx]
    return out


def random_prune(t: torch.Tensor, density: float, generator: torch.Generator | None = None,
                 rescale: bool = True) -> torch.Tensor:
    """Keep each entry with probability ``density`` (the mask is drawn on the CPU from ``generator``, so the
    result is the same on every device), rescaled by ``1 / density`` (DARE's "drop and rescale")."""
    _check_density(density)
    if float(density) >= 1.0:
        return t.clone()
    keep = torch.rand(t.shape, generator=generator, dtype=torch.float64) < float(density)
    out = t * keep.to(device=t.device, dtype=t.dtype)
    return out / float(density) if rescale else out


def majority_sign(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per entry, the sign of the sum of the (weighted, trimmed) task vectors; ties go to ``+``."""
    total = torch.stack(list(deltas)).sum(0)
    return torch.where(total >= 0, torch.ones_like(total), -torch.ones_like(total))


def disjoint_mean(deltas: Sequence[torch.Tensor], sign: torch.Tensor) -> torch.Tensor:
    """Per entry, the mean over the task vectors whose (non-zero) entry agrees with ``sign``; 0 where none does."""
    stacked = torch.stack(list(deltas))
    agree = (torch.sign(stacked) == sign.unsqueeze(0)) & (stacked != 0)
    kept = (stacked * agree).sum(0)
    count = agree.sum(0).clamp_min(1)
    return kept / count


def ties_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES-Merging: trim (top-``density`` by magnitude per task vector), weight, elect sign, disjoint mean
    (the paper's algorithm; weighting as in peft's ``ties``)."""
    _check(deltas, weights)
    trimmed = [magnitude_prune(d, density) * float(w) for d, w in zip(deltas, weights)]
    return disjoint_mean(trimmed, majority_sign(trimmed))


def dare_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE: random drop with probability ``1 - density``, rescale by ``1 / density``, weighted sum."""
    _check(deltas, weights)
    return linear_merge([random_prune(d, density, generator) for d in deltas], weights)


def combine_deltas(deltas: Sequence[torch.Tensor], weights: Sequence[float], method: str = "linear",
                   density: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Combine full deltas with ``method`` (``"linear"`` and ``"svd"`` are the weighted sum; ``"svd"`` differs
    only in the rank it is re-factored to, which is the caller's choice)."""
    if method in ("linear", "svd"):
        return linear_merge(deltas, weights)
    if method == "ties":
        return ties_merge(deltas, weights, density)
    if method == "dare":
        return dare_merge(deltas, weights, density, generator)
    raise ValueError(f"unknown combination method {method!r}; known: {list(COMBINE_METHODS)}")


def _split_sqrt(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int, out_f: int, in_f: int):
    k = min(rank, s.shape[0])
    root = s[:k].clamp_min(0).sqrt()
    b = torch.zeros(out_f, rank, dtype=u.dtype, device=u.device)
    a = torch.zeros(rank, in_f, dtype=u.dtype, device=u.device)
    b[:, :k] = u[:, :k] * root.unsqueeze(0)
    a[:k] = root.unsqueeze(1) * vh[:k]
    return a, b


def truncated_svd(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors ``(A [rank, in], B [out, rank])`` with ``B @ A`` the best rank-``rank`` approximation of
    ``delta`` (exact when ``rank >= rank(delta)``); zero-padded beyond ``min(out, in)``."""
    if int(rank) < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    out_f, in_f = delta.shape
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return _split_sqrt(u, s, vh, int(rank), out_f, in_f)


def lowrank_svd(factors: Sequence[tuple[torch.Tensor, torch.Tensor]],
                weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``(U [out, k], s [k], V^T [k, in])`` of ``sum_i weights[i] * B_i @ A_i`` (scales already folded
    into ``B_i``), from the factors: ``[w_1 B_1 | ... ] = Q_b R_b``, ``[A_1; ...]^T = Q_a R_a``, SVD of the small
    core ``R_b R_a^T``; ``s`` descending, ``k <= sum_i r_i``."""
    if not factors:
        raise ValueError("nothing to combine: no factors given")
    b_cat = torch.cat([b * float(w) for (_, b), w in zip(factors, weights)], dim=1)   # [out, R]
    a_cat = torch.cat([a for a, _ in factors], dim=0)                                  # [R, in]
    qb, rb = torch.linalg.qr(b_cat)           # [out, R'], [R', R]
    qa, ra = torch.linalg.qr(a_cat.T)         # [in, R''], [R'', R]
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    return qb @ u, s, vh @ qa.T


def split_svd(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors ``(A [rank, in], B [out, rank])`` of the top ``rank`` singular directions (zero-padded
    beyond ``len(s)``): ``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_r^T``."""
    if int(rank) < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    return _split_sqrt(u, s, vh, int(rank), u.shape[0], vh.shape[1])


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """The smallest rank ``k >= 1`` whose singular values keep at least ``energy`` of ``sum s_i^2``."""
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    e = s.double().pow(2)
    total = float(e.sum())
    if total <= 0.0:
        return 1
    kept = torch.cumsum(e, 0) / total
    return max(1, min(int((kept < float(energy) - 1e-12).sum()) + 1, s.numel()))


def lowrank_sum_factors(factors: Sequence[tuple[torch.Tensor, torch.Tensor]], weights: Sequence[float],
                        rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`truncated_svd` of ``sum_i weights[i] * B_i @ A_i`` (scales already folded into ``B_i``), from the
    factors (see :func:`lowrank_svd`)."""
    if int(rank) < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    return split_svd(*lowrank_svd(factors, weights), int(rank))


__all__ = ["COMBINE_METHODS", "compute_dtype", "lowrank_delta", "linear_merge", "magnitude_prune", "random_prune",
           "majority_sign", "disjoint_mean", "ties_merge", "dare_merge", "combine_deltas", "truncated_svd",
           "lowrank_sum_factors", "lowrank_svd", "split_svd", "energy_rank"]
