"""Prefix tuning (Li & Liang 2021): ``num_virtual_tokens`` learned key/value vectors prepended to every attention
layer. Files are peft's ``PREFIX_TUNING`` format (``adapter_model.safetensors`` holds ``prompt_embeddings``
``[num_virtual_tokens, num_layers * 2 * token_dim]``; grouped-query attention as peft provisions it: ``token_dim`` =
key/value heads x head size, ``num_attention_heads`` = key/value heads), loadable by ``peft.PeftModel``.

Not a module-level adapter: its kind (:mod:`.prefix_kind`) is input-level, so a batch mixes rows with different
prefixes, rows of module-level adapters and rows without a prefix in one forward (and one ``generate``).
``prefix_projection=True`` trains through peft's reparametrisation (an embedding and a two-layer MLP); the files,
and every loaded copy, hold its output table, as peft's do.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from ..errors import AdapterFileError, AdapterHubError
from ..routing import INPUTS_PATH
from .base import Method, MethodConfig, check_shapes
from .peft_compat import LORA_METADATA, check_peft_fields, jsonable
from .prefix_kind import PrefixKind, prefix_row
from .registry import register_method

_WEIGHTS = "prompt_embeddings"


@dataclasses.dataclass
class PrefixTuning(MethodConfig):
    """Prefix tuning config. ``num_layers``, ``token_dim`` and ``num_attention_heads`` describe the base's attention
    (filled in from it, as peft does; given ones must match it); ``encoder_hidden_size`` is the projection's width
    (default ``token_dim``); ``task_type`` is peft's (``CAUSAL_LM`` for bases with an LM head, else
    ``FEATURE_EXTRACTION``: what ``PeftModel.from_pretrained`` builds)."""

    method = "prefix"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    num_layers: int | None = None
    token_dim: int | None = None
    num_attention_heads: int | None = None
    task_type: str | None = None

    def validate(self) -> None:
        if isinstance(self.num_virtual_tokens, bool) or not isinstance(self.num_virtual_tokens, int) \
                or self.num_virtual_tokens < 1:
            raise AdapterHubError(f"PrefixTuning.num_virtual_tokens must be a positive int, got "
                                  f"{self.num_virtual_tokens!r}")
        if not isinstance(self.prefix_projection, bool):
            raise AdapterHubError(f"PrefixTuning.prefix_projection must be true or false, got "
                                  f"{self.prefix_projection!r}")
        for key in ("encoder_hidden_size", "num_layers", "token_dim", "num_attention_heads"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise AdapterHubError(f"PrefixTuning.{key} must be a positive int (or unset: from the base), got {v!r}")
        if self.task_type is not None and not isinstance(self.task_type, str):
            raise AdapterHubError(f"PrefixTuning.task_type must be peft's task type name, got {self.task_type!r}")
        if self.token_dim is not None and self.num_attention_heads is not None \
                and self.token_dim % self.num_attention_heads:
            raise AdapterHubError(f"PrefixTuning.token_dim ({self.token_dim}) is not a multiple of "
                                  f"PrefixTuning.num_attention_heads ({self.num_attention_heads})")


def base_geometry(base: nn.Module) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of a transformers base's attention, read as peft reads them."""
    cfg = getattr(base, "config", None)
    get = (lambda *keys: next((getattr(cfg, k) for k in keys if getattr(cfg, k, None) is not None), None))
    layers, hidden = get("num_hidden_layers", "num_layers", "n_layer"), get("hidden_size", "n_embd", "d_model")
    heads = get("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
    if None in (layers, hidden, heads):
        raise AdapterHubError(f"PrefixTuning: cannot read layers/hidden size/heads from {type(base).__name__}'s config")
    head_dim = get("head_dim") or hidden // heads
    return int(layers), int(get("num_key_value_heads") or heads), int(head_dim)


def check_architecture(base: nn.Module) -> None:
    """Refuse bases whose attention does not take prefix key/values (named), as peft supports them."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_PREFIX_TUNING_POSTPROCESS_MAPPING as SPECIAL

    cfg = getattr(base, "config", None)
    arch, model_type = type(base).__name__, getattr(cfg, "model_type", None)
    backbone = getattr(base, "base_model", base)
    params = inspect.signature(backbone.forward).parameters if cfg is not None else {}
    why = ("it is not a transformers model" if cfg is None else
           "it is an encoder-decoder model" if getattr(cfg, "is_encoder_decoder", False) else
           "its cache needs a model-specific layout" if model_type in SPECIAL else
           "its layers differ in attention shape" if cfg.to_dict().get("per_layer_config") is not None
           or cfg.to_dict().get("global_head_dim") is not None else
           f"{type(backbone).__name__}.forward takes no past key/values"
           if not {"cache", "past_key_values"} & set(params) else None)
    if why:
        raise AdapterHubError(f"PrefixTuning: the base {arch} (model_type {model_type!r}) cannot hold prefix "
                              f"key/values: {why}")


def _task_type(base: nn.Module) -> str:
    get = getattr(base, "get_output_embeddings", None)
    return "CAUSAL_LM" if get is not None and get() is not None else "FEATURE_EXTRACTION"


class PrefixUnit(nn.Module):
    """One adapter's prefixes: a table ``[P, layers * 2 * token_dim]`` (``embedding``, peft's name), or, while
    training with ``prefix_projection``, an embedding ``[P, token_dim]`` through a two-layer MLP (``transform``)."""

    def __init__(self, config: PrefixTuning, dtype, device, init: bool = True):
        super().__init__()
        p, dim, width = config.num_virtual_tokens, config.token_dim, config.num_layers * 2 * config.token_dim
        self.layers, self.heads = config.num_layers, config.num_attention_heads
        self.projected = bool(config.prefix_projection and init)
        if self.projected:
            hidden = config.encoder_hidden_size or dim
            self.embedding = nn.Embedding(p, dim, dtype=dtype, device=device)  # peft's init: N(0, 1), default Linear
            self.transform = nn.Sequential(nn.Linear(dim, hidden, dtype=dtype, device=device), nn.Tanh(),
                                           nn.Linear(hidden, width, dtype=dtype, device=device))
        elif init:
            self.embedding = nn.Embedding(p, width, dtype=dtype, device=device)
        else:
            self.embedding = skip_init(nn.Embedding, p, width, dtype=dtype, device=device)

    def kv(self) -> torch.Tensor:
        w = self.embedding.weight
        return self.transform(w) if self.projected else w


class PrefixMethod(Method):
    name = "prefix"
    display_name = "Prefix tuning"
    config_cls = PrefixTuning
    kind = PrefixKind()
    peft_type = "PREFIX_TUNING"
    peft_loadable = True
    identity_at_init = False  # random key/values (peft's init) change every attention from the first step
    nonlinear_effect = ("its effect is nonlinear (key/value prefixes in every attention layer, not a change of any "
                        "base weight)")
    card_keys = ("num_virtual_tokens", "prefix_projection")
    file_keys = (_WEIGHTS,)
    module_files = False  # one table for the whole model (peft's ``prompt_embeddings``)
    size_key = _WEIGHTS
    size_label = "virtual tokens"

    def resolve_config(self, config: PrefixTuning, base: nn.Module) -> PrefixTuning:
        check_architecture(base)
        layers, kv_heads, head_dim = base_geometry(base)
        want = {"num_layers": layers, "num_attention_heads": kv_heads, "token_dim": kv_heads * head_dim}
        for key, value in want.items():
            given = getattr(config, key)
            if given is not None and given != value:
                gqa = " (grouped-query attention: peft provisions its key/value heads)" \
                    if key != "num_layers" and kv_heads != getattr(base.config, "num_attention_heads", kv_heads) else ""
                raise AdapterHubError(f"PrefixTuning.{key}={given} does not match the base {type(base).__name__}: "
                                      f"it has {key.replace('_', ' ')} {value}{gqa}")
        return dataclasses.replace(config, **want, task_type=config.task_type or _task_type(base),
                                   encoder_hidden_size=config.encoder_hidden_size or want["token_dim"])

    def resolve_targets(self, config: PrefixTuning, base: nn.Module) -> list[str]:
        return [INPUTS_PATH]

    def create(self, config: PrefixTuning, module: nn.Module, path: str, init: bool = True) -> PrefixUnit:
        w = next((p for p in module.parameters() if p.is_floating_point()), None)
        return PrefixUnit(config, w.dtype if w is not None else torch.float32, w.device if w is not None else None,
                          init=init)

    # --- files: one tensor, keyed as peft keys it (no module path) ------------------------------------------
    def file_key(self, path: str, suffix: str) -> str:
        return suffix

    def split_file_keys(self, state, suffixes):
        extra = sorted(set(state) - {_WEIGHTS})
        if extra:
            raise AdapterHubError(f"adapter_model.safetensors: unexpected tensors {extra[:3]} (a prefix adapter holds "
                                  f"{_WEIGHTS!r} only)")
        return {INPUTS_PATH: dict(state)}

    def file_module_sizes(self, f) -> dict[str, int]:
        return {"prefix": int(f.get_slice(_WEIGHTS).get_shape()[0])} if _WEIGHTS in f.keys() else {}

    def describe_sizes(self, config: dict[str, Any], sizes: dict[str, int]) -> tuple[str, list[str]]:
        layers = config.get("num_layers")
        return "Prefix", [f"{sizes.get('prefix')} virtual tokens of keys and values in each of {layers} layers.", ""]

    def unit_file_state(self, unit: PrefixUnit) -> dict[str, torch.Tensor]:
        return {_WEIGHTS: unit.kv()}

    def load_unit_file_state(self, unit: PrefixUnit, state, path: str) -> None:
        if unit.projected:
            raise AdapterHubError("a prefix adapter's files hold its projected key/values: load them into a table")
        super().load_unit_file_state(unit, state, path)

    # --- banks ------------------------------------------------------------------------------------------
    def unit_row(self, unit: PrefixUnit) -> dict:
        return prefix_row(unit.kv(), unit.layers, unit.heads)

    def file_row(self, config: PrefixTuning, path: str, module: nn.Module, state) -> dict:
        check_shapes(path or "prefix", state, {_WEIGHTS: (config.num_virtual_tokens,
                                                          config.num_layers * 2 * config.token_dim)})
        w = next((p for p in module.parameters() if p.is_floating_point()), None)
        kv = state[_WEIGHTS].to(w.dtype if w is not None else torch.float32)
        return prefix_row(kv.to(w.device) if w is not None else kv, config.num_layers, config.num_attention_heads)

    def row_file_state(self, config: PrefixTuning, path: str, row: dict) -> dict[str, torch.Tensor]:
        return {_WEIGHTS: row["kv"]}

    # --- peft's config ----------------------------------------------------------------------------------
    def to_adapter_config(self, config: PrefixTuning, targets: list[str], base_id: str, units=None) -> dict[str, Any]:
        from peft import PrefixTuningConfig

        pc = PrefixTuningConfig(task_type=config.task_type, num_virtual_tokens=config.num_virtual_tokens,
                                token_dim=config.token_dim, num_layers=config.num_layers,
                                num_attention_heads=config.num_attention_heads,
                                encoder_hidden_size=config.encoder_hidden_size,
                                prefix_projection=config.prefix_projection, num_transformer_submodules=1,
                                base_model_name_or_path=base_id,
                                inference_mode=True)
        return jsonable(pc.to_dict())

    peft_fields = LORA_METADATA + ("num_virtual_tokens", "token_dim", "num_transformer_submodules",
                                   "num_attention_heads", "num_layers", "encoder_hidden_size", "prefix_projection",
                                   "task_type", "modules_to_save")

    def from_peft_config(self, d: dict[str, Any], keys: dict[str, str] | None, where: str) -> PrefixTuning:
        check_peft_fields(d, self.peft_fields, self.peft_refused, where)
        n = d.get("num_virtual_tokens")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise AdapterFileError(f"{where}: num_virtual_tokens must be a positive int, got {n!r}")
        try:
            return self.from_adapter_config(d)
        except AdapterHubError as e:
            raise AdapterFileError(f"{where}: {e}") from None

    def from_adapter_config(self, d: dict[str, Any]) -> PrefixTuning:
        subs = d.get("num_transformer_submodules")
        if int(subs or 1) != 1:
            raise AdapterHubError("adapter_config.json: a prefix adapter for an encoder-decoder model "
                                  f"(num_transformer_submodules={subs}) is not supported")
        return PrefixTuning(num_virtual_tokens=int(d["num_virtual_tokens"]),
                            prefix_projection=bool(d.get("prefix_projection", False)),
                            encoder_hidden_size=d.get("encoder_hidden_size"), num_layers=d.get("num_layers"),
                            token_dim=d.get("token_dim"), num_attention_heads=d.get("num_attention_heads"),
                            task_type=d.get("task_type"))


register_method(PrefixMethod())
