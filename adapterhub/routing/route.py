"""The route of one forward: which adapter each batch row uses.

A forward over the base runs inside ``routed(names)``, where ``names[i]`` is the adapter of batch row ``i``. The
route lives in a ``ContextVar``, so threads serving different requests do not see each other's routes. Every
adapted module (:class:`~adapterhub.routing.layer.AdaptedLinear`) reads it and asks it, once per forward and
module set, which of its adapters the batch uses and the row -> slot index into them (cached on the route).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator, Sequence

import torch

_ROUTE: ContextVar["Route | None"] = ContextVar("adapterhub_route", default=None)


class Route:
    """Per-row adapters of one forward, with per-module index tensors cached for the forward's life.

    ``names[i]`` is row ``i``'s adapter name; ``keys[i]`` the instance key its units are held under in the modules
    (the model resolves names to keys from one registry snapshot; a bare ``Route(names)`` uses the names as keys);
    ``slots[i]`` its bank slot when it is held in banks (the inference layout), else 0. ``uniform`` is the one key
    of a single-adapter batch, else ``None``. ``shared`` holds instance keys of trainable units applied to EVERY row
    in addition to the row's own adapter (a shared adapter beneath per-task ones: per row, shared + own)."""

    __slots__ = ("names", "keys", "slots", "name_set", "uniform", "uniform_slot", "banked", "shared", "_index_cache")

    def __init__(self, names: Sequence[str], keys: Sequence[str] | None = None, slots: Sequence[int] | None = None,
                 shared: Sequence[str] = ()):
        self.names = tuple(names)
        self.shared = tuple(shared)
        self.keys = tuple(keys) if keys is not None else self.names
        self.slots = tuple(slots) if slots is not None else (0,) * len(self.names)
        if not len(self.keys) == len(self.slots) == len(self.names):
            raise ValueError(f"route: {len(self.keys)} keys and {len(self.slots)} slots for {len(self.names)} rows")
        self.name_set = frozenset(self.keys)
        self.uniform = self.keys[0] if len(self.name_set) == 1 else None
        self.uniform_slot = self.slots[0] if self.uniform is not None else 0
        self.banked = any(self.slots)
        self._index_cache: dict = {}

    def __len__(self) -> int:
        return len(self.names)

    def index(self, slots: tuple[str, ...], device: torch.device) -> torch.Tensor:
        """Row -> slot index into ``slots`` (``len(slots)`` = the zero slot for rows not in ``slots``)."""
        key = (slots, device)
        idx = self._index_cache.get(key)
        if idx is None:
            pos = {n: i for i, n in enumerate(slots)}
            pad = len(slots)
            idx = torch.tensor([pos.get(n, pad) for n in self.keys], dtype=torch.long, device=device)
            self._index_cache[key] = idx
        return idx

    def select(self, candidates: tuple[str, ...], device: torch.device) -> tuple[tuple[str, ...], torch.Tensor | None]:
        """The keys of ``candidates`` (a module's adapters, in order) that this route uses, and the row -> slot
        index into them; ``((), None)`` when none is used. Cached per (candidates, device) for the route's life:
        the modules of one model mostly hold the same adapters, so one lookup serves every layer."""
        key = ("select", candidates, device)
        hit = self._index_cache.get(key)
        if hit is None:
            name_set = self.name_set
            slots = tuple(s for s in candidates if s in name_set)
            hit = (slots, self.index(slots, device) if slots else None)
            self._index_cache[key] = hit
        return hit

    def slot_index(self, device: torch.device) -> torch.Tensor:
        """Row -> bank slot (0 for rows whose adapter is not banked), cached per device."""
        key = ("slots", device)
        idx = self._index_cache.get(key)
        if idx is None:
            idx = self._index_cache[key] = torch.tensor(self.slots, dtype=torch.long, device=device)
        return idx

    def repeat_interleave(self, k: int) -> "Route":
        """Route for a batch whose rows were each repeated ``k`` times (beam search, num_return_sequences)."""
        rep = lambda seq: [v for v in seq for _ in range(k)]  # noqa: E731
        return Route(rep(self.names), rep(self.keys), rep(self.slots), self.shared)


def current_route() -> Route | None:
    return _ROUTE.get()


@contextlib.contextmanager
def routed(names: Sequence[str] | Route) -> Iterator[Route]:
    """Run the enclosed forward(s) with one adapter name per batch row."""
    route = names if isinstance(names, Route) else Route(names)
    token = _ROUTE.set(route)
    try:
        yield route
    finally:
        _ROUTE.reset(token)
