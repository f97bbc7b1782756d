"""Loading a base model for an :class:`~adapterhub.model.AdapterModel`: resolve the spec (Hub id, local directory,
``package:``), pick the causal-LM or encoder class from its config, load safetensors weights, set up the tokenizer."""
from __future__ import annotations

from typing import Any

import torch


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
    base = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(path, **kwargs)
    if device:
        base.to(device)
    base.eval()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if causal:
        tok.padding_side = "left"
    return base, tok, base_id(spec)
