"""The adapter registry: name -> :class:`~adapterhub.model.entry.AdapterEntry`, safe under concurrent forwards.

- Every change happens under one lock, and a forward resolves its names and takes hold of their entries under
  that lock in one step: it sees one consistent set of adapters for all its rows and layers.
- Each attached adapter has a unique instance ``key`` (``name#N``): the modules hold its units under that key, so a
  new version can be attached under the same name while forwards still use the old one (hot reload).
- Forwards hold their adapters (:meth:`Registry.acquire` / :meth:`Registry.release`); removing or replacing an
  adapter unpublishes it at once and detaches it (frees its units and slots) when the last forward using it ends.
"""
from __future__ import annotations

import itertools
import threading
from typing import Callable, Iterable, Mapping

from ..errors import AdapterNameError
from .entry import AdapterEntry


class Registry:
    def __init__(self):
        self.lock = threading.RLock()  # serialises every change to the registry and to the modules
        self._entries: dict[str, AdapterEntry] = {}
        self._uses: dict[str, int] = {}
        self._retired: dict[str, Callable[[], None]] = {}
        self._ids = itertools.count(1)
        self._free_slots: list[int] = []
        self._next_slot = 1  # bank slot 0 means "not banked"

    def snapshot(self) -> Mapping[str, AdapterEntry]:
        """A copy of the current mapping (O(adapters): for callers that iterate; lookups use :meth:`find`)."""
        with self.lock:
            return dict(self._entries)

    def live(self) -> Mapping[str, AdapterEntry]:
        """The mapping itself (mutated in place): read it only while holding :attr:`lock`."""
        return self._entries

    def find(self, name: str) -> AdapterEntry | None:
        return self._entries.get(name) if isinstance(name, str) else None

    def names(self) -> list[str]:
        with self.lock:
            return list(self._entries)

    def get(self, name: str) -> AdapterEntry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise AdapterNameError(f"unknown adapter {name!r}; loaded: {list(self._entries)}") from None

    def new_key(self, name: str) -> str:
        return f"{name}#{next(self._ids)}"

    def new_slot(self) -> int:
        """A free bank slot (slots of retired adapters are reused once they are detached)."""
        with self.lock:
            if self._free_slots:
                return self._free_slots.pop()
            self._next_slot += 1
            return self._next_slot - 1

    def free_slot(self, slot: int) -> None:
        if slot:
            with self.lock:
                self._free_slots.append(slot)

    def publish(self, entry: AdapterEntry) -> AdapterEntry | None:
        """Make ``entry`` the adapter of its name; returns the entry it replaces (the caller retires it)."""
        with self.lock:
            old = self._entries.get(entry.name)
            self._entries[entry.name] = entry
            return old

    def unpublish(self, name: str) -> AdapterEntry:
        with self.lock:
            entry = self.get(name)
            del self._entries[name]
            return entry

    def retire(self, entry: AdapterEntry, detach: Callable[[], None]) -> None:
        """Run ``detach`` now if no forward uses ``entry``, else when the last one ends."""
        with self.lock:
            if self._uses.get(entry.key, 0) == 0:
                detach()
            else:
                self._retired[entry.key] = detach

    def acquire(self, entries: Iterable[AdapterEntry]) -> tuple[str, ...]:
        with self.lock:
            keys = tuple({e.key for e in entries})
            for k in keys:
                self._uses[k] = self._uses.get(k, 0) + 1
            return keys

    def release(self, keys: Iterable[str]) -> None:
        with self.lock:
            for k in keys:
                n = self._uses[k] - 1
                if n:
                    self._uses[k] = n
                    continue
                del self._uses[k]
                detach = self._retired.pop(k, None)
                if detach is not None:
                    detach()

    def in_use(self, entry: AdapterEntry) -> bool:
        return self._uses.get(entry.key, 0) > 0
