"""The input site: adapters that act on the backbone's call instead of on a module's output (e.g. prefix tuning:
per-row key/value prefixes in the cache and an attention mask that hides them from rows without one).

:class:`RoutedInputs` holds such adapters like :class:`~adapterhub.routing.layer.AdaptedLinear` holds a Linear's
(trainable units and bank rows, :class:`~adapterhub.routing.site.RoutedSite`), and reads the same route: a forward
pre-hook on the backbone (installed when the first such adapter is attached) gathers, per batch row, the
contribution of the row's adapter (the kind's zero contribution for rows whose adapter has none here) and lets the
kind rewrite the call's keyword arguments. So the model's forward, ``generate`` (every decoding step) and raw calls
under ``model.routed(...)`` all go through it; rows whose adapters have nothing here leave the call untouched."""
from __future__ import annotations

import inspect
import weakref
from typing import Any

import torch

from ..errors import AdapterHubError
from .kinds import INPUTS, UnitKind
from .route import current_route
from .site import RoutedSite

#: the target path of an input-level adapter: the model itself (no module is wrapped)
INPUTS_PATH = ""

_PARAMS: dict[type, tuple[str, ...]] = {}


def _param_names(module: torch.nn.Module) -> tuple[str, ...]:
    cls = type(module)
    if cls not in _PARAMS:
        params = inspect.signature(module.forward).parameters.values()
        _PARAMS[cls] = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return _PARAMS[cls]


class BackboneCall:
    """The arguments of one backbone call as keywords (positional ones bound to their names), for input kinds to
    read and rewrite. ``module`` is the backbone (its ``config``, its forward's parameters)."""

    def __init__(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]):
        names = _param_names(module)
        if len(args) > len(names):
            raise AdapterHubError(f"{type(module).__name__}: {len(args)} positional arguments, its forward takes "
                                  f"{len(names)}")
        self.module = module
        self.kwargs = {**dict(zip(names, args)), **kwargs}
        ref = self.kwargs.get("input_ids")
        if ref is None:
            ref = self.kwargs.get("inputs_embeds")
        if ref is None:
            raise AdapterHubError(f"{type(module).__name__} was called without input_ids or inputs_embeds")
        self.n_rows, self.seq_len, self.device = int(ref.shape[0]), int(ref.shape[1]), ref.device

    def accepts(self, name: str) -> bool:
        return name in _param_names(self.module)


def _is_site_hook(hook) -> bool:
    return getattr(hook, "_adapterhub_inputs", False)


def remove_input_hooks(module: torch.nn.Module) -> None:
    """Drop input-site hooks from ``module`` and its children (used on copies of a base)."""
    for m in module.modules():
        for k, h in list(m._forward_pre_hooks.items()):
            if _is_site_hook(h):
                del m._forward_pre_hooks[k]
                m._forward_pre_hooks_with_kwargs.pop(k, None)


class RoutedInputs(RoutedSite):
    """The input-level adapters of one model, applied to its backbone's calls through the route."""

    def __init__(self):
        super().__init__()
        self._hook_handle = None

    def install(self, backbone: torch.nn.Module) -> None:
        """Hook ``backbone`` (once). The hook holds this site weakly and is a plain function (copies of the base
        share it; :func:`remove_input_hooks` drops it from them)."""
        if self._hook_handle is not None:
            return
        ref = weakref.ref(self)

        def hook(module, args, kwargs):
            site = ref()
            return None if site is None else site.adapt(module, args, kwargs)

        hook._adapterhub_inputs = True
        self._hook_handle = backbone.register_forward_pre_hook(hook, with_kwargs=True)

    def adapt(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]):
        """The call's ``(args, kwargs)`` with the route's input contributions, or None (nothing to add)."""
        route = current_route()
        st, banks = self._slots, self._banks  # one consistent view for this whole call
        if route is None or not (st.methods or banks):
            return None
        call = BackboneCall(module, args, kwargs)
        n = len(route)
        if call.n_rows != n:
            raise AdapterHubError(f"routing: the backbone call has {call.n_rows} rows, the route {n}")
        parts: dict[UnitKind, list] = {}
        if st.methods:
            for kind, stack, gidx, _rows in self._unit_stacks(st, route, call.device):
                parts.setdefault(kind, []).append(kind.gather_rows(stack, gidx, n, self.training))
        if banks and route.banked:
            for bank, state, lidx, _rows in self._bank_states(banks, route, call.device):
                parts.setdefault(bank.kind, []).append(bank.kind.gather_bank_rows(state, lidx, n))
        if not parts:
            return None
        for kind, rows in parts.items():
            if kind.level != INPUTS:
                raise AdapterHubError(f"unit kind {kind.name!r} acts on module outputs, not on the backbone's inputs")
            kind.apply_inputs(rows, call)
        return (), call.kwargs
