"""A quantized base under full-precision adapters: :func:`quantize` (``AdapterModel.from_pretrained(spec,
quantize=...)`` / ``model.quantize(mode)``), :func:`adopt` (a base loaded already quantized, e.g. an
``export_merged(..., quantize="int8")`` directory), the modes, and torchao (an optional dependency:
``pip install 'adapterhub[quant]'``).

What is quantized (:func:`plan`): every Linear of the base (the wrapped ``base_layer`` of adapted ones too) and
every Embedding, per row, symmetric, int8; kept in full precision: the output head (logits; its tied input
embedding too, sharing its tensor) and Embeddings with ``max_norm`` (renormalised in place). MiniLM's embedding
table is half its weights, so embeddings are quantized too: base weights 0.25x of fp32 instead of 0.64x.
Adapters stay in full precision on top; the base fingerprint is the full-precision one (computed before), so
adapters trained on either load on both.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from ..errors import AdapterHubError
from ..routing import AdaptedLinear
from .qlayers import adopt_module, is_torchao_tensor, linear_layout, runs, weight_bytes

EXTRA = "quant"


@dataclasses.dataclass(frozen=True)
class QuantMode:
    """A way to quantize the base. ``trains``: backward reaches each layer's input (adapters can train on it)."""

    name: str
    dynamic_activations: bool
    trains: bool
    why: str


#: chosen by measurement (MiniLM, CPU, batch 32 x 64: benchmarks/compression.py and its README section)
MODES = {m.name: m for m in (
    QuantMode("int8", True, False,
              "CPU serving: int8 weights and per-row dynamic int8 activations, int8 x int8 products; the fastest "
              "(about 0.6x fp32 latency on MiniLM), cosine to fp32 about 0.99; its rounding has no gradient"),
    QuantMode("int8-weight-only", False, True,
              "int8 weights dequantized per call, products in full precision: the same 4x smaller weights, "
              "cosine to fp32 about 0.998, exact gradients to the inputs (QLoRA-style training); no speed gain "
              "on CPU"),
)}


@dataclasses.dataclass
class QuantInfo:
    """What :func:`quantize` (or :func:`adopt`) did to the base."""

    mode: str
    linears: int
    embeddings: int
    kept: dict[str, str]  # module path -> why it stays in full precision
    bytes_before: int | None
    bytes_after: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_mode(mode: Any, arg: str = "quantize") -> QuantMode:
    """The mode named ``mode``; the error names the argument ``arg`` it came from (none: ``""``)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise AdapterHubError(f"{arg + ': ' if arg else ''}unknown quantization mode {mode!r}; known: "
                              f"{sorted(MODES)}")
    return MODES[mode]


def import_torchao():
    """``torchao.quantization``, or an error naming the extra. Its import-time log noise (kernels for other
    hardware that fail to load) is silenced."""
    try:
        with quiet_torchao():
            import torchao.quantization as q
    except ImportError as e:
        raise AdapterHubError(f"quantizing the base needs torchao (missing: {e.name or e}): "
                              f"pip install 'adapterhub[{EXTRA}]'") from None
    return q


def torchao_configs(mode: str) -> tuple[Any, Any]:
    """torchao configs of ``mode``: (for Linears, for Embeddings)."""
    q = import_torchao()
    from torchao.quantization.granularity import PerAxis

    linear = q.Int8DynamicActivationInt8WeightConfig() if check_mode(mode).dynamic_activations \
        else q.Int8WeightOnlyConfig()
    return linear, q.IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))


def plan(base: nn.Module) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """(path -> Linear or Embedding to quantize, path -> why a module stays in full precision). Adapter units
    are skipped; an adapted module's path is its ``base_layer``'s."""
    get_out = getattr(base, "get_output_embeddings", None)
    out = get_out() if get_out is not None else None
    todo: dict[str, nn.Module] = {}
    kept: dict[str, str] = {}
    for path, mod in base.named_modules():
        if ".units." in f".{path}." or isinstance(mod, AdaptedLinear):
            continue
        if not isinstance(mod, (nn.Linear, nn.Embedding)):
            continue
        if mod is out:
            kept[path] = "the output head: logits stay in full precision"
        elif out is not None and isinstance(mod, nn.Embedding) and mod.weight is getattr(out, "weight", None):
            kept[path] = "tied to the output head (one tensor)"
        elif isinstance(mod, nn.Embedding) and mod.max_norm is not None:
            kept[path] = "max_norm renormalises its rows in place"
        elif is_torchao_tensor(mod.weight) or not mod.weight.is_floating_point():
            kept[path] = f"already {type(mod.weight).__name__}"
        else:
            todo[path] = mod
    return todo, kept


def _quantized_weight(mod: nn.Module, config) -> nn.Parameter:
    """``mod``'s weight quantized by torchao with ``config``, through a stand-in module (``mod`` is untouched)."""
    q = import_torchao()
    if isinstance(mod, nn.Linear):
        stand: nn.Module = nn.Linear(1, 1, bias=False, device="meta")
        stand.in_features, stand.out_features = mod.in_features, mod.out_features
    else:
        stand = nn.Embedding(1, 1, device="meta")
        stand.num_embeddings, stand.embedding_dim = mod.num_embeddings, mod.embedding_dim
    stand.weight = mod.weight
    q.quantize_(stand, config, filter_fn=lambda m, fqn: m is stand)
    if stand.weight is mod.weight:
        raise AdapterHubError(f"torchao did not quantize a {type(mod).__name__} with {type(config).__name__}")
    return stand.weight


