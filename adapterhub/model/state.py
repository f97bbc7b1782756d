"""An adapter's parameters and state, through the model's public API: its units (live, or detached copies of its
bank rows), trainable parameters, a keyed snapshot of every tensor, and copying such a snapshot back."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import AdapterHubError
from .entry import AdapterEntry
from .units import rows_of, target_modules, units_of


def bank(model, name: str) -> AdapterEntry:
    """Re-attach trainable adapter ``name`` as bank rows (a new instance under the same name, swapped in)."""
    e = model.entry(name)
    if e.banked:
        return e
    if not e.method.bankable:
        raise AdapterHubError(f"adapter {name!r}: {e.method.name} adapters cannot be held in banks")
    rows = {p: e.method.unit_row(u) for p, u in units_of(model.module_map, e.key, e.targets).items()}
    return model.attach_adapter(_copy(e), None, e.head, replace=True, rows=rows)


def unbank(model, name: str) -> AdapterEntry:
    """Re-attach banked adapter ``name`` as trainable units built from its rows."""
    e = model.entry(name)
    if not e.banked:
        return e
    return model.attach_adapter(_copy(e), adapter_units(model, name), e.head, replace=True)


def _copy(e: AdapterEntry) -> AdapterEntry:
    return AdapterEntry(e.name, e.config, e.method, e.task, list(e.targets), dict(e.metrics), e.source, dict(e.extra))


def adapter_units(model, name: str) -> dict[str, nn.Module]:
    e = model.entry(name)
    if not e.banked:
        return units_of(model.module_map, e.key, e.targets)
    rows = rows_of(model.module_map, e.key, e.targets)
    lins = target_modules(model.module_map, e.method, list(rows))
    return {p: e.method.unit_from_row(e.config, p, lins[p], row) for p, row in rows.items()}


def adapter_parameters(model, name: str, include_head: bool = True) -> list[nn.Parameter]:
    e = model.entry(name)
    if e.banked:
        raise AdapterHubError(f"adapter {name!r} is held in banks for inference and has no trainable parameters; "
                              f"call model.unbank({name!r}) (or load it with trainable=True) to train it")
    params = [p for unit in units_of(model.module_map, e.key, e.targets).values() for p in unit.parameters()]
    if include_head:
        params += list(e.head.parameters())
    return params


def num_parameters(model, name: str, include_head: bool = True) -> int:
    e = model.entry(name)
    n = sum(p.numel() for u in adapter_units(model, name).values() for p in u.parameters())
    return n + (sum(p.numel() for p in e.head.parameters()) if include_head else 0)


def adapter_state(model, name: str) -> dict[str, torch.Tensor]:
    """The live tensors of a trainable adapter (copies for a banked one; clone to keep a snapshot)."""
    out = {f"unit.{path}.{k}": v for path, unit in adapter_units(model, name).items()
           for k, v in unit.state_dict().items()}
    out.update({f"head.{k}": v for k, v in model.entry(name).head.state_dict().items()})
    return out


def load_adapter_state(model, name: str, values: Mapping[str, torch.Tensor]) -> None:
    if model.entry(name).banked:
        raise AdapterHubError(f"adapter {name!r} is held in banks for inference; call model.unbank({name!r}) "
                              "before loading a state into it")
    live = adapter_state(model, name)
    missing, extra = sorted(set(live) - set(values)), sorted(set(values) - set(live))
    if missing or extra:
        raise AdapterHubError(f"adapter {name!r}: state has missing keys {missing[:3]} and unexpected keys "
                              f"{extra[:3]}")
    bad = [k for k, v in live.items() if tuple(values[k].shape) != tuple(v.shape)]
    if bad:
        raise AdapterHubError(f"adapter {name!r}: state tensor {bad[0]} has shape {tuple(values[bad[0]].shape)}, "
                              f"the adapter has {tuple(live[bad[0]].shape)}")
    with torch.no_grad():
        for k, v in live.items():
            v.copy_(values[k])


def base_parameters(model) -> dict[str, torch.Tensor]:
    return {k.replace(".base_layer.", "."): v for k, v in model.base.state_dict(keep_vars=True).items()
            if ".units." not in k}
