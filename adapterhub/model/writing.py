"""Writing an adapter directory from a model: peft's ``adapter_config.json`` + ``adapter_model.safetensors`` (as
the adapter's method writes them), the task head files, and the card (with the sha256 of every file)."""
from __future__ import annotations

import os
from pathlib import Path

from ..files.adapter_dir import (ADAPTER_FILES, CONFIG_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, WEIGHTS_FILE,
                                 sha256_file, write_json, write_safetensors)
from ..files.card import AdapterCard
from ..methods import get_method
from ..version import __version__


def adapter_card(model, name: str, files: dict[str, str], metrics: dict | None = None,
                 extra: dict | None = None) -> AdapterCard:
    e = model.entry(name)
    head = model.entry(name).head
    return AdapterCard(
        name=name, method=e.method.name, method_config=e.config.to_dict(), task=e.task, labels=head.labels,
        base_model=model.base_id, base_fingerprint=dict(model.base_fingerprint),
        num_parameters=model.num_parameters(name, include_head=False),
        num_head_parameters=sum(p.numel() for p in head.parameters()),
        metrics=dict(e.metrics if metrics is None else metrics), library_version=__version__, files=files,
        extra={**e.extra, **(extra or {}), **e.method.card_extra(model.adapter_units(name))})


def write_adapter_files(model, name: str, directory: str | os.PathLike, convert_to: str | None = None,
                        metrics: dict | None = None, extra: dict | None = None) -> None:
    """Write adapter ``name`` into an existing (empty) directory. ``convert_to``: as the equivalent adapter of
    another method, where its plug-in can (e.g. AdaLoRA as a plain LoRA with per-module ranks in
    ``rank_pattern``). ``metrics`` (replacing the adapter's own) and ``extra`` (added) go into the card."""
    e = model.entry(name)
    d = Path(directory)
    units = model.adapter_units(name)
    method, config = e.method, e.config
    if convert_to is not None and convert_to != method.name:
        method = get_method(convert_to)
        cfg_dict, per_module = e.method.convert(config, units, method.name, model.base_id)
        config = method.from_adapter_config(cfg_dict)
    else:
        cfg_dict = method.to_adapter_config(config, e.targets, model.base_id, units=units)
        per_module = {p: method.unit_file_state(unit) for p, unit in units.items()}
    tensors = {method.file_key(p, suf): t for p, ts in per_module.items() for suf, t in ts.items()}
    write_json(d / CONFIG_FILE, cfg_dict, sort_keys=False)  # pattern order is meaning: kept
    write_safetensors(d / WEIGHTS_FILE, tensors)
    card = write_head_and_card(model, name, d, metrics, extra)
    if method is not e.method:
        card.method, card.method_config = method.name, config.to_dict()
        card.num_parameters = sum(t.numel() for t in tensors.values())
        card.extra = {**(extra or {}), **e.method.card_extra(units), "converted_from": e.method.name}
        card.write(d)


def write_head_files(head, d: Path) -> dict[str, str]:
    """The head files beside the peft files already in ``d``; returns the sha256 of all four."""
    write_json(d / HEAD_CONFIG_FILE, head.config())
    write_safetensors(d / HEAD_WEIGHTS_FILE, dict(head.state_dict()))
    return {f: sha256_file(d / f) for f in ADAPTER_FILES}


def write_head_and_card(model, name: str, d: Path, metrics: dict | None, extra: dict | None) -> AdapterCard:
    """Beside the peft files already in ``d``: adapter ``name``'s head files, then its card (sha256 of all)."""
    card = adapter_card(model, name, write_head_files(model.entry(name).head, d), metrics, extra)
    card.write(d)
    return card


def write_plain_completion(model, read, directory: Path, extra: dict) -> AdapterCard:
    """Beside a plain peft adapter's own files in ``directory`` (read onto ``model`` as trainable units: ``read``, a
    :class:`~adapterhub.model.loading.ReadAdapter`), write its head files and a card vouching for all of them."""
    e, head, units = read.entry, read.head, read.units
    d = Path(directory)
    files = write_head_files(head, d)
    card = AdapterCard(
        name=e.name, method=e.method.name, method_config=e.config.to_dict(), task=e.task, labels=head.labels,
        base_model=model.base_id, base_fingerprint=dict(model.base_fingerprint),
        num_parameters=sum(p.numel() for u in units.values() for p in u.parameters()),
        num_head_parameters=sum(p.numel() for p in head.parameters()), library_version=__version__,
        files=files, extra={**e.extra, **extra})
    card.write(d)
    return card
