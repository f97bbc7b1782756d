"""What the routed layer needs from a unit kind: how the units of one shape of adapter are applied to a module's
rows. Methods (``adapterhub.methods``) define the kinds; this layer never names one.

A *unit* is an adapter's ``nn.Module`` on one targeted base module; its *method* is the plug-in object that made it.
For a batch, :class:`~adapterhub.routing.layer.AdaptedLinear` calls

- :meth:`UnitKind.apply_one` when every row uses the same adapter (no gather), and otherwise
- :meth:`UnitKind.build_stack` once per set of adapters (cached while no parameter changes, rebuilt under autograd)
  and :meth:`UnitKind.apply_rows` with the row -> slot index (slot ``len(names)`` is the all-zero slot: rows whose
  adapter does not touch this module, or belongs to another kind).

Every kind gets the wrapped base module ``base`` (for kinds whose delta re-applies its weight, e.g. IA3's input
scaling ``W (x * l) = base_out + W (x * (l - 1))``), the module input ``x`` and the base output ``base_out``, and
returns ``out`` plus its rows' deltas. A row uses one adapter, so at most one kind changes it.

Input-level kinds (``level = INPUTS``, e.g. prefix tuning) act on the backbone's call instead: their units sit in
the model's :class:`~adapterhub.routing.inputs.RoutedInputs` site, which gathers per row (:meth:`UnitKind.gather_rows`
from stacked units, :meth:`UnitKind.gather_bank_rows` from banks; rows of other adapters get the zero contribution)
and hands the gathered parts to :meth:`UnitKind.apply_inputs`, which rewrites the call's keyword arguments.

Adapters held for inference live in banks (:mod:`adapterhub.routing.bank`), one *row* (a dict of tensors, plus
non-tensor values shared by its group) per adapter: the method makes rows (``Method.unit_row`` / ``file_row``)
and :meth:`UnitKind.apply_bank_row` / :meth:`UnitKind.apply_bank_rows` apply them alone or gathered per batch row.
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch
from torch import nn

#: (adapter name, its method plug-in, its unit on this module)
Entry = tuple[str, Any, nn.Module]

MODULE = "module"  # a kind applied to a targeted module's output (by AdaptedLinear)
INPUTS = "inputs"  # a kind applied to the backbone call's inputs (by RoutedInputs)


class UnitKind:
    """Base of unit kinds. One stateless instance per kind, shared by the methods that produce such units."""

    name: str = ""
    level: str = MODULE
    #: in a batch mixing adapters of several kinds, compute only the rows of this kind's adapters (gathered, then
    #: put back) instead of every row through the zero slot: for kinds whose per-row cost is a base layer's (IA3's
    #: input scaling re-applies W); the copies cost more than a low-rank or element-wise delta on zero rows
    own_rows_only: bool = False

    def apply_one(self, method: Any, unit: nn.Module, base: nn.Module, x: torch.Tensor, base_out: torch.Tensor,
                  out: torch.Tensor, training: bool) -> torch.Tensor:
        """``out`` plus the unit's delta on every row."""
        raise NotImplementedError

    def group_key(self, method: Any, unit: nn.Module) -> Hashable:
        """Units with different keys are stacked separately (e.g. different activations). Default: one stack."""
        return None

    def build_stack(self, entries: Sequence[Entry]) -> Any:
        """Stacked tensors of these units (plus the zero slot), in ``entries`` order."""
        raise NotImplementedError

    def apply_rows(self, stack: Any, base: nn.Module, x: torch.Tensor, base_out: torch.Tensor, out: torch.Tensor,
                   idx: torch.Tensor, n_rows: int, training: bool) -> torch.Tensor:
        """``out`` plus, for row ``i``, the delta of the unit in slot ``idx[i]`` (zero for the zero slot)."""
        raise NotImplementedError

    # --- banks (inference layout) ---------------------------------------------------------------------
    def bank_group(self, row: dict) -> Hashable:
        """Rows with different groups go to different banks (e.g. activations, rank buckets). Default: one."""
        return None

    def apply_bank_row(self, row: dict, base: nn.Module, x: torch.Tensor, base_out: torch.Tensor,
                       out: torch.Tensor) -> torch.Tensor:
        """``out`` plus one banked adapter's delta on every row (``row``: its unpadded tensors)."""
        raise NotImplementedError

    def apply_bank_rows(self, state, base: nn.Module, x: torch.Tensor, base_out: torch.Tensor, out: torch.Tensor,
                        idx: torch.Tensor, n_rows: int) -> torch.Tensor:
        """``out`` plus, for batch row ``i``, the delta of bank row ``idx[i]`` (``state.rows``: the stacked
        tensors; row 0 is all zeros)."""
        raise NotImplementedError

    # --- input-level kinds (``level = INPUTS``) ------------------------------------------------------------
    def gather_rows(self, stack: Any, idx: torch.Tensor, n_rows: int, training: bool) -> Any:
        """Per batch row, the contribution of the unit in slot ``idx[i]`` of ``stack`` (zero for the zero slot)."""
        raise NotImplementedError

    def gather_bank_rows(self, state, idx: torch.Tensor, n_rows: int) -> Any:
        """Per batch row, the contribution of bank row ``idx[i]`` (row 0: zero)."""
        raise NotImplementedError

    def apply_inputs(self, parts: list, call) -> None:
        """Rewrite ``call.kwargs`` (a :class:`~adapterhub.routing.inputs.BackboneCall`) with the gathered ``parts``
        (one per stack or bank; each row is non-zero in at most one part)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<unit kind {self.name}>"
