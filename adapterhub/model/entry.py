"""What the model knows of each loaded adapter, and what one routed forward returns."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..methods import Method, MethodConfig


@dataclasses.dataclass
class AdapterEntry:
    """The registry's record of one adapter: its method and config, task, the base modules it targets, and the
    metrics / card extras it was loaded with (``source``: where it came from). ``key`` is the unique instance key
    its units are held under in the modules (set when it is attached); ``head`` its task head; ``slot`` its bank
    slot when it is held in banks for inference (``banked``), else 0 (trainable units)."""

    name: str
    config: MethodConfig
    method: Method
    task: str
    targets: list[str]
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # card extras (e.g. datasets)
    key: str = ""
    head: Any = dataclasses.field(default=None, repr=False)
    slot: int = 0  # its bank slot when held in banks (the inference layout); 0: trainable units


    @property
    def banked(self) -> bool:
        return self.slot != 0


@dataclasses.dataclass
class RoutedOutput:
    """Output of one routed forward: shared hidden states, and per adapter the rows it served and the
    logits of its head on those rows (plus its loss when labels were given)."""

    hidden_states: torch.Tensor
    rows: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    losses: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    entries: dict[str, AdapterEntry] = dataclasses.field(default_factory=dict, repr=False)  # what this forward used

    def gather(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-adapter tensors (``values[name]`` has one entry per row of ``rows[name]``, all with the same trailing
        shape) back in batch row order: one concatenation and one inverse-index gather."""
        names = list(self.rows)
        order = torch.cat([self.rows[n] for n in names])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return torch.cat([values[n] for n in names]).index_select(0, inverse.to(values[names[0]].device))

    def row_logits(self, i: int) -> torch.Tensor:
        """The logits of batch row ``i`` (for inspection and tests; batch code uses :meth:`gather`)."""
        for name, rows in self.rows.items():
            hit = (rows == i).nonzero()
            if hit.numel():
                return self.logits[name][int(hit[0, 0])]
        raise IndexError(i)
