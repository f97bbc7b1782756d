"""peft's file layout on this base. peft names a module as the model it was given names it: a task model
(``bert.encoder.layer.0...`` under ``BertForSequenceClassification``), the causal LM (``model.layers.0...``) or the
bare backbone (``encoder.layer.0...``); its patterns and target names match those names, and its file holds
``base_model.model.<name>.<tensor>`` for the adapted modules plus the ``modules_to_save`` copies (a task head).
Here a file's module names are mapped onto this base's modules (a backbone prefix added or dropped, nothing else),
the method resolves peft's config on peft's names (:meth:`~adapterhub.methods.Method.peft_targets`,
:meth:`~adapterhub.methods.Method.from_peft_config`), and the file must hold exactly the modules peft adapts."""
from __future__ import annotations

import dataclasses

import torch

from ..errors import AdapterFileError, AdapterHubError, BaseMismatchError
from ..files.adapter_dir import KEY_PREFIX
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS
from ..methods import Method, MethodConfig, targetable_modules

#: the card entry describing a peft task-model export (that directory only: not carried into later saves)
EXPORT_INFO = "peft_export"
#: peft's ``task_type`` -> adapterhub's task
PEFT_TASKS = {"SEQ_CLS": SEQ_CLS, "TOKEN_CLS": TOKEN_CLS, "CAUSAL_LM": CAUSAL_LM}


@dataclasses.dataclass
class PeftAdapter:
    """A peft file read onto this base: the config resolved with peft's semantics, the targeted module paths
    (ours), their tensors, the other tensors (``modules_to_save`` copies, by peft name), and the name map."""

    config: MethodConfig
    targets: list[str]
    per_module: dict[str, dict[str, torch.Tensor]]
    others: dict[str, torch.Tensor]
    keys: dict[str, str]  # our path -> peft's name, for every linear-like layer of the base


def split_file(tensors: dict[str, torch.Tensor], suffixes: set[str], where: str,
               refused: dict[str, str] | None = None):
    """``({peft module name: {suffix: tensor}}, {peft tensor name: tensor})``: the adapter's tensors, the rest.
    ``refused``: tensor names the method refuses (name part -> why, e.g. an adapter on an embedding layer)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    others: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if not key.startswith(KEY_PREFIX):
            raise AdapterFileError(f"{where}: key {key!r} does not start with {KEY_PREFIX!r}")
        rest = key[len(KEY_PREFIX):]
        why = next((w for part, w in (refused or {}).items() if f".{part}" in rest), None)
        if why is not None:
            raise AdapterFileError(f"{where}: tensor {key!r}: {why}")
        suf = next((s for s in sorted(suffixes, key=len, reverse=True) if rest.endswith("." + s)), None)
        if suf is None:
            others[rest] = t
        else:
            modules.setdefault(rest[: -len(suf) - 1], {})[suf] = t
    return modules, others


def linear_paths(model) -> list[str]:
    return [p for p, _m in targetable_modules(model.base)]


def output_paths(model) -> set[str]:
    lm_head = model.lm_head
    return {p for p, m in model.base.named_modules() if lm_head is not None and m is lm_head}


def name_mappings(model) -> list[tuple[str, str]]:
    """(our prefix, peft's prefix) pairs to try: the same names; else the backbone named bare by one side."""
    base = model.base
    bmp = getattr(base, "base_model_prefix", "") or ""
    if not bmp:
        return [("", "")]
    if isinstance(getattr(base, bmp, None), torch.nn.Module):  # a task/LM model: peft may have had the backbone
        return [("", ""), (bmp + ".", "")]
    return [("", ""), ("", bmp + ".")]  # a bare backbone: peft may have had a task model


def name_map(model, file_modules: set[str], where: str) -> dict[str, str]:
    """Our path -> peft's name of every linear-like layer, under the first mapping that names every module of
    the file; a file module this base does not have is refused."""
    paths = linear_paths(model)
    best: set[str] = set(file_modules)
    for ours, theirs in name_mappings(model):
        keys = {p: theirs + p[len(ours):] for p in paths if p.startswith(ours)}
        unmatched = file_modules - set(keys.values())
        if not unmatched:
            return keys
        best = min(best, unmatched, key=len)
    raise BaseMismatchError(f"{where}: weights for modules {sorted(best)[:3]} that are not Linear or Conv1D layers "
                            "of this base (adapter made for another base?)")


def read_peft_adapter(model, method: Method, cfg: dict, tensors: dict[str, torch.Tensor], where: str) -> PeftAdapter:
    """The adapter a peft config ``cfg`` and its tensors describe on this base, with peft's semantics: the modules
    peft would adapt must be exactly the file's, and every value comes from the file."""
    if not method.file_keys or not method.peft_loadable:
        raise AdapterFileError(f"{where}: {method.display_name} adapters have no plain peft format")
    if not method.module_files:  # one table for the model (prefix tuning): no module names to map
        config = method.from_peft_config(cfg, None, where)
        config.validate()
        config = resolved_config(method, config, model.base, where)
        try:
            per_module = method.split_file_keys(tensors, set(method.file_keys))
        except AdapterHubError as e:
            raise AdapterFileError(f"{where}: {e}") from None
        return PeftAdapter(config, method.resolve_targets(config, model.base), per_module, {}, {})
    modules, others = split_file(tensors, set(method.file_keys), where, method.peft_refused_tensors)
    keys = name_map(model, set(modules), where)
    targets = method.peft_targets(cfg, keys, output_paths(model))
    adapted = {keys[p] for p in targets}
    extra = sorted(set(modules) - adapted)
    if extra:
        raise BaseMismatchError(f"{where}: weights for modules not in adapter_config target_modules (peft would not "
                                f"load them): {extra[:3]}")
    missing = [keys[p] for p in targets if keys[p] not in modules]
    if missing:
        raise AdapterFileError(f"{where}: no weights for target module {missing[0]!r} (peft adapts it)")
    if not targets:
        raise BaseMismatchError(f"{where}: target_modules={cfg.get('target_modules')!r} adapt no module of this base")
    config = method.from_peft_config(cfg, {p: keys[p] for p in targets}, where)
    config.validate()
    config = resolved_config(method, config, model.base, where)
    return PeftAdapter(config, targets, {p: modules[keys[p]] for p in targets}, others, keys)


def resolved_config(method: Method, config: MethodConfig, base, where) -> MethodConfig:
    """``config`` with its base-dependent defaults filled in and checked against ``base``
    (:meth:`~adapterhub.methods.Method.resolve_config`); a mismatch names ``where``."""
    try:
        return method.resolve_config(config, base)
    except AdapterHubError as e:
        raise BaseMismatchError(f"{where}: {e}") from None


def is_identity(modules: dict, others: dict, model) -> bool:
    """Whether a file is in our own layout: no tensor besides the adapter's, every module named as ours."""
    if others:
        return False
    paths = set(linear_paths(model))
    return all(m in paths for m in modules)
