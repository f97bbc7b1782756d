"""What a training group carries from step to step (and what a checkpoint saves): the step, the evaluations without
improvement, and per task its best validation score so far with that moment's adapter state."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch


@dataclasses.dataclass
class Best:
    score: float = -math.inf                    # the signed primary metric (larger is better)
    step: int = 0
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None  # a snapshot of ``model.adapter_state(task)``


@dataclasses.dataclass
class FitState:
    step: int = 0
    bad_evals: int = 0
    best: dict[str, Best] = dataclasses.field(default_factory=dict)

    @classmethod
    def fresh(cls, names: list[str]) -> "FitState":
        return cls(best={t: Best() for t in names})


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able scalar metrics (no text report)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "report"}
