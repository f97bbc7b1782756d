"""Adapters on the base: the targeted Linears, the units or bank rows an adapter holds on them, wrapping those
modules in :class:`~adapterhub.routing.AdaptedLinear`, and unwrapping modules left with no adapter. Functions over
the base module; the model calls them.

Two layouts: *units* (``nn.Module`` parameters, trainable, autograd) and *bank rows* (one row per module in the
kind's bank: the inference layout: no modules, loaded by copying tensors).

Input-level methods (their kind's ``level`` is ``INPUTS``: prefix tuning) target the model itself (path
``INPUTS_PATH``): their units and rows live in the model's :class:`~adapterhub.routing.RoutedInputs` site
(``ModuleMap.inputs``), which hooks the backbone's call when it first holds one."""
from __future__ import annotations

from torch import nn

from ..errors import BaseMismatchError
from ..methods import Method, MethodConfig
from ..routing import INPUTS, INPUTS_PATH, AdaptedLinear, RoutedInputs, RoutedSite, is_linear_like, linear_view
from ..routing.inputs import remove_input_hooks


class ModuleMap:
    """Path -> module of the base's own modules (wrappers included), kept up to date by the functions below:
    lookups by path are dict hits instead of attribute walks (loading many adapters stays cheap)."""

    def __init__(self, base: nn.Module):
        self.base = base
        self.inputs = RoutedInputs()  # the site of input-level adapters (the model registers it as a submodule)
        self.paths: dict[str, nn.Module] = {}
        self.clean: set[str] = set()  # paths known not to lie inside a wrapper (until a module is (un)wrapped)
        for path, mod in base.named_modules():
            self.paths[path] = mod

    def get(self, path: str) -> nn.Module | None:
        mod = self.paths.get(path)
        if mod is None:
            try:
                mod = self.base.get_submodule(path)
            except AttributeError:
                return None
        return mod

    def site(self, path: str) -> nn.Module | None:
        """The module at ``path``, or the input site for :data:`INPUTS_PATH`."""
        return self.inputs if path == INPUTS_PATH else self.get(path)

    def set_child(self, path: str, module: nn.Module) -> None:
        parent_name, _, child = path.rpartition(".")
        parent = self.base.get_submodule(parent_name) if parent_name else self.base
        setattr(parent, child, module)
        self.paths[path] = module
        self.clean.clear()


def module_at(mm: ModuleMap, path: str) -> nn.Module:
    mod = mm.get(path)
    if mod is None:
        raise BaseMismatchError(f"the base has no module {path!r} (adapter made for another base?)")
    return mod


def has_module(mm: ModuleMap, path: str) -> bool:
    return mm.get(path) is not None


def _inside_adapted(mm: ModuleMap, path: str) -> bool:
    """Whether ``path`` lies inside an :class:`AdaptedLinear` (its units or its ``base_layer``)."""
    if path in mm.clean:
        return False
    parts = path.split(".")
    inside = any(isinstance(mm.get(".".join(parts[:i])), AdaptedLinear) for i in range(1, len(parts)))
    if not inside:
        mm.clean.add(path)
    return inside


def target_linears(mm: ModuleMap, targets: list[str]) -> dict[str, nn.Linear]:
    """The base layer at each target path (inside its wrapper when already adapted), checked, seen as a Linear
    (:func:`~adapterhub.routing.linear_view`: a ``Conv1D`` through a transposed view)."""
    out = {}
    for path in targets:
        mod = module_at(mm, path)
        if _inside_adapted(mm, path):
            raise BaseMismatchError(f"module {path!r} is part of another adapter, not of the base")
        lin = mod.base_layer if isinstance(mod, AdaptedLinear) else mod
        if not is_linear_like(lin):
            raise BaseMismatchError(f"module {path!r} of the base is a {type(lin).__name__}, not a Linear (or "
                                    "Conv1D)")
        out[path] = linear_view(lin)
    return out


def backbone(base: nn.Module) -> nn.Module:
    """The module whose call input-level adapters adapt: a transformers model's ``base_model`` (the decoder stack
    under a causal-LM head), else the base itself."""
    return getattr(base, "base_model", base)


