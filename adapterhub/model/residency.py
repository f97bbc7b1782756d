"""LRU residency: a model serving more adapters than it holds. Names that are stored but not loaded are loaded on
first use (one load per name, however many requests ask for it at once), and when more than ``max_resident``
adapters are loaded the least recently used one that is not pinned, not in the request and not trainable is
evicted (deleted; forwards still using it finish first)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Iterable

from ..errors import AdapterHubError, AdapterNameError


class Residency:
    def __init__(self, model, store, max_resident: int | None):
        if max_resident is not None and (isinstance(max_resident, bool) or not isinstance(max_resident, int)
                                         or max_resident < 1):
            raise AdapterHubError(f"max_resident must be a positive int or None, got {max_resident!r}")
        self.model, self.store, self.max_resident = model, store, max_resident
        self.pinned: set[str] = set()
        self.recent: collections.OrderedDict[str, None] = collections.OrderedDict()  # least recent first
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = self.evictions = 0
        self.on_load: Callable[[str, float], None] | None = None  # (name, seconds) after each load (metrics)

    def touch(self, names: Iterable[str]) -> None:
        with self._lock:
            for n in names:
                self.recent[n] = None
                self.recent.move_to_end(n)

    def ensure(self, names: Iterable[str]) -> None:
        """Load every name of ``names`` that is not loaded but stored (unknown names are left to the caller)."""
        wanted = list(dict.fromkeys(names))
        for n in wanted:
            if self.model.find(n) is not None or self.store is None or n not in self.store:
                continue
            with self._lock:
                lock = self._loading.setdefault(n, threading.Lock())
            with lock:  # one load per name: the others wait for it and find it loaded
                if self.model.find(n) is None:
                    self._make_room(keep=set(wanted))
                    t0 = time.perf_counter()
                    self.model.load_adapter(n, store=self.store)
                    self.loads += 1
                    if self.on_load is not None:
                        self.on_load(n, time.perf_counter() - t0)

    def _make_room(self, keep: set[str]) -> None:
        if self.max_resident is None:
            return
        while len(self.model.adapters) >= self.max_resident:
            victim = self._victim(keep)
            if victim is None:
                raise AdapterHubError(
                    f"cannot load another adapter: {len(self.model.adapters)} are loaded (max_resident="
                    f"{self.max_resident}) and none can be evicted (pinned: {sorted(self.pinned)}; trainable "
                    "adapters and those of this request stay); raise max_resident or unpin one")
            self.model.delete_adapter(victim)
            self.evictions += 1

    def _victim(self, keep: set[str]) -> str | None:
        snap = self.model.snapshot()
        with self._lock:
            order = [n for n in self.recent if n in snap] + [n for n in snap if n not in self.recent]
        for n in order:
            if n not in keep and n not in self.pinned and snap[n].banked:
                return n
        return None

    def pin(self, name: str) -> None:
        self.model.entry(name)
        self.pinned.add(name)

    def unpin(self, name: str) -> None:
        if name not in self.pinned:
            raise AdapterNameError(f"adapter {name!r} is not pinned; pinned: {sorted(self.pinned)}")
        self.pinned.discard(name)
