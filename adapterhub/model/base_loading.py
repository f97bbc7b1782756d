"""Loading a base model for an :class:`~adapterhub.model.AdapterModel`: resolve the spec (Hub id, local directory,
``package:``), pick the causal-LM or encoder class from its config, load safetensors weights, set up the tokenizer."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import AdapterHubError


def load_model(cls, spec: str, dtype: torch.dtype | str | None, device: str | None, quantize: str | None):
    """``cls.from_pretrained``: the base of ``spec`` in an ``AdapterModel`` (``cls``), quantized with ``quantize``
    (the mode is checked before anything loads)."""
    from .quantize import check_mode

    if quantize is not None:
        check_mode(quantize)
    base, tok, base_id = load_base(spec, dtype, device)
    model = cls(base, tok, base_id=base_id)
    if quantize is not None:
        model.quantize(quantize)
    return model


def load_base(spec: str, dtype: torch.dtype | str | None = None, device: str | None = None):
    """``(base, tokenizer, base id)`` for ``spec``."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    from ..bases import base_id, resolve_base
    from .arguments import check_device

    device = check_device(device)  # before any loading: 'cuda' without CUDA is an error naming it
    path = resolve_base(spec)
    archs = AutoConfig.from_pretrained(path).architectures or []
    causal = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs)
    kwargs: dict[str, Any] = {"use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    base = _from_pretrained(AutoModelForCausalLM if causal else AutoModel, path, kwargs)
    if device:
        base.to(device)
    base.eval()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if causal:
        tok.padding_side = "left"
    return base, tok, base_id(spec)


def _from_pretrained(auto, path, kwargs: dict[str, Any]):
    """``auto.from_pretrained``; a checkpoint quantized with torchao (an int8 export) needs the ``quant`` extra."""
    from .quantize import EXTRA, quiet_torchao

    try:
        with quiet_torchao():
            return auto.from_pretrained(path, **kwargs)
    except ImportError as e:
        if "torchao" not in str(e):
            raise
        raise AdapterHubError(f"{path}: this checkpoint is quantized with torchao, which is not installed: "
                              f"pip install 'adapterhub[{EXTRA}]'") from None
