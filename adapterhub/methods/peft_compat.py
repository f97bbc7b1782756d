"""Helpers for methods whose files are peft's own formats: peft's per-architecture default targets and
JSON-ready peft config dicts."""
from __future__ import annotations

from typing import Any

from torch import nn


def default_lora_targets(base: nn.Module) -> list[str] | str:
    """peft's default LoRA targets for the base's ``model_type`` (e.g. query/value for BERT), else all linears."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

    model_type = getattr(getattr(base, "config", None), "model_type", None)
    return list(MAP.get(model_type, [])) or "all-linear"


def default_ia3_modules(base: nn.Module) -> tuple[list[str] | None, list[str] | None]:
    """peft's default IA3 ``(target_modules, feedforward_modules)`` for the base's ``model_type`` (None: unknown)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    model_type = getattr(getattr(base, "config", None), "model_type", None)
    targets, ff = TARGETS.get(model_type), FF.get(model_type)
    return (list(targets) if targets is not None else None), (list(ff) if ff is not None else None)


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """A peft config's ``to_dict()`` with sets sorted and enums as their values."""
    out = {}
    for k, v in d.items():
        if isinstance(v, set):
            v = sorted(v)
        elif hasattr(v, "value") and not isinstance(v, (int, float, str, bool)):
            v = v.value  # enums
        out[k] = v
    return out
