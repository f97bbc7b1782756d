"""The adapted module: a frozen ``nn.Linear`` plus the units of every adapter that targets it, computed
through :mod:`adapterhub.routing`."""
from __future__ import annotations

from functools import partial
from itertools import chain
from operator import attrgetter, is_, is_not

import torch
import torch.nn.functional as F
from torch import nn

from . import routing
from .errors import AdapterHubError
from .methods import LOWRANK, Method
from .methods.bottleneck import ACTIVATIONS

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


class _Slots:
    """An immutable view of the adapters on one module. ``add``/``remove`` build a new one and swap it in with
    a single assignment (copy-on-write), and ``forward`` reads ``self._slots`` once: a forward running in one
    thread while another thread adds or deletes adapters sees one consistent set of units, and stacks cached
    for one set can never be served for another (the cache lives and dies with its view)."""

    __slots__ = ("units", "methods", "lowrank", "bottleneck", "cache")

    def __init__(self, units: dict, methods: dict, lowrank: tuple, bottleneck: tuple):
        self.units = units            # name -> unit (the same modules as ``AdaptedLinear.units``)
        self.methods = methods        # name -> Method
        self.lowrank = lowrank        # names in insertion order, per unit kind
        self.bottleneck = bottleneck
        self.cache: dict = {}


