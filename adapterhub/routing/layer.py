"""The routed module: a frozen linear-like layer (``nn.Linear``, GPT-2's ``Conv1D``: :mod:`.linear_like`) plus the units of every adapter that targets it, computed through the
route (:mod:`adapterhub.routing.route`) by their unit kinds (:mod:`adapterhub.routing.kinds`)."""
from __future__ import annotations

from functools import partial
from itertools import chain
from operator import attrgetter, is_, is_not

import torch
from torch import nn

from ..errors import AdapterHubError
from .bank import Bank
from .kinds import UnitKind
from .linear_like import linear_view
from .route import Route, current_route

_VERSION = attrgetter("_version")
_NOT_NONE = partial(is_not, None)

#: Bumped whenever any module in the process registers a parameter (``module.w = nn.Parameter(...)``,
#: ``load_state_dict(assign=True)``, new adapters): cached stacks then re-check that their tensors are
#: still the units' own before they are served again. One integer add per registration.
_REGISTRATIONS = [0]


def _on_parameter_registration(module, name, param):
    _REGISTRATIONS[0] += 1


_register_hook = getattr(nn.modules.module, "register_module_parameter_registration_hook", None)
_TRACKING = _register_hook is not None  # without the hook (old torch) every hit re-checks the tensors
if _TRACKING:
    _register_hook(_on_parameter_registration)


def display_name(key: str) -> str:
    """The adapter name of an instance key (``name#N`` -> ``name``)."""
    return key.rsplit("#", 1)[0]


class _Slots:
    """An immutable view of the adapters on one module. ``add``/``remove`` build a new one and swap it in with
    a single assignment (copy-on-write), and ``forward`` reads ``self._slots`` once: a forward running in one
    thread while another thread adds or deletes adapters sees one consistent set of units, and stacks cached
    for one set can never be served for another (the cache lives and dies with its view)."""

    __slots__ = ("units", "methods", "by_kind", "cache")

    def __init__(self, units: dict, methods: dict):
        self.units = units            # name -> unit (the same modules as ``AdaptedLinear.units``)
        self.methods = methods        # name -> method plug-in
        by_kind: dict[UnitKind, list[str]] = {}
        for name, m in methods.items():  # insertion order
            by_kind.setdefault(m.kind, []).append(name)
        self.by_kind = {k: tuple(v) for k, v in by_kind.items()}
        self.cache: dict = {}


