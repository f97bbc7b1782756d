"""The base's int8 layers: ``nn.Linear`` / ``nn.Embedding`` whose weight is a torchao int8 tensor (per-row
symmetric: ``qdata`` int8 ``[rows, cols]``, ``scale`` ``[rows, 1]``, zero points 0), with forwards of our own.

They stay ``nn.Linear`` / ``nn.Embedding`` (adapters target and wrap them as usual) and keep torchao's tensors as
their weights, so their state dict is torchao's format (what a transformers checkpoint with a torchao
``quantization_config`` holds). Only the forward is ours, read straight from ``qdata`` / ``scale`` (duck-typed: this
module never imports torchao):

- :class:`QuantizedLinear`, dynamic activations (the weight carries torchao's ``act_quant_kwargs``): each input row
  is quantized to int8 with its own scale and multiplied with ``torch._int_mm`` (int8 x int8 -> int32), then
  rescaled. torchao's own eager path for the same tensors spends more time in separate scaling passes than the
  int8 product saves (measured 1.2-1.4x fp32 latency on MiniLM, CPU); this one fuses the rescale into two
  in-place passes. Its rounding has no gradient: a grad-tracking input is refused (:data:`NO_BACKWARD`), never
  silently cut off. Off the CPU, torchao's kernels run it.
- :class:`QuantizedLinear`, weight-only: the weight is dequantized per call and the product runs in full precision:
  exact gradients to the input (QLoRA-style training), no speed gain. Backward dequantizes again rather than
  keeping the dense weight alive between forward and backward (:class:`_DequantizedLinear`), so training holds
  int8 weights only, as QLoRA does.
- :class:`QuantizedEmbedding`: gathers the int8 rows first, then dequantizes only those.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdapterHubError

NO_BACKWARD = ("this base is quantized with dynamic int8 activations, whose rounding has no gradient: adapters "
               "before this layer would silently get none through it. Load the base with "
               "quantize='int8-weight-only' to train on a quantized base (QLoRA-style), or run inference under "
               "torch.no_grad()")


def is_torchao_tensor(t) -> bool:
    return type(t).__module__.split(".", 1)[0] == "torchao"


def _rowwise_int8(w, rows: int, cols: int) -> bool:
    """Whether torchao tensor ``w`` is a per-row symmetric int8 tensor of shape ``[rows, cols]``."""
    q, s, zp = getattr(w, "qdata", None), getattr(w, "scale", None), getattr(w, "zero_point", None)
    return (q is not None and s is not None and q.dtype == torch.int8 and tuple(q.shape) == (rows, cols)
            and s.numel() == rows and list(getattr(w, "block_size", ())) == [1, cols]
            and (zp is None or not bool(zp.any())))


def linear_layout(lin: nn.Linear, w=None) -> str | None:
    """``"dynamic"`` / ``"weight-only"`` when :class:`QuantizedLinear` runs Linear ``lin`` with weight ``w``
    (default: its own), else None."""
    w = lin.weight if w is None else w
    if type(w).__name__ != "Int8Tensor" or not _rowwise_int8(w, lin.out_features, lin.in_features):
        return None
    return "dynamic" if getattr(w, "act_quant_kwargs", None) is not None else "weight-only"


def embedding_ok(emb: nn.Embedding, w=None) -> bool:
    """Whether :class:`QuantizedEmbedding` runs Embedding ``emb`` with weight ``w`` (default: its own)."""
    w = emb.weight if w is None else w
    return (type(w).__name__ == "IntxUnpackedToInt8Tensor" and getattr(w, "activation_quantization", 1) is None
            and emb.max_norm is None and _rowwise_int8(w, emb.num_embeddings, emb.embedding_dim))


def runs(mod: nn.Module, w) -> bool:
    """Whether the layers here run ``mod`` (a Linear or Embedding) with weight ``w``."""
    if isinstance(mod, nn.Linear):
        return linear_layout(mod, w) is not None
    return isinstance(mod, nn.Embedding) and embedding_ok(mod, w)


def dequantized(w, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A dense copy of a per-row int8 weight (any other tensor: itself, or torchao's own ``dequantize()``)."""
    if not is_torchao_tensor(w):
        return w if dtype is None else w.to(dtype)
    dtype = dtype or w.dtype
    if getattr(w, "qdata", None) is not None and getattr(w, "scale", None) is not None and w.qdata.ndim == 2 \
            and w.scale.numel() == w.qdata.shape[0]:
        return w.qdata.to(dtype) * w.scale.reshape(-1, 1).to(dtype)
    return w.dequantize().to(dtype)


