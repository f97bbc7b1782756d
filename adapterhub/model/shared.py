"""Shared adapters: one adapter trained on the rows of every task, beneath each task's own. Its units sit on the base
like any adapter's, under their own instance key, but it has no head and no registry entry: a forward applies it to
every row (``model.forward(..., shared=[shared.key])``, the route's ``shared`` keys), in addition to each row's own
adapter.

:func:`fold_shared` makes a task's adapter self-contained: the shared adapter and the task's own are concatenated
into ONE adapter of the shared adapter's method (a factor-holding method), exactly: per module
``A = [A_shared; A_task]``, ``B = [s_shared B_shared, s_task B_task]`` at scale 1, so its delta is the sum of both
deltas, and it saves and loads like any adapter of that method (plain peft included)."""
from __future__ import annotations

import dataclasses
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdapterHubError
from ..methods import Method, MethodConfig, method_for
from ..names import validate_name
from .entry import AdapterEntry
from .units import attach_units, build_units, detach, units_of

SHARED_KEY = "{name}#shared"  # unit keys of trainable adapters are ``name#<int>``: no clash


@dataclasses.dataclass
class SharedAdapter:
    name: str
    config: MethodConfig
    method: Method
    targets: list[str]
    key: str


def add_shared(model, name: str, config: MethodConfig) -> SharedAdapter:
    """Create shared adapter ``name`` (trainable units on its targets; nothing routes it until a forward names its
    key in ``shared``)."""
    validate_name(name)
    method = method_for(config)
    config.validate()
    if not (method.linear and method.accepts_factors):
        raise AdapterHubError(f"shared adapter {name!r}: {method.name} adapters cannot be folded into a task's "
                              "adapter (a shared adapter needs a method whose adapters hold low-rank factors)")
    targets = method.resolve_targets(config, model.base)
    units = build_units(model.module_map, method, config, targets)
    key = SHARED_KEY.format(name=name)
    attach_units(model.module_map, key, method, units, model.training)
    return SharedAdapter(name, config, method, targets, key)


def shared_units(model, shared: SharedAdapter) -> dict[str, nn.Module]:
    return units_of(model.module_map, shared.key, shared.targets)


def shared_parameters(model, shared: SharedAdapter) -> list[nn.Parameter]:
    return [p for u in shared_units(model, shared).values() for p in u.parameters()]


def shared_state(model, shared: SharedAdapter) -> dict[str, torch.Tensor]:
    """The live tensors of the shared adapter by a stable key (``unit.<module>.<tensor>``)."""
    return {f"unit.{path}.{k}": v for path, unit in shared_units(model, shared).items()
            for k, v in unit.state_dict().items()}


def load_shared_state(model, shared: SharedAdapter, values: Mapping[str, torch.Tensor]) -> None:
    live = shared_state(model, shared)
    missing, extra = sorted(set(live) - set(values)), sorted(set(values) - set(live))
    if missing or extra:
        raise AdapterHubError(f"shared adapter {shared.name!r}: state has missing keys {missing[:3]} and unexpected "
                              f"keys {extra[:3]}")
    with torch.no_grad():
        for k, v in live.items():
            if tuple(values[k].shape) != tuple(v.shape):
                raise AdapterHubError(f"shared adapter {shared.name!r}: state tensor {k} has shape "
                                      f"{tuple(values[k].shape)}, the adapter has {tuple(v.shape)}")
            v.copy_(values[k])


def remove_shared(model, shared: SharedAdapter) -> None:
    """Take the shared adapter's units off the base (modules left with no adapter are unwrapped)."""
    detach(model.module_map, shared.key, shared.targets)


def folded_factors(model, name: str, shared: SharedAdapter) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module either adapter targets (in the base's module order): ``(A [r, in], B [out, r])`` of the shared
    adapter's delta plus task adapter ``name``'s, concatenated at scale 1 (``r``: the sum of their ranks there)."""
    e = model.entry(name)
    if not e.method.linear:
        raise AdapterHubError(f"adapter {name!r}: {e.method.name} adapters have no low-rank factors; the shared "
                              f"adapter {shared.name!r} cannot be folded into it")
    parts = [(shared.method, shared_units(model, shared)), (e.method, model.adapter_units(name))]
    out = {}
    for path in [p for p in model.module_map.paths if any(p in units for _m, units in parts)]:
        a_list, b_list = [], []
        for method, units in parts:
            if path in units:
                a, b, s = method.lowrank_factors(units[path])
                a_list.append(a.detach())
                b_list.append(b.detach() * (s.detach() if torch.is_tensor(s) else float(s)))
        out[path] = (torch.cat(a_list, 0), torch.cat(b_list, 1))
    return out


def fold_shared(model, name: str, shared: SharedAdapter) -> AdapterEntry:
    """Replace trainable adapter ``name`` by one adapter of the shared adapter's method holding both deltas (see the
    module doc). Every module gets the largest concatenated rank; where it is smaller (a module only one of them
    targets) the factors are padded with zero rows, which adds nothing. Head, metrics and card extras are kept."""
    e = model.entry(name)
    factors = folded_factors(model, name, shared)
    rank = max(a.shape[0] for a, _b in factors.values())
    target = shared.method
    paths = list(factors)
    config = target.factor_config(rank, paths)
    units = build_units(model.module_map, target, config, paths, init=False)
    with torch.no_grad():
        for path, unit in units.items():
            a, b = factors[path]
            gap = rank - a.shape[0]
            target.set_factors(unit, F.pad(a, (0, 0, 0, gap)), F.pad(b, (0, gap)))
    entry = AdapterEntry(name, config, target, e.task, paths, dict(e.metrics), e.source, dict(e.extra))
    return model.attach_adapter(entry, units, e.head, replace=True)
