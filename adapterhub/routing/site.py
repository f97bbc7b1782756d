"""A routed site: where the adapters of one place in the model are held and gathered per batch row. Two sites
exist: :class:`~adapterhub.routing.layer.AdaptedLinear` (a targeted Linear: kinds change its output) and
:class:`~adapterhub.routing.inputs.RoutedInputs` (the backbone's call: kinds add inputs such as prefix key/values).
Both hold trainable units (copy-on-write slots, stacks cached in inference) and bank rows (the inference layout),
and both ask the route (:mod:`adapterhub.routing.route`) which of them each batch row uses."""
from __future__ import annotations

from functools import partial
from itertools import chain
from operator import attrgetter, is_, is_not
from typing import Iterator

import torch
from torch import nn

from ..errors import AdapterHubError
from .bank import Bank, BankState
from .kinds import UnitKind
from .route import Route
from .stacks import as_rows

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


def _rows(route: Route, key, wanted: set, values: tuple, device) -> torch.Tensor | None:
    """The rows whose value (key or slot) is in ``wanted``, or None when that is every row; cached on the route."""
    hit = route._index_cache.get(key, False)
    if hit is False:
        rows = [i for i, v in enumerate(values) if v in wanted]
        hit = route._index_cache[key] = None if len(rows) == len(values) else \
            torch.tensor(rows, dtype=torch.long, device=device)
    return hit


def on_rows(apply, x: torch.Tensor, base_out: torch.Tensor, out: torch.Tensor, idx: torch.Tensor, n_rows: int,
            rows: torch.Tensor | None) -> torch.Tensor:
    """``apply(x, base_out, out, idx, n_rows)`` on the batch rows ``rows`` only (None: all), put back into ``out``:
    in a batch mixing methods, a kind computes the rows of its adapters, not every row through its zero slot."""
    if rows is None:
        return apply(x, base_out, out, idx, n_rows)
    xr, br, orows = as_rows(x, n_rows), as_rows(base_out, n_rows), as_rows(out, n_rows)
    m = rows.numel()
    sub = apply(xr.index_select(0, rows), br.index_select(0, rows), orows.index_select(0, rows),
                idx.index_select(0, rows), m)
    return orows.index_copy(0, rows, sub.reshape(m, *orows.shape[1:])).reshape(out.shape)


class RoutedSite(nn.Module):
    """The adapters held at one site: ``units[key]`` (trainable: the parameters of adapter instance ``key``) and
    bank rows (``_banks``: one per unit kind and group; ``_banked``: key -> bank slot). ``merged_name``: set while
    that adapter's delta is folded into the base weights (only a Linear site can hold one)."""

    def __init__(self):
        super().__init__()
        self._init_site()

    def _init_site(self) -> None:
        self.units = nn.ModuleDict()
        self._slots = _Slots({}, {})
        self._banks: dict[tuple, Bank] = {}  # (kind name, group) -> bank; replaced, never mutated (forwards read it)
        self._banked: dict[str, int] = {}     # instance key -> bank slot (writers only: under the model's lock)
        self.merged_name: str | None = None

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

    # --- gathering per batch row (one copy for every site) --------------------------------------------
    def _unit_stacks(self, st: _Slots, route: Route, device) -> Iterator[tuple[UnitKind, object, torch.Tensor,
                                                                                 torch.Tensor | None]]:
        """(kind, stack, row -> slot index, the rows using the group or None for all) of every kind and stacking group
        of trainable units the route uses; rows of other groups (or kinds) map to the group's zero slot."""
        for kind, names in st.by_kind.items():
            slots, idx = route.select(names, device)
            if not slots:
                continue
            for group in self._groups(st, kind, slots):
                gidx = idx if group == slots else route.index(group, device)
                stack = self._cached(st, (kind.name, group), group,
                                     lambda g=group: kind.build_stack([(s, st.methods[s], st.units[s]) for s in g]))
                yield kind, stack, gidx, _rows(route, ("rows", group, device), set(group), route.keys, device)

    @staticmethod
    def _bank_states(banks: dict, route: Route, device) -> Iterator[tuple[Bank, BankState, torch.Tensor,
                                                                         torch.Tensor | None]]:
        """(bank, its state, row -> bank row index, the rows it holds or None for all) of every bank holding a row
        the route uses (rows it does not hold map to the zero row)."""
        for bank in banks.values():
            key = ("bank", id(bank))
            hit = route._index_cache.get(key)
            if hit is None:  # once per (route, bank): the route's slots stay in the bank while it runs
                state = bank.state
                held = {s for s in set(route.slots) if s in bank.meta}
                lidx = Bank.local_index(state, route.slot_index(device)) if held else None
                rows = _rows(route, ("bank-rows", id(bank), device), held, route.slots, device) if held else None
                hit = route._index_cache[key] = (state, lidx, rows)
            state, lidx, rows = hit
            if lidx is not None:
                yield bank, state, lidx, rows

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
