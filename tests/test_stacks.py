"""The per-row math of mixed batches (``routing/stacks.py``): the side-by-side GEMMs used under autograd equal the
per-row gather, in values and in gradients, with unequal ranks (zero-padded) and rows of the zero slot."""
from __future__ import annotations

import torch

from adapterhub.routing.stacks import (CONCAT_MAX_COLUMNS, concat_lowrank, concat_mlp, gathered_lowrank, gathered_mlp,
                                       side_by_side, stack_padded, stack_vectors)


def _grads(fn, tensors):
    for t in tensors:
        t.grad = None
    out = fn()
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out.detach(), [t.grad.clone() for t in tensors]


def test_side_by_side_lowrank_equals_the_per_row_gather_in_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 8, dtype=torch.float64, generator=g, requires_grad=True)
    add = torch.randn(5, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    a = [torch.randn(r, 8, dtype=torch.float64, generator=g, requires_grad=True) for r in (2, 4, 3)]
    b = [torch.randn(6, r, dtype=torch.float64, generator=g, requires_grad=True) for r in (2, 4, 3)]
    idx = torch.tensor([2, 0, 3, 1, 0])  # slot 3: the zero slot (a row whose adapter is not here)

    def run(rows):
        return rows(x, idx, stack_padded(a, 0), stack_padded([m.t() for m in b], 0), add)

    want, want_g = _grads(lambda: run(gathered_lowrank), [x, add, *a, *b])
    got, got_g = _grads(lambda: run(concat_lowrank), [x, add, *a, *b])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    for g1, g2 in zip(got_g, want_g):
        torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)
    torch.testing.assert_close(concat_lowrank(x, idx, stack_padded(a, 0), stack_padded([m.t() for m in b], 0)),
                               gathered_lowrank(x, idx, stack_padded(a, 0), stack_padded([m.t() for m in b], 0)))


def test_side_by_side_mlp_equals_the_per_row_gather_in_values_and_gradients():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 3, 8, dtype=torch.float64, generator=g, requires_grad=True)
    dw = [torch.randn(d, 8, dtype=torch.float64, generator=g, requires_grad=True) for d in (2, 3)]
    db = [torch.randn(d, dtype=torch.float64, generator=g, requires_grad=True) for d in (2, 3)]
    uw = [torch.randn(8, d, dtype=torch.float64, generator=g, requires_grad=True) for d in (2, 3)]
    ub = [torch.randn(8, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(2)]
    idx = torch.tensor([1, 2, 0, 1])

    def run(rows):
        ubs = torch.stack([*ub, torch.zeros_like(ub[0])])
        return rows(h, idx, stack_padded(dw, 0), stack_vectors(db), stack_padded(uw, 1), ubs, torch.nn.functional.gelu)

    want, want_g = _grads(lambda: run(gathered_mlp), [h, *dw, *db, *uw, *ub])
    got, got_g = _grads(lambda: run(concat_mlp), [h, *dw, *db, *uw, *ub])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    for g1, g2 in zip(got_g, want_g):
        torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)


def test_side_by_side_only_under_autograd_and_for_narrow_stacks():
    narrow = torch.zeros(3, 4, 8)                       # 2 adapters x rank 4 (+ the zero slot)
    wide = torch.zeros(CONCAT_MAX_COLUMNS // 4 + 2, 4, 8)
    assert side_by_side(narrow) and not side_by_side(wide)
    with torch.no_grad():  # inference stays on the gather (bit-identical to the banks)
        assert not side_by_side(narrow)