def dynamic_int8_linear(x: torch.Tensor, q: torch.Tensor, w_scale: torch.Tensor, bias) -> torch.Tensor:
    """``x @ (q * w_scale)^T + bias`` with ``x`` quantized per row to int8 (symmetric, absmax / 127)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).float()
    amax = torch.maximum(x2.amax(-1, keepdim=True), x2.amin(-1, keepdim=True).neg_()).clamp_min_(1e-12)
    xq = torch.mul(x2, 127.0 / amax).round_().to(torch.int8)
    y = torch._int_mm(xq, q.t()).to(torch.float32)
    y.mul_(amax.div_(127.0))
    s = w_scale.reshape(-1).float()
    y = torch.addcmul(bias.float(), y, s, out=y) if bias is not None else y.mul_(s)
    return y.reshape(*shape[:-1], q.shape[0]).to(x.dtype)


class _DequantizedLinear(torch.autograd.Function):
    """``x @ (q * s)^T + b`` saving ``q`` (int8) for backward, not the dense weight; no gradient for ``q``."""

    @staticmethod
    def forward(ctx, x, q, s, bias):
        ctx.save_for_backward(q, s)
        return F.linear(x, q.to(x.dtype) * s.to(x.dtype), bias)

    @staticmethod
    def backward(ctx, gy):
        q, s = ctx.saved_tensors
        gx = gy @ (q.to(gy.dtype) * s.to(gy.dtype)) if ctx.needs_input_grad[0] else None
        gb = gy.reshape(-1, gy.shape[-1]).sum(0) if ctx.needs_input_grad[3] else None
        return gx, None, None, gb


class QuantizedLinear(nn.Linear):
    """An ``nn.Linear`` holding a per-row int8 torchao weight (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if getattr(w, "act_quant_kwargs", None) is None:
            return _DequantizedLinear.apply(x, w.qdata, w.scale.reshape(-1, 1), self.bias)
        if x.requires_grad and torch.is_grad_enabled():
            raise AdapterHubError(NO_BACKWARD)
        if x.device.type != "cpu":
            return F.linear(x, w, self.bias)
        return dynamic_int8_linear(x, w.qdata, w.scale, self.bias)


class QuantizedEmbedding(nn.Embedding):
    """An ``nn.Embedding`` holding a per-row int8 torchao weight: int8 rows gathered, then dequantized."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.weight
        rows = F.embedding(ids, w.qdata)
        return (rows.to(w.scale.dtype) * F.embedding(ids, w.scale.reshape(-1, 1))).to(w.dtype)


def adopt_module(mod: nn.Module) -> bool:
    """Run ``mod`` (a Linear or Embedding with a torchao int8 weight) with the layers above, in place (the same
    module object: paths, hooks and parents stay valid). False when its weight is not a layout they run."""
    if not runs(mod, mod.weight):
        return False
    mod.__class__ = QuantizedLinear if isinstance(mod, nn.Linear) else QuantizedEmbedding
    return True


def tensor_bytes(t) -> int:
    """Bytes a tensor holds (a torchao tensor: the sum of its inner tensors)."""
    if is_torchao_tensor(t) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n, None) is not None)
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module`` (shared tensors once)."""
    seen: dict[int, int] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        seen.setdefault(id(t), tensor_bytes(t))
    return sum(seen.values())