def quantize(model, mode: str) -> QuantInfo:
    """Quantize ``model``'s base in place with ``mode`` (see :data:`MODES`). Every new weight is built first; the
    modules change only when all succeeded (a failure leaves the model as it was)."""
    spec = check_mode(mode)
    if model.quantization is not None:
        raise AdapterHubError(f"quantize={mode!r}: the base is already quantized ({model.quantization.mode}); load "
                              "the full-precision base to quantize it (again or another way)")
    if model.merged is not None:
        raise AdapterHubError(f"adapter {model.merged!r} is merged into the base weights; call unmerge() before "
                              "quantizing the base")
    todo, kept = plan(model.base)
    before = weight_bytes(model.base)
    lin_cfg, emb_cfg = torchao_configs(spec.name)
    with torch.no_grad():
        new = {p: _quantized_weight(m, lin_cfg if isinstance(m, nn.Linear) else emb_cfg) for p, m in todo.items()}
    for path, mod in todo.items():
        if not runs(mod, new[path]):
            raise AdapterHubError(f"torchao gave module {path!r} a weight layout adapterhub does not run "
                                  f"({type(new[path]).__name__}); supported: per-row symmetric int8")
    for path, mod in todo.items():
        mod.weight = new[path]
        adopt_module(mod)
    _own_dense_tensors(model.base)
    n_lin = sum(isinstance(m, nn.Linear) for m in todo.values())
    model.quantization = QuantInfo(spec.name, n_lin, len(todo) - n_lin, kept, before, weight_bytes(model.base))
    return model.quantization


def _own_dense_tensors(base: nn.Module) -> None:
    """Give the base's tensors left dense (biases, norms, a kept head) memory of their own. Loaded from safetensors
    they are views into the checkpoint's memory map, and any one of them keeps the whole file mapped and resident
    (measured on MiniLM: 87 MiB of RSS kept after quantizing, for 0.1 MiB of biases). Shared tensors stay shared;
    adapter units are left alone."""
    copies: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for path, mod in base.named_modules():
            if ".units." in f".{path}.":
                continue
            for table in (mod._parameters, mod._buffers):
                for key, t in list(table.items()):
                    if t is None or is_torchao_tensor(t):
                        continue
                    if id(t) not in copies:
                        c = t.detach().clone()
                        copies[id(t)] = nn.Parameter(c, t.requires_grad) if isinstance(t, nn.Parameter) else c
                    table[key] = copies[id(t)]


def adopt(base: nn.Module) -> QuantInfo | None:
    """A base loaded with torchao weights already (e.g. an exported int8 model): run its int8 Linears and
    Embeddings with adapterhub's layers and say how it is quantized; None when nothing is quantized."""
    lin = emb = 0
    dynamic = False
    other: dict[str, str] = {}
    for path, mod in base.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Embedding)) or not is_torchao_tensor(mod.weight):
            continue
        layout = linear_layout(mod) if isinstance(mod, nn.Linear) else None
        if adopt_module(mod):
            lin, emb = lin + isinstance(mod, nn.Linear), emb + isinstance(mod, nn.Embedding)
            dynamic = dynamic or layout == "dynamic"
        else:
            other[path] = f"{type(mod.weight).__name__}: left to torchao's kernels"
    if not (lin or emb or other):
        return None
    _, kept = plan(base)
    kept = {p: r for p, r in kept.items() if not r.startswith("already")}
    mode = "int8" if dynamic else "int8-weight-only" if lin or emb else "torchao"
    return QuantInfo(mode, lin, emb, {**kept, **other}, None, weight_bytes(base))


def check_trainable_mode(mode: Any, arg: str = "base_quantize") -> QuantMode:
    """The mode, if adapters can train on a base quantized with it (its backward reaches every layer's input)."""
    spec = check_mode(mode, arg)
    if not spec.trains:
        trainable = sorted(n for n, m in MODES.items() if m.trains)
        raise AdapterHubError(f"a base quantized with {mode!r} cannot train adapters: its backward does not reach "
                              f"the layer inputs, so adapters would silently get wrong gradients; use {trainable}")
    return spec


def check_trainable(model) -> None:
    """Raise unless adapters can train on ``model``'s base (full precision, or a mode that trains)."""
    info = model.quantization
    if info is not None and info.mode not in MODES:
        raise AdapterHubError(f"the base holds {info.mode} weights adapterhub does not run itself "
                              f"({sorted(info.kept)[:3]}); it cannot check that adapters would train correctly")
    if info is not None:
        check_trainable_mode(info.mode, arg="")


@contextlib.contextmanager
def quiet_torchao():
    """Silence torchao's logger inside the block (loading a torchao checkpoint imports it)."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
