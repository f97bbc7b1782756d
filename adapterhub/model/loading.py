"""Reading an adapter directory (with its card) into units and a head for a model: everything is read and checked
here, and nothing touches the model; the model attaches the result last (all or nothing). Plain peft directories
(no card) are read by :mod:`.peft_import`."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from ..files.adapter_dir import (CONFIG_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, WEIGHTS_FILE, card_sha256,
                                 read_json, read_safetensors, refuse_pickle_only)
from ..heads.native import check_task_copies
from ..files.card import AdapterCard, check_base
from ..atomic import sweep_stale
from ..errors import AdapterFileError, AdapterHubError, AdapterNameError, BaseMismatchError
from ..heads import CAUSAL_LM, Head, head_from_config
from ..methods import Method, MethodConfig, method_for_peft_type
from ..names import names_a_directory
from .entry import AdapterEntry
from .peft_layout import EXPORT_INFO, is_identity, read_peft_adapter, resolved_config, split_file
from .units import ModuleMap, build_units, has_module, target_modules


def check_replacement(model, name: str, task: str, labels, replace: bool, where: str) -> None:
    """``name`` must be new, or loaded and ``replace`` given; the error says what a replacement would change."""
    loaded = model.find(name)
    if loaded is not None and not replace:
        old_labels = loaded.head.labels if loaded.head is not None else None
        changes = [f"task {loaded.task!r} -> {task!r}"] if loaded.task != task else []
        if old_labels != labels:
            changes.append(f"labels {old_labels} -> {labels}")
        what = "; it would change " + ", ".join(changes) if changes else ""
        raise AdapterNameError(f"{where}: an adapter named {name!r} is already loaded{what}; pass replace=True to "
                               "swap the new version in, or load it under another name")
    model.check_new_name(name, replace=replace)


@dataclasses.dataclass
class ReadAdapter:
    """An adapter read from disk and checked against a base: attaching it cannot fail. It holds either trainable
    ``units`` or bank ``rows`` (the inference layout), by module path."""

    entry: AdapterEntry
    units: dict[str, nn.Module] | None
    rows: dict[str, dict] | None
    head: Head


def locate(source: str | os.PathLike, version, store) -> Path:
    """The adapter directory ``source`` names, by one rule (:func:`adapterhub.names.names_a_directory`): a path
    (``./ts``, ``out/ts``, an absolute path, a ``Path``) is a directory; a bare name is the store entry (at
    ``version``; default latest), never a same-named directory in the working directory."""
    from ..store import Store

    if names_a_directory(source):
        p = Path(source).expanduser()
        if not p.exists():
            sweep_stale(p.parent)  # an overwrite killed between its two renames is rolled back
        if p.is_dir():
            return p
        raise AdapterFileError(f"{p} is not a directory" if p.exists() else f"no adapter directory {str(p)!r}")
    s = str(source)
    st = store or Store()
    if s in st:
        return st.get(s, version).path
    here = f"; the directory ./{s} is not read for a bare name: load it as './{s}'" if Path(s).is_dir() else ""
    raise AdapterFileError(f"no adapter named {s!r} in the store {st.root}{here}")


def _method_and_config(directory: Path, card: AdapterCard) -> tuple[Method, MethodConfig, dict]:
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
    return method, config, cfg_dict


def _targets(mm: ModuleMap, method: Method, config: MethodConfig, spec, directory: Path) -> list[str]:
    if isinstance(spec, list) and spec and all(isinstance(t, str) and has_module(mm, t) for t in spec):
        return list(spec)  # exact module paths, as adapterhub writes them
    # peft-style names (module-name suffixes, a regex, "all-linear") or none: resolve on this base
    targets = method.resolve_targets(config, mm.base)
    if isinstance(spec, list):
        unmatched = [t for t in spec if not any(p == t or p.endswith(f".{t}") for p in targets)]
        if unmatched:
            raise BaseMismatchError(f"{directory / CONFIG_FILE}: target_modules {unmatched[:3]} match no module of "
                                    "this base (adapter made for another base?)")
    return targets


def _module_states(per_module: dict[str, dict], targets: list[str], directory: Path) -> dict[str, dict]:
    """The file's tensors of each target module: no module the config does not target, none missing."""
    extra = sorted(set(per_module) - set(targets))
    if extra:
        raise BaseMismatchError(f"{directory / WEIGHTS_FILE}: weights for modules not in adapter_config "
                                f"target_modules: {extra[:3]}")
    missing = [p for p in targets if p not in per_module]
    if missing:
        raise AdapterFileError(f"{directory / WEIGHTS_FILE}: no weights for target module {missing[0]!r}")
    return per_module


def build_read(mm: ModuleMap, method: Method, config: MethodConfig, targets: list[str], per_module: dict[str, dict],
               trainable: bool, where) -> tuple[dict[str, nn.Module] | None, dict[str, dict] | None]:
    """(trainable units, None) or (None, bank rows) holding the file's tensors ``per_module``, checked against the
    base's modules (every value comes from the file)."""
    if trainable or not method.bankable:
        units = build_units(mm, method, config, targets, init=False)
        for path, unit in units.items():
            _checked(method.load_unit_file_state, where, unit, per_module[path], path)
        return units, None
    return None, {path: _checked(method.file_row, where, config, path, lin, per_module[path])
                  for path, lin in target_modules(mm, method, targets).items()}


