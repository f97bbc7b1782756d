"""The routed module: a frozen linear-like layer (``nn.Linear``, GPT-2's ``Conv1D``: :mod:`.linear_like`) plus the
units of every adapter that targets it, computed through the route (:mod:`adapterhub.routing.route`) by their unit kinds
(:mod:`adapterhub.routing.kinds`). Holding and gathering the adapters is the site's (:mod:`adapterhub.routing.site`);
this module applies them to the layer's output."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import AdapterHubError
from .bank import Bank
from .linear_like import linear_view
from .route import Route, current_route
from .site import RoutedSite, _Slots, display_name, on_rows


class AdaptedLinear(RoutedSite):
    """Wraps a base linear-like layer (kept untouched as ``base_layer``, as in peft). ``units[key]`` holds the parameters
    of the adapter instance ``key`` for this module; the route decides which unit each batch row uses.

    ``merged_name``: set while that adapter's delta is folded into ``base_layer.weight``; its unit is then
    skipped, and routes with any other adapter are refused."""

    def __init__(self, base_layer: nn.Module):
        nn.Module.__init__(self)
        self.base_layer = base_layer  # registered first: state_dict order base_layer.*, then units.*
        self._init_site()

    # expose the base's attributes that model code reads
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return linear_view(self.base_layer).in_features

    @property
    def out_features(self) -> int:
        return linear_view(self.base_layer).out_features

    def __getattr__(self, name: str):
        """Other attributes of the base layer that model code reads (e.g. ``Conv1D.nf``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self._modules.get("base_layer")
            if base is None or name.startswith("_"):
                raise
            return getattr(base, name)

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base_out = self.base_layer(x, *args, **kwargs)
        route = current_route()
        st, banks = self._slots, self._banks  # one consistent view for this whole call
        if route is None or not (st.methods or banks):
            return base_out
        merged = self.merged_name
        if merged is not None:
            if route.uniform == merged:
                return base_out  # the delta is already in base_layer.weight
            name = display_name(merged)
            others = sorted({n for n, k in zip(route.names, route.keys) if k != merged})
            raise AdapterHubError(f"adapter {name!r} is merged into the base weights, so this model serves only "
                                  f"{name!r}; the batch also routes {others}: call unmerge() first")
        if route.uniform is not None:
            unit = st.units.get(route.uniform)
            if unit is not None:
                method = st.methods[route.uniform]
                return method.kind.apply_one(method, unit, self.base_layer, x, base_out, base_out, self.training)
            if route.uniform_slot and banks:
                for bank in banks.values():
                    row = self._route_row(route, bank)
                    if row is not None:
                        return bank.kind.apply_bank_row(row, self.base_layer, x, base_out, base_out)
            return base_out
        out = self._units_forward(st, route, x, base_out, base_out) if st.methods else base_out
        if banks and route.banked:
            out = self._banks_forward(banks, route, self.base_layer, x, base_out, out)
        return out

    def _units_forward(self, st: _Slots, route: Route, x, base_out, out):
        n, base, training = len(route), self.base_layer, self.training
        for kind, stack, gidx, rows in self._unit_stacks(st, route, x.device):
            out = on_rows(lambda *a, k=kind, s=stack: k.apply_rows(s, base, *a, training), x, base_out, out, gidx,
                          n, rows if kind.own_rows_only else None)
        return out

    def _banks_forward(self, banks: dict, route: Route, base, x, base_out, out):
        n = len(route)
        for bank, state, lidx, rows in self._bank_states(banks, route, x.device):
            out = on_rows(lambda *a, k=bank.kind, s=state: k.apply_bank_rows(s, base, *a), x, base_out, out, lidx,
                          n, rows if bank.kind.own_rows_only else None)
        return out

    @staticmethod
    def _route_row(route: Route, bank: Bank):
        """The uniform route's row in ``bank`` (views), cached on the route (generate reuses it every step)."""
        key = ("bank-row", id(bank))
        if key not in route._index_cache:
            route._index_cache[key] = bank.row(route.uniform_slot)
        return route._index_cache[key]
