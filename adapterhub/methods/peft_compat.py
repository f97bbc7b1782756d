"""Helpers for methods whose files are peft's own formats: peft's per-architecture default targets, JSON-ready
peft config dicts, and peft's exact semantics for the fields we accept from a peft ``adapter_config.json``
(pattern precedence, target matching with ``exclude_modules`` / ``layers_to_transform`` / ``layers_pattern``), and
the refusal of the fields we do not implement. Mirrors peft 0.21 (``peft.utils.other.get_pattern_key``,
``peft.tuners.tuners_utils.check_target_module_exists``); the tests use peft itself as the oracle."""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from torch import nn

from ..errors import AdapterFileError

#: peft LoRA fields that describe the file or only an initialisation whose values the file then overrides:
#: accepted, no effect on the outputs
LORA_METADATA = ("peft_type", "peft_version", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
                 "megatron_core", "qalora_group_size", "eva_config", "corda_config", "loftq_config", "lora_ga_config",
                 "ensure_weight_tying", "runtime_config")
#: peft LoRA fields that change the computation and that adapterhub implements with peft's semantics
LORA_IMPLEMENTED = ("r", "lora_alpha", "use_rslora", "target_modules", "exclude_modules", "layers_to_transform",
                    "layers_pattern", "rank_pattern", "alpha_pattern", "lora_dropout", "fan_in_fan_out",
                    "modules_to_save", "task_type")
#: peft LoRA fields that change the computation and that adapterhub does not implement: refused unless they hold
#: one of the values listed (their defaults), with the reason
LORA_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "use_dora": ((False, None), "DoRA (weight-decomposed LoRA: a learned magnitude rescales every output column) is "
                                "not implemented by adapterhub's routed layers; merge it into the base with peft "
                                "(merge_and_unload) or train a LoRA"),
    "bias": (("none", None), "peft trains the base layers' biases with bias='all'/'lora_only'; adapterhub keeps the base "
                        "frozen"),
    "lora_bias": ((False, None), "a trained bias on lora_B is not implemented"),
    "init_lora_weights": ((True, False, "gaussian", "eva", "orthogonal"),
                          "this initialisation changes the base weights (PiSSA, OLoRA, CorDA, LoftQ, ...): convert it "
                          "to a plain LoRA with peft (save_pretrained(..., path_initial_model_for_weight_conversion=)) "
                          "first"),
    "alora_invocation_tokens": ((None,), "aLoRA applies the adapter only after its invocation tokens; adapterhub "
                                         "applies adapters to every token"),
    "layer_replication": ((None, []), "layer replication changes the base model's layers"),
    "target_parameters": ((None, []), "LoRA on bare parameters (e.g. MoE experts) is not implemented"),
    "trainable_token_indices": ((None, [], {}), "trainable token embeddings are not implemented"),
    "use_qalora": ((False, None), "QA-LoRA (pooled inputs) is not implemented"),
    "use_bdlora": ((None, False), "block-diagonal LoRA is not implemented"),
    "arrow_config": ((None,), "Arrow routing is not implemented"),
    "kasa_config": ((None,), "KaSA is not implemented"),
    "monteclora_config": ((None,), "MonteCLoRA is not implemented"),
    "velora_config": ((None,), "VeLoRA is not implemented"),
    "megatron_config": ((None,), "Megatron parallel layers are not implemented"),
}
#: peft LoRA tensors of layer kinds adapterhub does not adapt
LORA_REFUSED_TENSORS = {
    "lora_embedding_A": "LoRA on an embedding layer is not implemented by adapterhub (Linear and Conv1D layers are)",
    "lora_embedding_B": "LoRA on an embedding layer is not implemented by adapterhub (Linear and Conv1D layers are)",
    "lora_magnitude_vector": "DoRA is not implemented by adapterhub",
}
_EMPTY = (None, False, "", [], {})