def _checked(fn, where, *args):
    try:
        return fn(*args)
    except AdapterHubError as e:
        raise BaseMismatchError(f"{where}: {e}") from None


def _file_adapter(model, method: Method, config: MethodConfig, cfg_dict: dict, directory: Path, card: AdapterCard):
    """(config, targets, tensors per module, other tensors) of the weights file, read once and sha256-checked
    against the card. Our own layout is read as written (exact module paths); a peft task-model layout (our
    ``peft_task_model`` exports: module names with the task model's prefix, the head as ``modules_to_save``)
    with peft's semantics (:mod:`.peft_layout`)."""
    tensors = read_safetensors(directory / WEIGHTS_FILE, "the adapter weights",
                               card_sha256(card, WEIGHTS_FILE, str(directory)))
    if not method.file_keys or not method.module_files:  # the units (or the method's own keys) say which
        targets = _targets(model.module_map, method, config, cfg_dict.get("target_modules"), directory)
        suffixes = set(method.file_keys) or {k for u in build_units(model.module_map, method, config, targets).values()
                                             for k in method.unit_file_state(u)}
        per_module = _checked(method.split_file_keys, directory / WEIGHTS_FILE, tensors, suffixes)
        return config, targets, _module_states(per_module, targets, directory), {}
    modules, others = split_file(tensors, set(method.file_keys), str(directory / WEIGHTS_FILE))
    if is_identity(modules, others, model):
        targets = _targets(model.module_map, method, config, cfg_dict.get("target_modules"), directory)
        target_modules(model.module_map, method, targets)  # the base's own layers (not another adapter's), checked first
        return config, targets, _module_states(modules, targets, directory), {}
    got = read_peft_adapter(model, method, cfg_dict, tensors, str(directory / CONFIG_FILE))
    return got.config, got.targets, got.per_module, got.others


def _head(directory: Path, card: AdapterCard, model) -> Head:
    head_cfg = read_json(directory / HEAD_CONFIG_FILE, "the task head config")
    if head_cfg.get("task") != card.task:
        raise AdapterFileError(f"{directory}: head task {head_cfg.get('task')!r} != card task {card.task!r}")
    if head_cfg.get("labels") != card.labels:
        raise AdapterFileError(f"{directory}: head labels {head_cfg.get('labels')} != card labels {card.labels}")
    hidden_size = model.hidden_size
    head = head_from_config(head_cfg, hidden_size, init=False, base=model.base)  # every value comes from the file
    head_state = read_safetensors(directory / HEAD_WEIGHTS_FILE, "the task head weights",
                                  card_sha256(card, HEAD_WEIGHTS_FILE, str(directory)))
    expected = head.state_dict()
    if set(head_state) != set(expected):
        raise AdapterFileError(f"{directory / HEAD_WEIGHTS_FILE}: tensors {sorted(head_state)} != expected "
                               f"{sorted(expected)}")
    for k, t in expected.items():
        if tuple(head_state[k].shape) != tuple(t.shape):
            raise AdapterFileError(
                f"{directory / HEAD_WEIGHTS_FILE}: {k} has shape {tuple(head_state[k].shape)}, expected "
                f"{tuple(t.shape)} ({len(head.labels or [])} labels, hidden size {hidden_size})")
    with torch.no_grad():  # every tensor of the (uninitialised) head, straight from the file
        for k, t in expected.items():
            t.copy_(head_state[k])
    return head


def read_adapter(model, directory: Path, name: str | None = None, allow_base_mismatch: bool = False,
                 replace: bool = False, trainable: bool = False) -> ReadAdapter:
    """Read and check the adapter in ``directory`` (with its card) for ``model`` (registered as ``name``, default
    the card's; ``replace``: may replace a loaded adapter of that name), as bank rows, or as trainable units."""
    directory = Path(directory)
    refuse_pickle_only(directory)
    card = AdapterCard.read(directory)
    method, config, cfg_dict = _method_and_config(directory, card)
    name = card.name if name is None else name
    check_replacement(model, name, card.task, card.labels, replace, str(directory))
    check_base(card, model.base_fingerprint, model.base_id, str(directory), allow_base_mismatch)
    config = resolved_config(method, config, model.base, directory / CONFIG_FILE)
    if card.task == CAUSAL_LM and model.lm_head is None:
        raise BaseMismatchError(f"{directory}: a causal-lm adapter needs a base with an LM head")
    config, targets, per_module, others = _file_adapter(model, method, config, cfg_dict, directory, card)
    units, rows = build_read(model.module_map, method, config, targets, per_module, trainable, directory)
    head = _head(directory, card, model)
    check_task_copies(head, others, model.base, str(directory / WEIGHTS_FILE))
    extra = {k: v for k, v in card.extra.items()  # rewritten on save
             if k not in method.card_extra_keys and k != EXPORT_INFO}
    entry = AdapterEntry(name, config, method, card.task, targets, metrics=dict(card.metrics),
                         source=str(directory), extra=extra)
    return ReadAdapter(entry, units, rows, head)
