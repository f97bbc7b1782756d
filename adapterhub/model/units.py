"""Adapters on the base: the targeted Linears, the units or bank rows an adapter holds on them, wrapping those
modules in :class:`~adapterhub.routing.AdaptedLinear`, and unwrapping modules left with no adapter. Functions over
the base module; the model calls them.

Two layouts: *units* (``nn.Module`` parameters, trainable, autograd) and *bank rows* (one row per module in the
kind's bank: the inference layout: no modules, loaded by copying tensors)."""
from __future__ import annotations

from torch import nn

from ..errors import BaseMismatchError
from ..methods import Method, MethodConfig
from ..routing import AdaptedLinear


def module_at(base: nn.Module, path: str) -> nn.Module:
    try:
        return base.get_submodule(path)
    except AttributeError:
        raise BaseMismatchError(f"the base has no module {path!r} (adapter made for another base?)") from None


def has_module(base: nn.Module, path: str) -> bool:
    try:
        base.get_submodule(path)
        return True
    except AttributeError:
        return False


def _inside_adapted(base: nn.Module, path: str) -> bool:
    """Whether ``path`` lies inside an :class:`AdaptedLinear` (its units or its ``base_layer``)."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        try:
            if isinstance(base.get_submodule(".".join(parts[:i])), AdaptedLinear):
                return True
        except AttributeError:
            return False
    return False


def target_linears(base: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """The base Linear at each target path (inside its wrapper when already adapted), checked."""
    out = {}
    for path in targets:
        mod = module_at(base, path)
        if _inside_adapted(base, path):
            raise BaseMismatchError(f"module {path!r} is part of another adapter, not of the base")
        lin = mod.base_layer if isinstance(mod, AdaptedLinear) else mod
        if not isinstance(lin, nn.Linear):
            raise BaseMismatchError(f"module {path!r} of the base is a {type(lin).__name__}, not a Linear")
        out[path] = lin
    return out


def build_units(base: nn.Module, method: Method, config: MethodConfig, targets: list[str],
                init: bool = True) -> dict[str, nn.Module]:
    """Method ``method``'s unit for each target path (nothing is attached yet). ``init=False``: parameters left
    uninitialised, their values are about to be loaded."""
    return {path: method.create(config, lin, path, init=init) for path, lin in target_linears(base, targets).items()}


def _set_child(base: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = base.get_submodule(parent_name) if parent_name else base
    setattr(parent, child, module)


def _wrapped(base: nn.Module, path: str) -> AdaptedLinear:
    mod = base.get_submodule(path)
    if not isinstance(mod, AdaptedLinear):
        wrapped = AdaptedLinear(mod)
        wrapped.train(mod.training)
        _set_child(base, path, wrapped)
        mod = wrapped
    return mod


def attach_units(base: nn.Module, key: str, method: Method, units: dict[str, nn.Module], training: bool) -> None:
    """Add the units of adapter instance ``key`` to their modules, wrapping plain Linears first. Cannot fail: every
    check was made when the units were built."""
    for path, unit in units.items():
        unit.train(training)
        _wrapped(base, path).add(key, method, unit)


def attach_rows(base: nn.Module, key: str, slot: int, method: Method, rows: dict[str, dict]) -> None:
    """Put the bank rows of adapter instance ``key`` (bank slot ``slot``) into their modules' banks."""
    for path, row in rows.items():
        _wrapped(base, path).add_bank_row(key, slot, method, row)


def adapted_modules(base: nn.Module, key: str) -> dict[str, AdaptedLinear]:
    """Module path -> the wrapper holding a unit or a bank row of adapter instance ``key``."""
    return {path: mod for path, mod in base.named_modules() if isinstance(mod, AdaptedLinear) and mod.holds(key)}


def units_of(base: nn.Module, key: str) -> dict[str, nn.Module]:
    return {path: mod.units[key] for path, mod in adapted_modules(base, key).items() if key in mod.units}


def rows_of(base: nn.Module, key: str) -> dict[str, dict]:
    out = {}
    for path, mod in adapted_modules(base, key).items():
        row = mod.bank_row(key)
        if row is not None:
            out[path] = row
    return out


def detach(base: nn.Module, key: str) -> None:
    """Remove adapter instance ``key`` (units and bank rows); modules left with no adapter are unwrapped back to
    their Linear."""
    for path, mod in list(adapted_modules(base, key).items()):
        mod.remove(key)
        mod.drop_bank_row(key)
        if len(mod) == 0:
            _set_child(base, path, mod.base_layer)


def unwrap_all(base: nn.Module) -> None:
    """Replace every wrapper by its base Linear (used on copies of the base)."""
    for path, mod in list(base.named_modules()):
        if isinstance(mod, AdaptedLinear):
            _set_child(base, path, mod.base_layer)
