"""THE routing mechanism: per-row adapter selection, in training (autograd) and in inference.

A forward over the base runs inside ``routed(names)``, where ``names[i]`` is the adapter of batch row ``i``.
Every adapted module (:class:`adapterhub.layers.AdaptedLinear`) reads the current :class:`Route` and
- if all rows use one adapter, applies that adapter's unit directly (no gather);
- otherwise stacks the factors of the adapters present in the batch (padded to the largest rank, plus a
  zero slot for rows whose adapter does not touch this module), gathers one slice per row and computes all
  rows with two batched matmuls. The cost does not grow with the number of distinct adapters in the batch.

Joint training, mixed-batch inference, generation and serving all go through this one path. The route lives in
a ``ContextVar``, so threads serving different requests do not see each other's routes.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

_ROUTE: ContextVar["Route | None"] = ContextVar("adapterhub_route", default=None)


class Route:
    """Per-row adapter names of one forward, with per-module index tensors cached for the forward's life."""

    __slots__ = ("names", "name_set", "uniform", "_index_cache")

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.name_set = frozenset(self.names)
        self.uniform = self.names[0] if len(self.name_set) == 1 else None
        self._index_cache: dict = {}

    def __len__(self) -> int:
        return len(self.names)

    def index(self, slots: tuple[str, ...], device: torch.device) -> torch.Tensor:
        """Row -> slot index into ``slots`` (``len(slots)`` = the zero slot for rows not in ``slots``)."""
        key = (slots, device)
        idx = self._index_cache.get(key)
        if idx is None:
            pos = {n: i for i, n in enumerate(slots)}
            pad = len(slots)
            idx = torch.tensor([pos.get(n, pad) for n in self.names], dtype=torch.long, device=device)
            self._index_cache[key] = idx
        return idx

    def select(self, candidates: tuple[str, ...], device: torch.device) -> tuple[tuple[str, ...], torch.Tensor | None]:
        """The names of ``candidates`` (a module's adapters, in order) that this route uses, and the row -> slot
        index into them; ``((), None)`` when none is used. Cached per (candidates, device) for the route's life:
        the modules of one model mostly hold the same adapters, so one lookup serves every layer."""
        key = ("select", candidates, device)
        hit = self._index_cache.get(key)
        if hit is None:
            name_set = self.name_set
            slots = tuple(s for s in candidates if s in name_set)
            hit = (slots, self.index(slots, device) if slots else None)
            self._index_cache[key] = hit
        return hit

    def repeat_interleave(self, k: int) -> "Route":
        """Route for a batch whose rows were each repeated ``k`` times (beam search, num_return_sequences)."""
        return Route([n for n in self.names for _ in range(k)])


def current_route() -> Route | None:
    return _ROUTE.get()


@contextlib.contextmanager
def routed(names: Sequence[str] | Route) -> Iterator[Route]:
    """Run the enclosed forward(s) with one adapter name per batch row."""
    route = names if isinstance(names, Route) else Route(names)
    token = _ROUTE.set(route)
    try:
        yield route
    finally:
        _ROUTE.reset(token)


# ---------------------------------------------------------------------------------------------------------
# pure math on stacked factors
# ---------------------------------------------------------------------------------------------------------

def as_rows(x: torch.Tensor, n_rows: int) -> torch.Tensor:
    """View ``x`` as ``[n_rows, tokens, features]``. Accepts ``[N, ..., F]`` or a flattened ``[N*T, F]``."""
    if x.shape[0] == n_rows:
        return x.reshape(n_rows, -1, x.shape[-1])
    if x.dim() == 2 and x.shape[0] % n_rows == 0:
        return x.reshape(n_rows, -1, x.shape[-1])
    raise ValueError(f"routing: input with leading dim {x.shape[0]} does not match the route's {n_rows} rows")


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


def gathered_bottleneck(h: torch.Tensor, idx: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor,
                        up_w: torch.Tensor, up_b: torch.Tensor, act) -> torch.Tensor:
    """Per-row ``up(act(down(h)))`` with stacked bottleneck weights; zero slot gives zero."""
    z = torch.baddbmm(down_b.index_select(0, idx).unsqueeze(1), h, down_w.index_select(0, idx).transpose(1, 2))
    return torch.baddbmm(up_b.index_select(0, idx).unsqueeze(1), act(z), up_w.index_select(0, idx).transpose(1, 2))


def rowwise_dropout(x: torch.Tensor, p_rows: torch.Tensor) -> torch.Tensor:
    """Inverted dropout with a per-row probability (``x`` is ``[N, T, F]``, ``p_rows`` is ``[N]``)."""
    keep = (1.0 - p_rows).clamp_min(1e-6).view(-1, 1, 1).to(x.dtype)
    mask = torch.rand_like(x) < keep
    return x * mask / keep
