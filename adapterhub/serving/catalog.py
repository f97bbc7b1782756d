"""The adapters a server knows: resident ones (loaded in the model) and stored ones (in its store, loaded on first
use). Name checks for requests (unknown -> 404 naming it, wrong task -> 400), the ``/v1/models`` listing, and the
management operations (load / replace / delete / pin / unpin). Store cards are read once per version."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import AdapterHubError, AdapterNameError, StoreError
from ..heads import CAUSAL_LM
from ..names import looks_like_repo_id, names_a_directory
from .errors import BadRequest, NotFound, ServeError


class Conflict(ServeError):
    status, kind = 409, "invalid_request_error"


class Catalog:
    def __init__(self, model, store=None, on_load: Callable[[str, float], None] | None = None):
        self.model, self.store, self.on_load = model, store, on_load
        self.created = int(time.time())
        self._cards: dict[tuple[str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()

    # -- lookups ---------------------------------------------------------------------------------------------
    def stored(self, name: str) -> bool:
        return self.store is not None and name in self.store

    def known(self, name: str) -> bool:
        return name in self.model.snapshot() or self.stored(name)

    def require(self, names: Iterable[str], param: str) -> None:
        """404 naming every name that is neither loaded nor stored."""
        unknown = sorted({n for n in names if not self.known(n)})
        if unknown:
            where = " or stored" if self.store is not None else ""
            raise NotFound(f"unknown adapter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: not "
                           f"loaded{where} (GET /v1/models lists them)", param=param)

    def task(self, name: str) -> str:
        entry = self.model.snapshot().get(name)
        return entry.task if entry is not None else self.card(name)["task"]

    def require_causal(self, name: str, param: str = "model") -> None:
        self.require([name], param)
        task = self.task(name)
        if task != CAUSAL_LM:
            raise BadRequest(f"adapter {name!r} is a {task} adapter; completions need a {CAUSAL_LM} adapter "
                             "(use POST /v1/predict)", param=param)

    def card(self, name: str) -> dict[str, Any]:
        """The latest stored version's card (task, labels, base_model, version), read once per version."""
        try:
            entry = self.store.get(name)
        except StoreError as e:
            raise NotFound(str(e), param="adapter") from None
        key = (name, entry.version)
        with self._lock:
            hit = self._cards.get(key)
        if hit is None:
            card = entry.card
            hit = {"task": card.get("task"), "labels": card.get("labels"), "base_model": card.get("base_model"),
                   "method": card.get("method"), "version": entry.version}
            with self._lock:
                self._cards[key] = hit
        return hit

    def describe(self) -> list[dict[str, Any]]:
        """``/v1/models``: the base, then every resident adapter, then stored ones not resident."""
        snap, pinned = self.model.snapshot(), set(self.model.residency.pinned)
        out = [self._base()] + [self._resident(n, e, n in pinned) for n, e in sorted(snap.items())]
        for name in (self.store.names() if self.store is not None else []):
            if name not in snap:
                try:
                    out.append(self._stored(name))
                except (ServeError, AdapterHubError):
                    continue  # removed meanwhile, or a bad card: not servable
        return out

    def describe_one(self, name: str) -> dict[str, Any]:
        """``/v1/models/{name}``: the base or one adapter (404 when unknown)."""
        if name == self.model.base_id:
            return self._base()
        self.require([name], "model")
        e = self.model.snapshot().get(name)
        return self._resident(name, e, name in self.model.residency.pinned) if e is not None else self._stored(name)

    def _base(self) -> dict[str, Any]:
        return self._model(self.model.base_id, {"kind": "base", "causal_lm": self.model.lm_head is not None})

    def _resident(self, name: str, e, pinned: bool) -> dict[str, Any]:
        return self._model(name, {"kind": "adapter", "task": e.task, "labels": e.head.labels,
                                  "method": e.method.name, "base": self.model.base_id, "resident": True,
                                  "pinned": pinned})

    def _stored(self, name: str) -> dict[str, Any]:
        c = self.card(name)
        return self._model(name, {"kind": "adapter", "task": c["task"], "labels": c["labels"], "method": c["method"],
                                   "base": c["base_model"], "resident": False, "pinned": False,
                                   "version": c["version"]})

    def _model(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "adapterhub", "adapterhub": info}

    # -- management (blocking: called in a worker thread) ----------------------------------------------------
    def load(self, source: str, name: str | None, version: int | str | None, replace: bool, pin: bool,
             revision: str | None) -> dict[str, Any]:
        target = name or (source if self.stored(source) else None)
        if target is not None and target in self.model.snapshot() and not replace:
            raise Conflict(f"an adapter named {target!r} is already loaded; pass \"replace\": true to swap in the "
                           "new version, or another \"name\"", param="name")
        self._check_source(source)
        t0 = time.perf_counter()
        try:
            entry = self.model.load_adapter(source, name=name, version=version, store=self.store, replace=replace,
                                            revision=revision, progress=False)
        except StoreError as e:  # e.g. no such version
            raise NotFound(str(e), param="source") from None
        except AdapterNameError as e:
            raise BadRequest(str(e), param="name") from None
        except AdapterHubError as e:
            raise BadRequest(f"could not load {source!r}: {e}", param="source") from None
        entries = entry if isinstance(entry, list) else [entry]
        if self.on_load is not None:
            self.on_load("api", time.perf_counter() - t0)
        if pin:
            for e in entries:
                self.model.pin(e.name)
        return {"loaded": [self.summary(e.name) for e in entries]}

    def _check_source(self, source: str) -> None:
        """404 for a directory or store name that is not there (by ``load_adapter``'s own rules: a Hub repo id,
        a path, else a store name); a Hub repo's answer is the Hub's."""
        if looks_like_repo_id(source):
            return
        if names_a_directory(source):
            if not Path(source).expanduser().is_dir():
                raise NotFound(f"no adapter directory {source!r} on the server", param="source")
        elif not self.stored(source):
            raise NotFound(f"no adapter named {source!r} in the store"
                           + (f" {self.store.root}" if self.store is not None else " (this server has none)"),
                           param="source")

    def delete(self, name: str) -> dict[str, Any]:
        if name not in self.model.snapshot():
            raise NotFound(f"adapter {name!r} is not loaded" + (" (stored adapters stay in the store)"
                                                                if self.stored(name) else ""), param="name")
        try:
            self.model.delete_adapter(name)
        except AdapterNameError as e:  # deleted meanwhile
            raise NotFound(str(e), param="name") from None
        except AdapterHubError as e:
            raise Conflict(str(e), param="name") from None
        return {"deleted": name, "stored": self.stored(name)}

    def pin(self, name: str) -> dict[str, Any]:
        self.require([name], "name")
        if name not in self.model.snapshot():
            self.model.residency.ensure([name])  # stored: load it first
        try:
            self.model.pin(name)
        except AdapterNameError as e:
            raise NotFound(str(e), param="name") from None
        return self.summary(name)

    def unpin(self, name: str) -> dict[str, Any]:
        try:
            self.model.unpin(name)
        except AdapterNameError as e:
            raise NotFound(str(e), param="name") from None
        return self.summary(name)

    def summary(self, name: str) -> dict[str, Any]:
        e = self.model.snapshot().get(name)
        if e is None:
            return {"name": name, "resident": False}
        return {"name": name, "task": e.task, "labels": e.head.labels, "method": e.method.name, "resident": True,
                "pinned": name in self.model.residency.pinned, "source": e.source}


__all__ = ["Catalog", "Conflict"]
