"""Compact exports: a merged base written as a transformers directory whose weights are torchao int8 tensors and
whose ``config.json`` holds the ``quantization_config`` (torchao), so ``AutoModel.from_pretrained(dir)`` (with
torchao installed) and ``AdapterModel.from_pretrained(dir)`` load it quantized.

transformers quantizes and serialises it itself: the full-precision merged copy is saved to a temporary
directory and loaded back with a ``TorchAoConfig`` naming exactly the modules :func:`adapterhub.model.quantize.plan`
picks (the same rule as a base quantized at load), then saved. Each quantized weight's relative error is measured
against the full-precision merged weight it came from."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .qlayers import QuantizedEmbedding, QuantizedLinear, dequantized, weight_bytes
from .quantize import import_torchao, plan, quiet_torchao, torchao_configs


def densify(base: nn.Module) -> None:
    """Give every int8 layer of ``base`` (a copy: its modules are changed in place) a dense weight back."""
    for mod in base.modules():
        if isinstance(mod, (QuantizedLinear, QuantizedEmbedding)):
            mod.weight = nn.Parameter(dequantized(mod.weight).detach().clone(), requires_grad=False)
            mod.__class__ = nn.Linear if isinstance(mod, QuantizedLinear) else nn.Embedding


def torchao_config(base: nn.Module, mode: str):
    """A transformers ``TorchAoConfig`` quantizing exactly the weights :func:`plan` picks (one regex per kind
    over their full parameter names: biases and norms are never matched)."""
    q = import_torchao()  # first: quietly
    from transformers import TorchAoConfig

    todo, _kept = plan(base)
    lin_cfg, emb_cfg = torchao_configs(mode)
    groups = {"lin": [p for p, m in todo.items() if isinstance(m, nn.Linear)],
              "emb": [p for p, m in todo.items() if isinstance(m, nn.Embedding)]}
    fqn = {f"re:(?:{'|'.join(map(re.escape, paths))})\\.weight": cfg
           for paths, cfg in ((groups["lin"], lin_cfg), (groups["emb"], emb_cfg)) if paths}
    return TorchAoConfig(q.FqnToConfig(fqn), include_input_output_embeddings=True)


def save_quantized(clean: nn.Module, directory: Path, mode: str) -> dict[str, Any]:
    """Write full-precision ``clean`` into ``directory`` quantized with ``mode``; returns the sizes and the
    weights' relative errors."""
    config = torchao_config(clean, mode)
    with tempfile.TemporaryDirectory(prefix="adapterhub-export-") as tmp, quiet_torchao():
        clean.save_pretrained(tmp)
        quantized = type(clean).from_pretrained(tmp, quantization_config=config, use_safetensors=True)
        quantized.save_pretrained(str(directory))
    errors = _relative_errors(clean, quantized)
    files = sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))
    dense = weight_bytes(clean)
    return {"mode": mode, "weights_file_bytes": files, "full_precision_bytes": dense,
            "ratio": round(files / dense, 4), "quantized_modules": len(errors),
            "max_relative_error": max(errors.values(), default=0.0),
            "mean_relative_error": sum(errors.values()) / max(len(errors), 1)}


def _relative_errors(clean: nn.Module, quantized: nn.Module) -> dict[str, float]:
    """``||deq(W_q) - W|| / ||W||`` of every weight the export quantized."""
    dense = dict(clean.named_parameters())
    out = {}
    with torch.no_grad():
        for name, t in quantized.named_parameters():
            if name in dense and type(t).__module__.split(".", 1)[0] == "torchao":
                w = dense[name].float()
                out[name] = float((dequantized(t, torch.float32) - w).norm() / w.norm().clamp_min(1e-30))
    return out