class AdaptedLinear(nn.Module):
    """Wraps a base linear-like layer (kept untouched as ``base_layer``, as in peft). ``units[key]`` holds the parameters of
    the adapter instance ``key`` for this module; the route decides which unit each batch row uses.

    ``merged_name``: set while that adapter's delta is folded into ``base_layer.weight``; its unit is then
    skipped, and routes with any other adapter are refused."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.units = nn.ModuleDict()
        self._slots = _Slots({}, {})
        self._banks: dict[tuple, Bank] = {}  # (kind name, group) -> bank; replaced, never mutated (forwards read it)
        self._banked: dict[str, int] = {}     # instance key -> bank slot (writers only: under the model's lock)
        self.merged_name: str | None = None

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

    # --- registry ----------------------------------------------------------------------------------
    def add(self, name: str, method, unit: nn.Module) -> None:
        s = self._slots
        self.units[name] = unit
        self._slots = _Slots({**s.units, name: unit}, {**s.methods, name: method})

    def remove(self, name: str) -> None:
        s = self._slots
        if name not in s.methods:
            return
        if name == self.merged_name:
            raise AdapterHubError(f"adapter {display_name(name)!r} is merged into the base weights; call unmerge() "
                                  "before deleting it")
        self._slots = _Slots({k: v for k, v in s.units.items() if k != name},
                             {k: v for k, v in s.methods.items() if k != name})
        del self.units[name]

    def __len__(self) -> int:
        return len(self._slots.methods) + len(self._banked)

    # --- banks (the inference layout) -------------------------------------------------------------------
    def add_bank_row(self, key: str, slot: int, method, row: dict) -> None:
        """Hold adapter instance ``key`` (bank slot ``slot``) as one row of its kind's bank on this module."""
        kind = method.kind
        gid = (kind.name, kind.bank_group(row))
        bank = self._banks.get(gid)
        if bank is None:
            bank = Bank(kind, gid[1], row)
            self._banks = {**self._banks, gid: bank}
        bank.put(slot, row)
        self._banked[key] = slot

    def drop_bank_row(self, key: str) -> None:
        slot = self._banked.get(key)
        if slot is None:
            return
        if key == self.merged_name:
            raise AdapterHubError(f"adapter {display_name(key)!r} is merged into the base weights; call unmerge() "
                                  "before deleting it")
        banks = dict(self._banks)
        for gid, bank in list(banks.items()):
            bank.drop(slot)
            if not len(bank):
                del banks[gid]
        self._banks = banks
        del self._banked[key]

    def bank_row(self, key: str) -> dict | None:
        """The (unpadded) row adapter instance ``key`` holds in this module's banks, or None."""
        slot = self._banked.get(key)
        if slot is None:
            return None
        for bank in self._banks.values():
            row = bank.row(slot)
            if row is not None:
                return row
        return None

    def bank_bytes(self) -> int:
        return sum(b.nbytes() for b in self._banks.values())

    def holds(self, key: str) -> bool:
        return key in self._slots.methods or key in self._banked

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
                return method.kind.apply_one(method, unit, x, base_out, base_out, self.training)
            if route.uniform_slot and banks:
                for bank in banks.values():
                    row = self._route_row(route, bank)
                    if row is not None:
                        return bank.kind.apply_bank_row(row, x, base_out, base_out)
            return base_out
        out = self._units_forward(st, route, x, base_out, base_out) if st.methods else base_out
        if banks and route.banked:
            out = self._banks_forward(banks, route, x, base_out, out)
        return out

    def _units_forward(self, st: _Slots, route: Route, x, base_out, out):
        n = len(route)
        for kind, names in st.by_kind.items():
            slots, idx = route.select(names, x.device)
            if not slots:
                continue
            for group in self._groups(st, kind, slots):
                # rows of other groups (or kinds) map to the zero slot of this group
                gidx = idx if group == slots else route.index(group, x.device)
                stack = self._cached(st, (kind.name, group), group,
                                     lambda g=group: kind.build_stack([(s, st.methods[s], st.units[s]) for s in g]))
                out = kind.apply_rows(stack, x, base_out, out, gidx, n, self.training)
        return out

    @staticmethod
    def _banks_forward(banks: dict, route: Route, x, base_out, out):
        n = len(route)
        for bank in banks.values():
            key = ("bank", id(bank))
            hit = route._index_cache.get(key)
            if hit is None:  # once per (route, bank): the route's slots stay in the bank while it runs
                state = bank.state
                present = any(s in bank.meta for s in set(route.slots))
                lidx = Bank.local_index(state, route.slot_index(x.device)) if present else None
                hit = route._index_cache[key] = (state, lidx)
            state, lidx = hit
            if lidx is not None:
                out = bank.kind.apply_bank_rows(state, x, base_out, out, lidx, n)
        return out

    @staticmethod
    def _route_row(route: Route, bank: Bank):
        """The uniform route's row in ``bank`` (views), cached on the route (generate reuses it every step)."""
        key = ("bank-row", id(bank))
        if key not in route._index_cache:
            route._index_cache[key] = bank.row(route.uniform_slot)
        return route._index_cache[key]

    @staticmethod
    def _groups(st: _Slots, kind: UnitKind, slots: tuple[str, ...]) -> list[tuple[str, ...]]:
        """``slots`` split by the kind's stacking key (cached with the view: units do not change key)."""
        key = ("groups", kind.name, slots)
        hit = st.cache.get(key)
        if hit is None:
            groups: dict = {}
            for s in slots:
                groups.setdefault(kind.group_key(st.methods[s], st.units[s]), []).append(s)
            hit = st.cache[key] = [tuple(v) for v in groups.values()]
        return hit

    # --- stacks (rebuilt under autograd; cached in inference until a parameter changes) ---------------
    # The validity check runs on every inference forward of every adapted module, so it is O(1) Python plus
    # C-level iteration over the stacked tensors: a hit needs
    # - the same parameter/buffer objects as at build time: unchanged unless some module registered a parameter
    #   since (the process-wide registration counter below); only then are the units re-read (their
    #   ``_parameters``/``_buffers`` dicts; ``Module.parameters()`` walks the module tree in Python and cost
    #   ~1 ms per forward at K=64), and the entry is kept if nothing of ours was replaced;
    # - the same ``_version`` counters (in-place updates: optimizer steps, ``copy_``, loads, rank masking);
    # - the same dtype/device (``Module.to()`` swaps ``.data`` without a version bump); a kind's stack is a tuple
    #   whose first item is a tensor (checked against the units' first tensor).
    @staticmethod
    def _tensor_dicts(st: _Slots, slots: tuple[str, ...]) -> list:
        return [d for s in slots for m in st.units[s].modules() for d in (m._parameters, m._buffers)]

    @staticmethod
    def _tensors_now(dicts: list) -> list:
        return [*filter(_NOT_NONE, chain.from_iterable(map(dict.values, dicts)))]  # bias=None is registered

    def _cached(self, st: _Slots, key, slots, build):
        if torch.is_grad_enabled():
            return build()
        hit = st.cache.get(key)
        if hit is not None:
            gen, dicts, tensors, versions, val = hit
            if gen != _REGISTRATIONS[0] or not _TRACKING:  # a parameter was registered somewhere: ours too?
                now = self._tensors_now(dicts)
                if len(now) != len(tensors) or not all(map(is_, now, tensors)):
                    hit = None
                else:
                    st.cache[key] = hit = (_REGISTRATIONS[0], dicts, tensors, versions, val)
            if (hit is not None and list(map(_VERSION, tensors)) == versions
                    and (not tensors or (tensors[0].dtype == val[0].dtype and tensors[0].device == val[0].device))):
                return val
        gen = _REGISTRATIONS[0]
        dicts = self._tensor_dicts(st, slots)
        tensors = self._tensors_now(dicts)
        val = build()
        st.cache[key] = (gen, dicts, tensors, list(map(_VERSION, tensors)), val)
        return val
