"""The low-rank unit kind, shared by LoRA and AdaLoRA: a delta on the module's input, ``scale * B (A x)``, where
the method gives ``(A, B, scale)`` of a unit (:meth:`~adapterhub.methods.Method.lowrank_factors`). Per-unit input
dropout (``unit.dropout``) applies in training.

Banked rows (:func:`lowrank_row`): ``a`` = A ``[r, in]``, ``bt`` = B^T ``[r, out]``, ``e`` the per-rank factors
(AdaLoRA's singular values; ones for LoRA), ``s`` the scale, ``es`` = e * s (what a forward uses; ``e`` and ``s``
keep the files exact). Banks group rows by rank bucket (powers of two) so one rank-64 adapter does not make every
rank-8 row pay for 64."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..routing import UnitKind
from ..routing.kinds import Entry
from ..routing.stacks import (as_rows, concat_lowrank, gathered_lowrank, rowwise_dropout, side_by_side,
                              stack_padded)


class LowRankKind(UnitKind):
    name = "lowrank"
    bank_side_keys = ("e", "s")  # kept per slot for exact files; forwards use "es"

    def apply_one(self, method, unit, base, x, base_out, out, training):
        a, b, scale = method.lowrank_factors(unit)
        xin = F.dropout(x, unit.dropout, training) if unit.dropout else x
        z = F.linear(xin.to(a.dtype), a)
        if out.dtype == b.dtype:  # out + scale * z @ B^T in one GEMM (no scaled temporary, no separate add)
            o2 = out.reshape(-1, out.shape[-1])
            return torch.addmm(o2, z.reshape(o2.shape[0], -1), b.t(), alpha=scale).view(out.shape)
        return out + (F.linear(z, b) * scale).to(out.dtype)

    def build_stack(self, entries: Sequence[Entry]):
        """``(A [K+1, r_max, in], B^T [K+1, r_max, out] with the scale folded in, per-slot dropout or None)``.
        B is stacked transposed so the per-row gather is contiguous in ``out`` (2x faster second bmm at T=1)."""
        a_list, bt_list, p_list = [], [], []
        for _name, method, unit in entries:
            a, b, scale = method.lowrank_factors(unit)
            a_list.append(a)
            bt_list.append((b * scale).t())
            p_list.append(float(unit.dropout))
        p = torch.tensor(p_list + [0.0], device=a_list[0].device) if any(p_list) else None
        return stack_padded(a_list, 0), stack_padded(bt_list, 0), p

    def apply_rows(self, stack, base, x, base_out, out, idx, n_rows, training):
        a, bt, p = stack
        xr = as_rows(x, n_rows)
        if training and p is not None:
            xr = rowwise_dropout(xr, p.index_select(0, idx))
        rows = concat_lowrank if side_by_side(a) else gathered_lowrank
        if out.dtype == a.dtype:  # the add is fused into the second product
            return rows(xr, idx, a, bt, as_rows(out, n_rows)).reshape(out.shape)
        delta = rows(xr.to(a.dtype), idx, a, bt)
        return out + delta.reshape(*out.shape).to(out.dtype)


    # --- banks ------------------------------------------------------------------------------------------
    def bank_group(self, row):
        r = int(row["a"].shape[0])
        return 1 << max(0, (r - 1).bit_length())

    def apply_bank_row(self, row, base, x, base_out, out):
        a, bt, es = row["a"], row["bt"], row["es"]
        z = F.linear(x.to(a.dtype), a) * es
        if out.dtype == bt.dtype:
            o2 = out.reshape(-1, out.shape[-1])
            return torch.addmm(o2, z.reshape(o2.shape[0], -1), bt).view(out.shape)
        return out + (z @ bt).to(out.dtype)

    def apply_bank_rows(self, state, base, x, base_out, out, idx, n_rows):
        rows = state.rows
        a, bt = rows["a"].index_select(0, idx), rows["bt"].index_select(0, idx)
        xr = as_rows(x, n_rows).to(a.dtype)
        z = torch.bmm(xr, a.transpose(1, 2)) * rows["es"].index_select(0, idx).unsqueeze(1)
        if out.dtype == a.dtype:
            return torch.baddbmm(as_rows(out, n_rows), z, bt).reshape(out.shape)
        return out + torch.bmm(z, bt).reshape(*out.shape).to(out.dtype)


LOWRANK = LowRankKind()


def lowrank_row(a: torch.Tensor, b: torch.Tensor, e: torch.Tensor | None, scale: float) -> dict:
    """A banked row from factors ``A [r, in]``, ``B [out, r]``, per-rank ``e`` (None: LoRA, all ones) and the
    scale. ``e`` and ``s`` are side values (kept per slot so the files come back exact); ``es`` is stacked."""
    a, b, s = a.detach(), b.detach(), float(scale)
    if e is None:
        return {"a": a, "bt": b.t(), "e": None, "s": s, "es": torch.full((a.shape[0],), s, dtype=a.dtype, device=a.device)}
    e = e.detach().reshape(-1).to(a.dtype)
    return {"a": a, "bt": b.t(), "e": e, "s": s, "es": e * s}
