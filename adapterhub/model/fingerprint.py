"""Base fingerprints recorded in adapter cards, to refuse adapters made for another base.

- ``arch``: sha256 of the model type and every parameter's name and shape (dtype-independent).
- ``weights``: sha256 of a fixed sample of 64 values from every tensor, rounded to bfloat16 so that the same
  checkpoint loaded in fp32, fp16 or bf16 gives the same hash. Cheap (no full pass over the weights) and it tells
  two checkpoints of one architecture apart. Quantized tensors are sampled dequantized. A base quantized at load
  (``from_pretrained(..., quantize=...)``) keeps the fingerprint of its full-precision weights (computed before).
"""
from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from .qlayers import dequantized

SAMPLES = 64


def _named_base_tensors(base: nn.Module):
    # names as in the unadapted model: drop the ".base_layer" our wrappers insert; skip adapter units
    seen = {}
    for name, t in base.state_dict(keep_vars=True).items():
        if ".units." in name:
            continue
        seen[name.replace(".base_layer.", ".")] = t
    return sorted(seen.items())


def fingerprint(base: nn.Module) -> dict[str, str]:
    model_type = getattr(getattr(base, "config", None), "model_type", type(base).__name__)
    arch = hashlib.sha256()
    weights = hashlib.sha256()
    arch.update(json.dumps(model_type).encode())
    with torch.no_grad():
        for name, t in _named_base_tensors(base):
            arch.update(f"{name}:{tuple(t.shape)};".encode())
            flat = dequantized(t.detach()).reshape(-1)
            if flat.numel() == 0:
                continue
            n, k = flat.numel(), min(SAMPLES, flat.numel())
            idx = (torch.arange(k, dtype=torch.long) * (n - 1)) // max(k - 1, 1)  # exact integer spacing
            idx = idx.to(flat.device)
            sample = flat.index_select(0, idx).float().to(torch.bfloat16).float().cpu()
            weights.update(name.encode())
            weights.update(sample.numpy().tobytes())
    return {"arch": arch.hexdigest()[:32], "weights": weights.hexdigest()[:32]}
