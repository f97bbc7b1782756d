"""The peft ecosystem both ways, with plain peft as the oracle (fp32, <= 1e-5): linear-like layers (GPT-2's
``Conv1D``), plain peft adapter directories loaded without a card, exact peft semantics for every accepted field
(pattern precedence, ``layers_to_transform``, ``exclude_modules``, rsLoRA), refusals naming the field, and task
exports that ``AutoModelFor<Task>`` + ``PeftModel`` / ``AutoPeftModelFor<Task>`` load with our predictions."""
from __future__ import annotations

import copy

import torch

from adapterhub import AdapterModel, LoRA


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=2,
                     eos_token_id=4, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def _randomize(model: AdapterModel, name: str, seed: int, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def test_conv1d_lora_equals_peft_and_merges(tmp_path):
    """GPT-2's Conv1D layers (weight [in, out], the fused qkv ``c_attn``) are adapted like Linears: peft computes
    the same outputs from our files, mixed batches equal rows alone, merge folds the delta in the right layout."""
    from peft import PeftModel

    base = tiny_gpt2()
    clean = copy.deepcopy(base)
    model = AdapterModel(base, None, base_id="tiny-gpt2")
    e = model.add_adapter("a", LoRA(r=4, target_modules="all-linear"), task="causal-lm")
    assert "transformer.h.0.attn.c_attn" in e.targets and not any("lm_head" in t for t in e.targets)
    assert model.add_adapter("b", LoRA(r=2), task="causal-lm").targets == ["transformer.h.0.attn.c_attn",
                                                                         "transformer.h.1.attn.c_attn"]
    _randomize(model, "a", 1)
    _randomize(model, "b", 2)
    model.eval()
    ids = torch.randint(5, 64, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(ids, adapters="a").logits["a"]
        mixed = model(ids, adapters=["a", "b", "a"])
        for i, n in enumerate(["a", "b", "a"]):
            torch.testing.assert_close(mixed.row_logits(i), model(ids[i:i + 1], adapters=n).logits[n][0],
                                       atol=1e-5, rtol=0)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(clean), str(model.save_adapter("a", tmp_path / "a")))
    with torch.no_grad():
        theirs = peft_model.eval()(input_ids=ids).logits
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        assert (ours - clean(input_ids=ids).logits).abs().max() > 1e-2
        model.merge("a")
        torch.testing.assert_close(model(ids, adapters="a").logits["a"], ours, atol=1e-5, rtol=0)
        model.unmerge()
        torch.testing.assert_close(model.base.base_model.h[0].attn.c_attn.base_layer.weight,
                                   clean.base_model.h[0].attn.c_attn.weight, atol=0, rtol=0)
