"""Linear-like base modules: the layers adapters attach to. ``nn.Linear`` (weight ``[out, in]``) and GPT-2-style
``Conv1D`` (weight ``[in, out]``, ``y = x W + b``; also the fused qkv projection ``c_attn``). One place knows
their layouts: the rest of the library sees every such module through :func:`linear_view`, a Linear-shaped view
(``in_features``, ``out_features``, ``weight`` as ``[out, in]``, ``bias``)."""
from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

LINEAR_LIKE: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)


def is_linear_like(module: object) -> bool:
    return isinstance(module, LINEAR_LIKE)


class LinearView:
    """A ``Conv1D`` seen as a Linear: ``weight`` is the transposed view ``[out, in]`` of its parameter (writes go
    through), ``module`` the layer itself."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight.t()

    @property
    def bias(self):
        return self.module.bias

    @property
    def in_features(self) -> int:
        return int(self.module.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.module.weight.shape[1])


def linear_view(module: nn.Module):
    """``module`` itself for an ``nn.Linear``, a :class:`LinearView` for a ``Conv1D``."""
    return LinearView(module) if isinstance(module, Conv1D) else module


def stored_weight(module: nn.Module, weight_out_in: torch.Tensor) -> torch.Tensor:
    """A ``[out, in]`` weight in ``module``'s own layout (transposed for a ``Conv1D``)."""
    return weight_out_in.t().contiguous() if isinstance(module, Conv1D) else weight_out_in
