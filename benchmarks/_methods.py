"""Adapters for the mixed-batch benchmark by method: LoRA (the default; peft gets the same factors), prefix tuning,
IA3, or a mix of all four methods (row ``i`` uses adapter ``a{i % K}``, whose method is ``MIX[i % 4]``)."""
from __future__ import annotations

import torch

from adapterhub import AdapterModel
from adapterhub.methods import IA3, Bottleneck, LoRA, PrefixTuning

RANK = 8
MIX = ("lora", "bottleneck", "ia3", "prefix")


def method_of(method: str, i: int) -> str:
    return MIX[i % len(MIX)] if method == "mix" else method


def config(method: str, prefix_tokens: int):
    return {"lora": lambda: LoRA(r=RANK, target_modules="all-linear"),
            "bottleneck": lambda: Bottleneck(reduction_factor=16),
            "ia3": lambda: IA3(),
            "prefix": lambda: PrefixTuning(num_virtual_tokens=prefix_tokens)}[method]()


def describe(method: str, prefix_tokens: int, model: AdapterModel, name: str) -> str:
    if method == "lora":
        return f"LoRA r={RANK} all-linear ({len(model.entry(name).targets)} modules)"
    if method == "prefix":
        return f"prefix tuning, {prefix_tokens} virtual tokens per layer"
    if method == "ia3":
        return f"IA3, peft's default targets ({len(model.entry(name).targets)} modules)"
    return (f"a mix of LoRA r={RANK} all-linear, bottleneck (reduction 16), IA3 and prefix tuning "
            f"({prefix_tokens} tokens), one method per row in turn")


def randomise(model: AdapterModel, name: str, method: str, g: torch.Generator) -> None:
    """Non-trivial deltas: LoRA's B, the bottleneck's up-projection, IA3's vectors (fresh ones are the identity);
    prefix tables start random (peft's init) and are scaled down to activation size."""
    params = [(n, p) for u in model.adapter_units(name).values() for n, p in u.named_parameters()]
    with torch.no_grad():
        for pname, p in params:
            if method == "lora" and "lora_B" in pname or method == "bottleneck" and "adapter_up" in pname:
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p))
            elif method == "ia3":
                p.copy_((torch.rand(p.shape, generator=g) + 0.5).to(p))
            elif method == "prefix":
                p.copy_((torch.randn(p.shape, generator=g) * 0.5).to(p))


def add_adapters(model: AdapterModel, k_max: int, kind: str, method: str, prefix_tokens: int) -> list[str]:
    names = [f"a{i}" for i in range(k_max)]
    g = torch.Generator().manual_seed(1)
    for i, n in enumerate(names):
        m = method_of(method, i)
        if kind == "decoder":
            model.add_adapter(n, config(m, prefix_tokens), task="causal-lm")
        else:
            model.add_adapter(n, config(m, prefix_tokens), labels=["neg", "pos"])
        randomise(model, n, m, g)
    return names


def adapter_bytes(model: AdapterModel, name: str) -> int:
    """Bytes of one adapter's file tensors (what a step reads for it)."""
    e = model.entry(name)
    return sum(t.numel() * t.element_size() for u in model.adapter_units(name).values()
               for t in e.method.unit_file_state(u).values())
