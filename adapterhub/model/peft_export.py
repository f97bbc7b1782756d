"""Exports for plain peft users (``save_adapter(name, dir, peft_task_model=True)``): a directory that
``AutoModelFor<Task>.from_pretrained(base)`` + ``PeftModel.from_pretrained(model, dir)`` and
``AutoPeftModelFor<Task>.from_pretrained(dir)`` load with exactly our predictions.

- module names are the task model's (``bert.encoder...`` under ``BertForSequenceClassification``), per-module
  ranks and alphas re-expressed on those names;
- the head is peft's ``modules_to_save`` (its tensors under the task model's names): only a head that the task
  class computes (``pooling="native"``, the token head where the task class is dropout + one Linear, the base's LM
  head); any other head is refused with the reason, and ``lora_only=True`` exports the adapter without it
  (``FEATURE_EXTRACTION`` on the bare backbone);
- ``base_model_name_or_path`` is a real id (for ``package:`` bases, the Hub id the package ships);
- our head files and card are written beside them, so adapterhub loads the export back exactly."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..bases import hub_model_id
from ..errors import AdapterHubError
from ..files.adapter_dir import CONFIG_FILE, KEY_PREFIX, WEIGHTS_FILE, write_json, write_safetensors
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS
from ..heads.native import TASK_AUTO_CLASSES, task_modules, task_tensors
from ..methods import methods
from .peft_layout import EXPORT_INFO, linear_paths, name_mappings
from .writing import write_head_and_card

#: adapterhub task -> peft task_type
PEFT_TASK_TYPES = {SEQ_CLS: "SEQ_CLS", TOKEN_CLS: "TOKEN_CLS", CAUSAL_LM: "CAUSAL_LM"}


def _task_model(model, auto_class: str):
    import transformers

    with torch.device("meta"):
        return getattr(transformers, auto_class).from_config(copy.deepcopy(model.base.config))


def task_names(model, task_model, targets: list[str]) -> dict[str, str]:
    """Our path -> the module's name in ``task_model``, for every target."""
    have = {n for n, _m in task_model.named_modules()}
    paths = linear_paths(model)
    for ours, theirs in name_mappings(model):
        names = {p: theirs + p[len(ours):] for p in paths if p.startswith(ours)}
        if all(names.get(t) in have for t in targets):
            return {t: names[t] for t in targets}
    raise AdapterHubError(f"cannot name the adapted modules in {type(task_model).__name__} (targets such as "
                          f"{targets[:2]})")


def _plan(model, name: str, lora_only: bool):
    """(peft task type, transformers auto class, head module -> task-model name) of the export."""
    e = model.entry(name)
    if not e.method.peft_loadable:
        loadable = ", ".join(m.display_name for m in methods().values() if m.peft_loadable)
        raise AdapterHubError(f"adapter {name!r} ({e.method.display_name}): plain peft has no such type, so it "
                              f"cannot load it (peft loads: {loadable})")
    if e.task == CAUSAL_LM:
        return "CAUSAL_LM", "AutoModelForCausalLM", {}
    if lora_only:
        if model.lm_head is not None:
            return "CAUSAL_LM", "AutoModelForCausalLM", {}
        return "FEATURE_EXTRACTION", "AutoModel", {}
    try:
        return PEFT_TASK_TYPES[e.task], TASK_AUTO_CLASSES[e.task], task_modules(e.head, model.base)
    except AdapterHubError as err:
        raise AdapterHubError(f"adapter {name!r}: {err}; pass lora_only=True (--lora-only) to export the adapter "
                              "without its head (plain peft then gives the base model's hidden states)") from None


def write_peft_task_export(model, name: str, directory, lora_only: bool = False, metrics: dict | None = None,
                           extra: dict | None = None) -> None:
    """Write adapter ``name`` as a peft task-model export into an existing (empty) directory (see the module)."""
    e = model.entry(name)
    if not e.method.module_files:
        raise AdapterHubError(f"adapter {name!r}: a peft task-model export re-keys adapted modules under the task "
                              f"model's names; {e.method.display_name} files are not keyed by module, and "
                              "save_adapter already writes them in peft's format")
    task_type, auto_class, head_names = _plan(model, name, lora_only)
    task_model = _task_model(model, auto_class)
    names = task_names(model, task_model, e.targets)
    saved = sorted(set(head_names.values()))
    inside = [n for n in names.values() if any(n == s or n.startswith(s + ".") for s in saved)]
    if inside:
        raise AdapterHubError(f"adapter {name!r} adapts {inside[:2]}, inside its task head {saved}: peft cannot "
                              "hold a module both as modules_to_save and adapted")
    units = model.adapter_units(name)
    base_id, same_weights = hub_model_id(model.base_id)
    config = e.method.renamed(e.config, names)
    cfg = e.method.to_adapter_config(config, sorted(names.values()), base_id,
                                     units={names[p]: u for p, u in units.items()})
    cfg.update(task_type=task_type, modules_to_save=saved or None)
    tensors = {f"{KEY_PREFIX}{names[p]}.{suf}": t for p, u in units.items()
               for suf, t in e.method.unit_file_state(u).items()}
    if head_names:
        tensors.update({f"{KEY_PREFIX}{k}": t for k, t in task_tensors(e.head, model.base).items()})
    d = Path(directory)
    write_json(d / CONFIG_FILE, cfg, sort_keys=False)
    write_safetensors(d / WEIGHTS_FILE, tensors)
    info = {"task_type": task_type, "task_class": type(task_model).__name__, "base_model": base_id,
            "same_base_weights": same_weights, "modules_to_save": saved, "lora_only": bool(lora_only)}
    write_head_and_card(model, name, d, metrics, {**(extra or {}), EXPORT_INFO: info})