def default_lora_targets(base: nn.Module) -> list[str] | str:
    """peft's default LoRA targets for the base's ``model_type`` (e.g. query/value for BERT), else all linears."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

    model_type = getattr(getattr(base, "config", None), "model_type", None)
    return list(MAP.get(model_type, [])) or "all-linear"


def default_ia3_modules(base: nn.Module) -> tuple[list[str] | None, list[str] | None]:
    """peft's default IA3 ``(target_modules, feedforward_modules)`` for the base's ``model_type`` (None: unknown)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    model_type = getattr(getattr(base, "config", None), "model_type", None)
    targets, ff = TARGETS.get(model_type), FF.get(model_type)
    return (list(targets) if targets is not None else None), (list(ff) if ff is not None else None)


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """A peft config's ``to_dict()`` with sets sorted and enums as their values."""
    out = {}
    for k, v in d.items():
        if isinstance(v, set):
            v = sorted(v)
        elif hasattr(v, "value") and not isinstance(v, (int, float, str, bool)):
            v = v.value  # enums
        out[k] = v
    return out


def check_peft_fields(d: Mapping[str, Any], accepted: Iterable[str], refused: Mapping[str, tuple[tuple, str]],
                      where: str) -> None:
    """Refuse, naming the field, every field of a peft config ``d`` that changes the computation and is not
    implemented: a ``refused`` field holding another value than its allowed ones, and an unknown field holding
    anything but an empty value (a newer peft's field: we cannot tell what it does)."""
    accepted = set(accepted)
    for key, value in d.items():
        if key in accepted:
            continue
        if key in refused:
            allowed, why = refused[key]
            if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
                raise AdapterFileError(f"{where}: peft field {key}={value!r} is not supported: {why}")
        elif value not in _EMPTY:
            raise AdapterFileError(f"{where}: unknown peft field {key}={value!r}: refused, since adapterhub cannot "
                                   "tell whether it changes the computation (an adapter from a newer peft?)")


def pattern_key(pattern_keys: Iterable[str], key: str) -> str | None:
    """The first pattern (in the given order: the file's) matching module name ``key``, as peft picks it
    (``re.match(rf"(.*\\.)?({pattern})$", key)``), or None."""
    for pattern in pattern_keys:
        if re.match(rf"(.*\.)?({pattern})$", key):
            return pattern
    return None


def _layer_index_ok(d: Mapping[str, Any], key: str) -> bool:
    indexes, patterns = d.get("layers_to_transform"), d.get("layers_pattern")
    if indexes is None or (isinstance(indexes, list) and not indexes):
        return True
    match = None
    if not patterns:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
            if match is not None:
                break
    if match is None:
        return False
    idx = int(match.group("idx"))
    return idx == indexes if isinstance(indexes, int) else idx in indexes


def peft_target_match(d: Mapping[str, Any], key: str, linear_keys: set[str] | None = None) -> bool:
    """Whether peft puts an adapter on module ``key`` (its name in the peft model) for config ``d``.
    ``linear_keys``: the names "all-linear" expands to (every linear-like layer but the output embedding)."""
    excl = d.get("exclude_modules")
    if excl:
        if isinstance(excl, str):
            if re.fullmatch(excl, key):
                return False
        elif key in excl or any(key.endswith(f".{e}") for e in excl):
            return False
    if any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in d.get("modules_to_save") or ()):
        return False
    targets = d.get("target_modules")
    if isinstance(targets, str) and targets.lower() == "all-linear":
        targets = sorted(linear_keys or ())
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if not targets:
        return False
    if key in targets:
        return True
    return any(key.endswith(f".{t}") for t in targets) and _layer_index_ok(d, key)


def check_target_spec(d: Mapping[str, Any], where: str) -> None:
    """The shapes peft accepts for the target fields (peft's own config checks)."""
    for k in ("rank_pattern", "alpha_pattern"):
        if d.get(k) is not None and not isinstance(d[k], dict):
            raise AdapterFileError(f"{where}: {k} must be a mapping of module pattern -> value, got {d[k]!r}")
    tm = d.get("target_modules")
    if tm is not None and not isinstance(tm, (str, list)):
        raise AdapterFileError(f"{where}: target_modules must be a list of names or a regex, got {tm!r}")
    lt = d.get("layers_to_transform")
    for k in ("layers_to_transform", "layers_pattern"):
        if d.get(k) not in (None, []) and isinstance(tm, str):
            raise AdapterFileError(f"{where}: {k} cannot be used when target_modules is a str (peft refuses it "
                                   "too)")
    if d.get("layers_pattern") and lt in (None, []):
        raise AdapterFileError(f"{where}: layers_pattern needs layers_to_transform (peft refuses it too)")