class AdaptedLinear(nn.Module):
    """Wraps a base Linear (kept untouched as ``base_layer``, as in peft). ``units[name]`` holds adapter
    ``name``'s parameters for this module; the route decides which unit each batch row uses.

    ``merged_name``: set by :meth:`AdapterModel.merge` while that adapter's delta is folded into
    ``base_layer.weight``; its unit is then skipped, and routes with any other adapter are refused."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.units = nn.ModuleDict()
        self._slots = _Slots({}, {}, (), ())
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
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    # --- registry ----------------------------------------------------------------------------------
    def add(self, name: str, method: Method, unit: nn.Module) -> None:
        s = self._slots
        low = method.unit_kind == LOWRANK
        self.units[name] = unit
        self._slots = _Slots({**s.units, name: unit}, {**s.methods, name: method},
                             s.lowrank + (name,) if low else s.lowrank, s.bottleneck if low else s.bottleneck + (name,))

    def remove(self, name: str) -> None:
        s = self._slots
        if name not in s.methods:
            return
        if name == self.merged_name:
            raise AdapterHubError(f"adapter {name!r} is merged into the base weights; call unmerge() before deleting it")
        self._slots = _Slots({k: v for k, v in s.units.items() if k != name},
                             {k: v for k, v in s.methods.items() if k != name},
                             tuple(n for n in s.lowrank if n != name), tuple(n for n in s.bottleneck if n != name))
        del self.units[name]

    def __len__(self) -> int:
        return len(self._slots.methods)

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        route = routing.current_route()
        st = self._slots  # one consistent view for this whole call
        if route is None or not st.methods:
            return out
        merged = self.merged_name
        if merged is not None:
            if route.uniform == merged:
                return out  # the delta is already in base_layer.weight
            others = sorted(route.name_set - {merged})
            raise AdapterHubError(f"adapter {merged!r} is merged into the base weights, so this model serves only "
                                  f"{merged!r}; the batch also routes {others}: call unmerge() first")
        if route.uniform is not None:
            return self._forward_one(st, route.uniform, x, out)
        n = len(route)
        if st.lowrank:
            slots, idx = route.select(st.lowrank, x.device)
            if slots:
                xr = routing.as_rows(x, n)
                a, b, p = self._lowrank_stacks(st, slots)
                if self.training and p is not None:
                    xr = routing.rowwise_dropout(xr, p.index_select(0, idx))
                if out.dtype == a.dtype:  # the add is fused into the second bmm (baddbmm)
                    out = routing.gathered_lowrank(xr, idx, a, b, routing.as_rows(out, n)).reshape(out.shape)
                else:
                    delta = routing.gathered_lowrank(xr.to(a.dtype), idx, a, b)
                    out = out + delta.reshape(*out.shape).to(out.dtype)
        if st.bottleneck:
            slots = tuple(s for s in st.bottleneck if s in route.name_set)
            if slots:
                idx_all = route.index(slots, x.device)
                hr = routing.as_rows(out, n)
                delta = None
                for act_name, group in self._bottleneck_groups(st, slots).items():
                    dw, db, uw, ub = self._bottleneck_stacks(st, group)
                    # rows of other activation groups map to the zero slot of this group
                    idx = route.index(group, x.device) if group != slots else idx_all
                    d = routing.gathered_bottleneck(hr.to(dw.dtype), idx, dw, db, uw, ub, ACTIVATIONS[act_name])
                    delta = d if delta is None else delta + d
                out = out + delta.reshape(*out.shape).to(out.dtype)
        return out

    def _forward_one(self, st: _Slots, name: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        unit = st.units.get(name)
        if unit is None:
            return out
        method = st.methods[name]
        if method.unit_kind == LOWRANK:
            a, b, scale = method.lowrank_factors(unit)
            xin = F.dropout(x, unit.dropout, self.training) if unit.dropout else x
            z = F.linear(xin.to(a.dtype), a)
            if out.dtype == b.dtype:  # out + scale * z @ B^T in one GEMM (no scaled temporary, no separate add)
                o2 = out.reshape(-1, out.shape[-1])
                return torch.addmm(o2, z.reshape(o2.shape[0], -1), b.t(), alpha=scale).view(out.shape)
            return out + (F.linear(z, b) * scale).to(out.dtype)
        act = ACTIVATIONS[unit.non_linearity]
        h = out.to(unit.adapter_down.weight.dtype)
        return out + unit.adapter_up(act(unit.adapter_down(h))).to(out.dtype)

    # --- stacks (rebuilt under autograd; cached in inference until a parameter changes) ---------------
    # The validity check runs on every inference forward of every adapted module, so it is O(1) Python plus
    # C-level iteration over the stacked tensors: a hit needs
    # - the same parameter/buffer objects as at build time: unchanged unless some module registered a parameter
    #   since (the process-wide registration counter below); only then are the units re-read (their
    #   ``_parameters``/``_buffers`` dicts; ``Module.parameters()`` walks the module tree in Python and cost
    #   ~1 ms per forward at K=64), and the entry is kept if nothing of ours was replaced;
    # - the same ``_version`` counters (in-place updates: optimizer steps, ``copy_``, loads, rank masking);
    # - the same dtype/device (``Module.to()`` swaps ``.data`` without a version bump).
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

    def _lowrank_stacks(self, st: _Slots, slots: tuple[str, ...]):
        """``(A [K+1, r_max, in], B^T [K+1, r_max, out] with the scale folded in, per-slot dropout or None)``.
        B is stacked transposed so the per-row gather is contiguous in ``out`` (2x faster second bmm at T=1)."""
        def build():
            a_list, bt_list, p_list = [], [], []
            for s in slots:
                a, b, scale = st.methods[s].lowrank_factors(st.units[s])
                a_list.append(a)
                bt_list.append((b * scale).t())
                p_list.append(float(st.units[s].dropout))
            p = torch.tensor(p_list + [0.0], device=a_list[0].device) if any(p_list) else None
            return routing.stack_padded(a_list, 0), routing.stack_padded(bt_list, 0), p
        return self._cached(st, ("lr", slots), slots, build)

    @staticmethod
    def _bottleneck_groups(st: _Slots, slots: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        groups: dict[str, list[str]] = {}
        for s in slots:
            groups.setdefault(st.units[s].non_linearity, []).append(s)
        return {k: tuple(v) for k, v in groups.items()}

    def _bottleneck_stacks(self, st: _Slots, slots: tuple[str, ...]):
        def build():
            units = [st.units[s] for s in slots]
            return (routing.stack_padded([u.adapter_down.weight for u in units], 0),
                    routing.stack_vectors([u.adapter_down.bias for u in units]),
                    routing.stack_padded([u.adapter_up.weight for u in units], 1),
                    torch.stack([u.adapter_up.bias for u in units] + [torch.zeros_like(units[0].adapter_up.bias)]))
        return self._cached(st, ("bn", slots), slots, build)
