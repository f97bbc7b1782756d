"""The adapted module: a frozen ``nn.Linear`` plus the units of every adapter that targets it, computed
through :mod:`adapterhub.routing`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import routing
from .methods import BOTTLENECK, LOWRANK, Method
from .methods.bottleneck import ACTIVATIONS


class AdaptedLinear(nn.Module):
    """Wraps a base Linear (kept untouched as ``base_layer``, as in peft). ``units[name]`` holds adapter
    ``name``'s parameters for this module; the route decides which unit each batch row uses."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.units = nn.ModuleDict()
        self._methods: dict[str, Method] = {}
        self._lowrank: list[str] = []     # names in insertion order, per unit kind
        self._bottleneck: list[str] = []
        self._stack_cache: dict = {}

    # expose the base's attributes that model code reads
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    # --- registry ----------------------------------------------------------------------------------
    def add(self, name: str, method: Method, unit: nn.Module) -> None:
        self.units[name] = unit
        self._methods[name] = method
        (self._lowrank if method.unit_kind == LOWRANK else self._bottleneck).append(name)
        self._stack_cache.clear()

    def remove(self, name: str) -> None:
        if name not in self._methods:
            return
        del self.units[name]
        kind = self._methods.pop(name).unit_kind
        (self._lowrank if kind == LOWRANK else self._bottleneck).remove(name)
        self._stack_cache.clear()

    def __len__(self) -> int:
        return len(self._methods)

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        route = routing.current_route()
        if route is None or not self._methods:
            return out
        if route.uniform is not None:
            return self._forward_one(route.uniform, x, out)
        n = len(route)
        if self._lowrank:
            slots = tuple(s for s in self._lowrank if s in route.name_set)
            if slots:
                xr = routing.as_rows(x, n)
                idx = route.index(slots, x.device)
                a, b, p = self._lowrank_stacks(slots)
                if self.training and p is not None:
                    xr = routing.rowwise_dropout(xr, p.index_select(0, idx))
                delta = routing.gathered_lowrank(xr.to(a.dtype), idx, a, b)
                out = out + delta.reshape(*out.shape).to(out.dtype)
        if self._bottleneck:
            slots = tuple(s for s in self._bottleneck if s in route.name_set)
            if slots:
                idx_all = route.index(slots, x.device)
                hr = routing.as_rows(out, n)
                delta = None
                for act_name, group in self._bottleneck_groups(slots).items():
                    dw, db, uw, ub = self._bottleneck_stacks(group)
                    # rows of other activation groups map to the zero slot of this group
                    idx = route.index(group, x.device) if group != slots else idx_all
                    d = routing.gathered_bottleneck(hr.to(dw.dtype), idx, dw, db, uw, ub, ACTIVATIONS[act_name])
                    delta = d if delta is None else delta + d
                out = out + delta.reshape(*out.shape).to(out.dtype)
        return out

    def _forward_one(self, name: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        unit = self.units[name] if name in self._methods else None
        if unit is None:
            return out
        method = self._methods[name]
        if method.unit_kind == LOWRANK:
            a, b, scale = method.lowrank_factors(unit)
            xin = F.dropout(x, unit.dropout, self.training) if unit.dropout else x
            return out + (F.linear(F.linear(xin.to(a.dtype), a), b) * scale).to(out.dtype)
        act = ACTIVATIONS[unit.non_linearity]
        h = out.to(unit.adapter_down.weight.dtype)
        return out + unit.adapter_up(act(unit.adapter_down(h))).to(out.dtype)

    # --- stacks (rebuilt under autograd; cached in inference until a parameter changes) ---------------
    def _versions(self, slots: tuple[str, ...]) -> tuple:
        return tuple(p._version for s in slots for p in self.units[s].parameters())

    def _cached(self, key, slots, build):
        if torch.is_grad_enabled():
            return build()
        versions = self._versions(slots)
        hit = self._stack_cache.get(key)
        if hit is not None and hit[0] == versions:
            return hit[1]
        val = build()
        self._stack_cache[key] = (versions, val)
        return val

    def _lowrank_stacks(self, slots: tuple[str, ...]):
        def build():
            a_list, b_list, p_list = [], [], []
            for s in slots:
                a, b, scale = self._methods[s].lowrank_factors(self.units[s])
                a_list.append(a)
                b_list.append(b * scale)
                p_list.append(float(self.units[s].dropout))
            p = torch.tensor(p_list + [0.0], device=a_list[0].device) if any(p_list) else None
            return routing.stack_padded(a_list, 0), routing.stack_padded(b_list, 1), p
        return self._cached(("lr", slots), slots, build)

    def _bottleneck_groups(self, slots: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        groups: dict[str, list[str]] = {}
        for s in slots:
            groups.setdefault(self.units[s].non_linearity, []).append(s)
        return {k: tuple(v) for k, v in groups.items()}

    def _bottleneck_stacks(self, slots: tuple[str, ...]):
        def build():
            units = [self.units[s] for s in slots]
            return (routing.stack_padded([u.adapter_down.weight for u in units], 0),
                    routing.stack_vectors([u.adapter_down.bias for u in units]),
                    routing.stack_padded([u.adapter_up.weight for u in units], 1),
                    torch.stack([u.adapter_up.bias for u in units] + [torch.zeros_like(units[0].adapter_up.bias)]))
        return self._cached(("bn", slots), slots, build)
