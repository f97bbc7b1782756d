"""Pure math on stacked per-adapter tensors: stack (zero-padded, plus an all-zero slot), gather one slice per row,
and compute every row with batched matmuls. Unit kinds (:class:`~adapterhub.routing.kinds.UnitKind`) build on these;
the cost does not grow with the number of distinct adapters in a batch."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import AdapterHubError


def as_rows(x: torch.Tensor, n_rows: int) -> torch.Tensor:
    """View ``x`` as ``[n_rows, tokens, features]``. Accepts ``[N, ..., F]`` or a flattened ``[N*T, F]``."""
    if x.shape[0] == n_rows:
        return x.reshape(n_rows, -1, x.shape[-1])
    if x.dim() == 2 and x.shape[0] % n_rows == 0:
        return x.reshape(n_rows, -1, x.shape[-1])
    raise AdapterHubError(f"routing: input with leading dim {x.shape[0]} does not match the route's {n_rows} rows")


def stack_padded(mats: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """Stack 2-D matrices that differ in size along ``dim`` (0 or 1), zero-padding to the largest, plus a
    trailing all-zero slot."""
    size = max(m.shape[dim] for m in mats)
    padded = []
    for m in mats:
        gap = size - m.shape[dim]
        if gap:
            m = F.pad(m, (0, gap) if dim == 1 else (0, 0, 0, gap))
        padded.append(m)
    padded.append(torch.zeros_like(padded[0]))
    return torch.stack(padded)


def stack_vectors(vecs: Sequence[torch.Tensor]) -> torch.Tensor:
    size = max(v.shape[0] for v in vecs)
    out = [F.pad(v, (0, size - v.shape[0])) for v in vecs]
    out.append(torch.zeros_like(out[0]))
    return torch.stack(out)


def gathered_lowrank(x: torch.Tensor, idx: torch.Tensor, a_stack: torch.Tensor, bt_stack: torch.Tensor,
                     add_to: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row ``x_i @ A[idx_i].T @ B[idx_i].T``; ``x`` is ``[N, T, in]``, ``A`` ``[K, r, in]``, and B is
    given *transposed*, ``B^T`` ``[K, r, out]`` (scale already folded in; contiguous in ``out``, which makes
    the second bmm ~2x faster than a transposed view at T=1). Returns ``[N, T, out]``, plus ``add_to``
    (``[N, T, out]``, same dtype) when given, fused into the second product."""
    a = a_stack.index_select(0, idx)
    bt = bt_stack.index_select(0, idx)
    z = torch.bmm(x, a.transpose(1, 2))
    return torch.bmm(z, bt) if add_to is None else torch.baddbmm(add_to, z, bt)


#: under autograd, factors side by side up to this many columns (adapters x rank) are computed for every row and
#: masked (two dense GEMMs, see :func:`concat_lowrank`); wider stacks, and every inference forward (whose results
#: stay bit-identical to the banks'), are gathered per row, whose cost does not grow with the number of adapters
CONCAT_MAX_COLUMNS = 64


def side_by_side(stack: torch.Tensor) -> bool:
    """Whether a stack (``[K+1, width, ...]``, the zero slot last) is applied by the side-by-side GEMMs."""
    return torch.is_grad_enabled() and (stack.shape[0] - 1) * stack.shape[1] <= CONCAT_MAX_COLUMNS


def row_mask(idx: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """``[N, k]``: 1 where row ``i`` uses slot ``j`` (``idx[i] == j``); the zero slot ``k`` gives an all-zero row."""
    return (idx.unsqueeze(1) == torch.arange(k, device=idx.device)).to(dtype)


def concat_lowrank(x: torch.Tensor, idx: torch.Tensor, a_stack: torch.Tensor, bt_stack: torch.Tensor,
                   add_to: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`gathered_lowrank` for few, narrow adapters: ``x`` ``[N, T, in]`` times every adapter's ``A`` side by
    side (one GEMM, ``K*r`` columns), each row's columns of other adapters zeroed, times every ``B^T`` stacked (one
    GEMM, the add fused). Exact; no per-row weight copies, and under autograd the backward is two dense GEMMs
    instead of batched small ones and an index-add (a mixed 16x64 MiniLM micro-batch: 4-8% faster)."""
    k, r, fin = a_stack.shape[0] - 1, a_stack.shape[1], a_stack.shape[2]
    n, t = x.shape[0], x.shape[1]
    z = torch.mm(x.reshape(n * t, fin), a_stack[:k].reshape(k * r, fin).t()).view(n, t, k, r)
    z = (z * row_mask(idx, k, z.dtype).view(n, 1, k, 1)).view(n * t, k * r)
    bt = bt_stack[:k].reshape(k * r, -1)
    if add_to is None:
        return torch.mm(z, bt).view(n, t, -1)
    return torch.addmm(add_to.reshape(n * t, -1), z, bt).view(n, t, -1)


def concat_mlp(h: torch.Tensor, idx: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor, up_w: torch.Tensor,
               up_b: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """:func:`gathered_mlp` by the same side-by-side GEMMs as :func:`concat_lowrank` (down projections side by side,
    each row's other adapters' activations zeroed, up projections stacked; per-row up bias)."""
    k, d, fin = down_w.shape[0] - 1, down_w.shape[1], down_w.shape[2]
    n, t = h.shape[0], h.shape[1]
    z = act(torch.addmm(down_b[:k].reshape(k * d), h.reshape(n * t, fin), down_w[:k].reshape(k * d, fin).t()))
    z = (z.view(n, t, k, d) * row_mask(idx, k, z.dtype).view(n, 1, k, 1)).view(n * t, k * d)
    up = up_w[:k].transpose(0, 1).reshape(up_w.shape[1], k * d)  # [out, K*d]: the up projections side by side
    return (torch.mm(z, up.t()).view(n, t, -1) + up_b.index_select(0, idx).unsqueeze(1))


def gathered_mlp(h: torch.Tensor, idx: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor,
                 up_w: torch.Tensor, up_b: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-row ``up(act(down(h)))`` with stacked two-layer weights (``act(0) == 0``, so the zero slot gives zero)."""
    z = torch.baddbmm(down_b.index_select(0, idx).unsqueeze(1), h, down_w.index_select(0, idx).transpose(1, 2))
    return torch.baddbmm(up_b.index_select(0, idx).unsqueeze(1), act(z), up_w.index_select(0, idx).transpose(1, 2))


def rowwise_dropout(x: torch.Tensor, p_rows: torch.Tensor) -> torch.Tensor:
    """Inverted dropout with a per-row probability (``x`` is ``[N, T, F]``, ``p_rows`` is ``[N]``)."""
    keep = (1.0 - p_rows).clamp_min(1e-6).view(-1, 1, 1).to(x.dtype)
    mask = torch.rand_like(x) < keep
    return x * mask / keep
