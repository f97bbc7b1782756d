"""The peft ecosystem both ways, with plain peft as the oracle (fp32, <= 1e-5): linear-like layers (GPT-2's
``Conv1D``), plain peft adapter directories loaded without a card, exact peft semantics for every accepted field
(pattern precedence, ``layers_to_transform``, ``exclude_modules``, rsLoRA), refusals naming the field, and task
exports that ``AutoModelFor<Task>`` + ``PeftModel`` / ``AutoPeftModelFor<Task>`` load with our predictions."""
from __future__ import annotations

import copy
import json

import pytest
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


def tiny_bert4(seed: int = 0, **kw):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, **kw)
    return BertModel(cfg).eval()


def _ids(n: int = 3, t: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 64, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, t - 2:] = 0
    return ids, mask


@pytest.mark.parametrize("alpha_pattern, want", [
    ({"dense": 2, "encoder.layer.3.output.dense": 64}, 2 / 4),   # the case: peft takes "dense" (first)
    ({"layer.3.output.dense": 64, "dense": 2}, 64 / 4),          # order is meaning: kept in our file
])
def test_pattern_precedence_is_peft_first_match_in_file_order(tmp_path, alpha_pattern, want):
    from peft import PeftModel

    base = tiny_bert4()
    clean = copy.deepcopy(base)
    model = AdapterModel(base, None, base_id="tiny-bert4")
    model.add_adapter("a", LoRA(r=4, alpha=8, target_modules=["dense", "query"], alpha_pattern=alpha_pattern),
                      labels=["x", "y"])
    _randomize(model, "a", 3)
    assert model.adapter_units("a")["encoder.layer.3.output.dense"].scaling == want
    assert model.adapter_units("a")["encoder.layer.0.attention.self.query"].scaling == 2.0
    model.eval()
    d = model.save_adapter("a", tmp_path / "a")
    assert list(json.loads((d / "adapter_config.json").read_text())["alpha_pattern"]) == list(alpha_pattern)
    peft_model = PeftModel.from_pretrained(clean, str(d)).eval()
    assert peft_model.base_model.model.encoder.layer[3].output.dense.scaling["default"] == want
    ids, mask = _ids()
    with torch.no_grad():
        ours = model(ids, mask, adapters="a").hidden_states
        theirs = peft_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    back = model.load_adapter(d, name="b")  # and our reading of our file is the same
    assert back.config.alpha_pattern == alpha_pattern and list(back.config.alpha_pattern) == list(alpha_pattern)


@pytest.mark.parametrize("field, value, match", [
    ("alora_invocation_tokens", [5, 6], r"alora_invocation_tokens=\[5, 6\] is not supported: aLoRA"),
    ("use_dora", True, r"use_dora=True is not supported: DoRA"),
    ("bias", "all", r"bias='all' is not supported"),
    ("lora_bias", True, r"lora_bias=True is not supported"),
    ("init_lora_weights", "pissa", r"init_lora_weights='pissa' is not supported: .*changes the base weights"),
    ("layer_replication", [[0, 1]], r"layer_replication=.* is not supported"),
    ("trainable_token_indices", [1, 2], r"trainable_token_indices=.* is not supported"),
    ("target_parameters", ["experts.weight"], r"target_parameters=.* is not supported"),
    ("use_qalora", True, r"use_qalora=True is not supported"),
    ("some_future_field", 3, r"unknown peft field some_future_field=3"),
])
def test_peft_fields_that_change_the_computation_are_refused(tmp_path, field, value, match):
    """Our own directory with one field added (the card re-signed): refused, naming the field; an unknown field
    holding an empty value, and the accepted metadata, load."""
    from adapterhub.errors import AdapterFileError
    from conftest import resign, tiny_bert

    model = AdapterModel(tiny_bert(), None, base_id="tiny-bert")
    model.add_adapter("a", LoRA(r=4), labels=["x", "y"])
    d = model.save_adapter("a", tmp_path / "a")
    cfg = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, field: value}))
    resign(d)
    with pytest.raises(AdapterFileError, match=match):
        model.load_adapter(d, name="b")
    assert model.adapters == ["a"]
    (d / "adapter_config.json").write_text(json.dumps({**cfg, field: None, "revision": "main",
                                                      "init_lora_weights": "gaussian"}))
    resign(d)
    assert model.load_adapter(d, name="b").name == "b"