def target_modules(mm: ModuleMap, method: Method, targets: list[str]) -> dict[str, nn.Module]:
    """The base module each target path gives ``method.create``: the Linear (see :func:`target_linears`), or, for
    input-level methods, the whole base (their one target is :data:`INPUTS_PATH`)."""
    if method.kind.level != INPUTS:
        return target_linears(mm, targets)
    if list(targets) != [INPUTS_PATH]:
        raise BaseMismatchError(f"{method.name} adapters act on the model's inputs: their targets must be "
                                f"[{INPUTS_PATH!r}], got {list(targets)[:3]}")
    return {INPUTS_PATH: mm.base}


def build_units(mm: ModuleMap, method: Method, config: MethodConfig, targets: list[str],
                init: bool = True) -> dict[str, nn.Module]:
    """Method ``method``'s unit for each target path (nothing is attached yet). ``init=False``: parameters left
    uninitialised, their values are about to be loaded."""
    return {path: method.create(config, mod, path, init=init)
            for path, mod in target_modules(mm, method, targets).items()}


def _site(mm: ModuleMap, method: Method, path: str) -> RoutedSite:
    """Where ``method``'s unit for ``path`` lives: the input site (hooked on the backbone), or the Linear's wrapper
    (wrapped now if it is a plain Linear)."""
    if method.kind.level == INPUTS:
        mm.inputs.install(backbone(mm.base))
        return mm.inputs
    mod = module_at(mm, path)
    if not isinstance(mod, AdaptedLinear):
        wrapped = AdaptedLinear(mod)
        wrapped.train(mod.training)
        mm.set_child(path, wrapped)
        mod = wrapped
    return mod


def attach_units(mm: ModuleMap, key: str, method: Method, units: dict[str, nn.Module], training: bool) -> None:
    """Add the units of adapter instance ``key`` to their modules, wrapping plain Linears first. Cannot fail: every
    check was made when the units were built."""
    for path, unit in units.items():
        unit.train(training)
        _site(mm, method, path).add(key, method, unit)


def attach_rows(mm: ModuleMap, key: str, slot: int, method: Method, rows: dict[str, dict]) -> None:
    """Put the bank rows of adapter instance ``key`` (bank slot ``slot``) into their modules' banks."""
    for path, row in rows.items():
        _site(mm, method, path).add_bank_row(key, slot, method, row)


def adapted_modules(mm: ModuleMap, key: str, paths: list[str] | None = None) -> dict[str, RoutedSite]:
    """Target path -> the site (a Linear's wrapper, or the input site) holding a unit or a bank row of adapter
    instance ``key`` (among ``paths``, its targets when known; else every site)."""
    candidates = ((p, mm.site(p)) for p in paths) if paths is not None else \
        [*mm.paths.items(), (INPUTS_PATH, mm.inputs)]
    return {p: m for p, m in candidates if isinstance(m, RoutedSite) and m.holds(key)}


def units_of(mm: ModuleMap, key: str, paths: list[str] | None = None) -> dict[str, nn.Module]:
    return {path: mod.units[key] for path, mod in adapted_modules(mm, key, paths).items() if key in mod.units}


def rows_of(mm: ModuleMap, key: str, paths: list[str] | None = None) -> dict[str, dict]:
    out = {}
    for path, mod in adapted_modules(mm, key, paths).items():
        row = mod.bank_row(key)
        if row is not None:
            out[path] = row
    return out


def detach(mm: ModuleMap, key: str, paths: list[str] | None = None) -> None:
    """Remove adapter instance ``key`` (units and bank rows); modules left with no adapter are unwrapped back to
    their Linear."""
    for path, mod in list(adapted_modules(mm, key, paths).items()):
        mod.remove(key)
        mod.drop_bank_row(key)
        if len(mod) == 0 and isinstance(mod, AdaptedLinear):
            mm.set_child(path, mod.base_layer)


def unwrap_all(base: nn.Module) -> None:
    """Replace every wrapper by its base Linear and drop the input site's hook (used on copies of the base)."""
    remove_input_hooks(base)
    mm = ModuleMap(base)
    for path, mod in list(mm.paths.items()):
        if isinstance(mod, AdaptedLinear):
            mm.set_child(path, mod.base_layer)
