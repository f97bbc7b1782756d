"""Adapter banks: the inference layout of one unit kind on one module. Every resident adapter of that kind (and
stacking group) owns one row of pre-allocated stacked tensors (``rows[key][local]``, zero-padded to the largest
size, row 0 all zeros); a model-wide slot id maps to its row through ``local_of`` (0 = absent). Loading an adapter
copies its tensors into a free row; a forward gathers rows by slot, so nothing is stacked or validated per batch.

Writers (one at a time: the model's registry lock) only touch rows no running forward can reach (a row is freed
only when no forward holds its adapter), and replace the whole state object when they grow it; readers take
``bank.state`` once per call and need no lock."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from ..errors import AdapterHubError


@dataclasses.dataclass
class BankState:
    rows: dict[str, torch.Tensor]        # key -> [capacity + 1, *padded shape]; row 0 is all zeros
    local_of: torch.Tensor               # [n_slots + 1] long: slot -> row (0 = absent); the last entry stays 0
    static: dict[str, Any]               # non-tensor values shared by every row (e.g. an activation name)


class Bank:
    def __init__(self, kind, group: Any, like: Mapping[str, Any], capacity: int = 4):
        self.kind, self.group = kind, group
        self.side = tuple(getattr(kind, "bank_side_keys", ()))  # kept per slot, not stacked (not used to compute)
        tensors = {k: v for k, v in like.items() if torch.is_tensor(v) and k not in self.side}
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        self._pad = dict(getattr(kind, "bank_pad_dims", {}))
        rows = {k: torch.zeros((capacity + 1, *shapes[k]), dtype=v.dtype, device=v.device) for k, v in tensors.items()}
        device = next(iter(tensors.values())).device
        self.state = BankState(rows, torch.zeros(1, dtype=torch.long, device=device),
                               {k: v for k, v in like.items() if not torch.is_tensor(v)})
        self.free = list(range(capacity, 0, -1))
        # slot -> (row, unpadded shapes where smaller than the row (else None), side values)
        self.meta: dict[int, tuple[int, dict[str, tuple[int, ...]] | None, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self.meta)

    def nbytes(self) -> int:
        """Bytes of the stacked rows (allocated capacity included) and of the per-slot side tensors."""
        side = sum(t.numel() * t.element_size() for _l, _s, sd in self.meta.values() for t in sd.values()
                   if torch.is_tensor(t))
        return sum(t.numel() * t.element_size() for t in self.state.rows.values()) + side

    # --- writers (under the model's lock) ---------------------------------------------------------------
    def put(self, slot: int, row: Mapping[str, Any]) -> None:
        st = self.state
        if set(k for k, v in row.items() if torch.is_tensor(v) and k not in self.side) != set(st.rows):
            raise AdapterHubError(f"bank {self.kind.name}: row keys {sorted(row)} != {sorted(st.rows)}")
        self._fit(row)
        if not self.free:
            self._grow()
        st = self.state
        local = self.free.pop()
        sizes: dict[str, tuple[int, ...]] | None = None  # None: every tensor fills its row (the common case)
        for k, t in st.rows.items():
            v = row[k]
            shape = tuple(v.shape)
            dst = t[local]
            if shape != tuple(t.shape[1:]):
                sizes = sizes or {}
                sizes[k] = shape
                dst.zero_()
                dst = dst[tuple(slice(0, n) for n in shape)]
            dst.copy_(v.detach())
        if slot >= st.local_of.shape[0] - 1:
            self._grow_slots(slot)
        self.meta[slot] = (local, sizes, {k: row[k].detach().clone() if torch.is_tensor(row[k]) else row[k]
                                          for k in self.side})
        self.state.local_of[slot] = local

    def drop(self, slot: int) -> None:
        hit = self.meta.pop(slot, None)
        if hit is None:
            return
        local = hit[0]
        self.state.local_of[slot] = 0
        for t in self.state.rows.values():
            t[local].zero_()
        self.free.append(local)

    def _fit(self, row: Mapping[str, Any]) -> None:
        """Grow the padded dimensions when ``row`` is larger (a higher rank than every row so far)."""
        st = self.state
        grow = {}
        for k, t in st.rows.items():
            shape = tuple(row[k].shape)  # (side keys are not stacked)
            if len(shape) != t.dim() - 1:
                raise AdapterHubError(f"bank {self.kind.name}: tensor {k!r} has shape {shape}, rows have "
                                      f"{tuple(t.shape[1:])}")
            if any(a > b for a, b in zip(shape, t.shape[1:])):
                grow[k] = tuple(max(a, b) for a, b in zip(shape, t.shape[1:]))
        if grow:
            rows = {}
            for k, t in st.rows.items():
                new = torch.zeros((t.shape[0], *grow.get(k, tuple(t.shape[1:]))), dtype=t.dtype, device=t.device)
                new[(slice(None), *(slice(0, n) for n in t.shape[1:]))] = t
                rows[k] = new
            self.state = BankState(rows, st.local_of, st.static)

    def _grow(self) -> None:
        st = self.state
        cap = st.rows[next(iter(st.rows))].shape[0] - 1
        new_cap = max(4, cap * 2)
        rows = {}
        for k, t in st.rows.items():
            new = torch.empty((new_cap + 1, *t.shape[1:]), dtype=t.dtype, device=t.device)
            new[: cap + 1] = t  # rows above cap stay unwritten (untouched pages) until used
            rows[k] = new
        self.free.extend(range(new_cap, cap, -1))
        self.state = BankState(rows, st.local_of, st.static)

    def _grow_slots(self, slot: int) -> None:
        st = self.state
        n = max(2 * (st.local_of.shape[0] - 1), slot + 1, 8)
        local_of = torch.zeros(n + 1, dtype=torch.long, device=st.local_of.device)
        local_of[: st.local_of.shape[0] - 1] = st.local_of[:-1]
        self.state = BankState(st.rows, local_of, st.static)

    # --- readers ------------------------------------------------------------------------------------
    def row(self, slot: int) -> dict[str, Any] | None:
        """The unpadded tensors of ``slot``'s row (views), or None when it has none."""
        hit = self.meta.get(slot)
        if hit is None:
            return None
        local, sizes, side = hit
        out: dict[str, Any] = {**self.state.static, **side}
        for k, t in self.state.rows.items():
            shape = (sizes or {}).get(k)
            out[k] = t[local] if shape is None else t[local][tuple(slice(0, n) for n in shape)]
        return out

    @staticmethod
    def local_index(state: BankState, slots: torch.Tensor) -> torch.Tensor:
        """Rows of the batch's global slot ids (slots this bank does not hold map to the zero row)."""
        return state.local_of.index_select(0, slots.clamp(max=state.local_of.shape[0] - 1))
