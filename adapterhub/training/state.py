"""What a training group carries from step to step (and what a checkpoint saves): the step, and per task the
evaluations without improvement and its best validation score so far with that moment's adapter state (and the
shared adapter's, when the recipe has one)."""
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
    bad_evals: dict[str, int] = dataclasses.field(default_factory=dict)  # per task: evaluations without improvement
    best: dict[str, Best] = dataclasses.field(default_factory=dict)

    @classmethod
    def fresh(cls, names: list[str]) -> "FitState":
        return cls(bad_evals={t: 0 for t in names}, best={t: Best() for t in names})


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able scalar metrics (no text report)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "report"}
