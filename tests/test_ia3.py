"""IA3: peft's files both ways (same outputs within 1e-5 fp32), exact merge/unmerge (weights and biases), mixed
batches with the other methods, and every bad input refused with the field named."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from adapterhub import IA3, AdapterModel, Bottleneck, LoRA
from adapterhub.errors import AdapterHubError, BaseMismatchError
from conftest import make_tokenizer, resign, tiny_bert, tiny_llama


def _model(causal: bool):
    base = tiny_llama() if causal else tiny_bert()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # BERT initialises biases to zero: make them count (output scaling scales the bias)
        for n, p in base.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return AdapterModel(base, make_tokenizer(causal=causal), base_id="tiny"), copy.deepcopy(base)


def _randomize(model, name, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name, include_head=False):
            p.copy_(torch.rand(p.shape, generator=g) * 1.5 + 0.25)


def _batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (n, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("causal", [False, True], ids=["bert", "llama"])
def test_plain_peft_loads_our_ia3(causal, tmp_path):
    from peft import PeftModel

    model, clean = _model(causal)
    task = "causal-lm" if causal else "sequence-classification"
    model.add_adapter("x", IA3(), task=task, labels=None if causal else ["a", "b"])
    _randomize(model, "x", 1)
    d = model.save_adapter("x", tmp_path / "x")
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "IA3" and cfg["feedforward_modules"] and set(cfg["feedforward_modules"]) < set(
        cfg["target_modules"])
    ids, mask = _batch()
    with torch.no_grad():
        plain = clean(input_ids=ids, attention_mask=mask)
    peft_model = PeftModel.from_pretrained(clean, str(d)).eval()
    with torch.no_grad():
        ours = model(ids, mask, adapters="x")
        theirs = peft_model(input_ids=ids, attention_mask=mask)
    if causal:
        torch.testing.assert_close(ours.logits["x"], theirs.logits, atol=1e-5, rtol=0)
        assert (ours.logits["x"] - plain.logits).abs().max() > 1e-2
    else:
        torch.testing.assert_close(ours.hidden_states, theirs.last_hidden_state, atol=1e-5, rtol=0)
        assert (ours.hidden_states - plain.last_hidden_state).abs().max() > 1e-2
    n_peft = sum(p.numel() for n, p in peft_model.named_parameters() if "ia3_l" in n)
    assert n_peft == model.num_parameters("x", include_head=False)  # peft loaded every vector we wrote


@pytest.mark.parametrize("banked", [True, False], ids=["banks", "units"])
def test_peft_saved_ia3_loads_into_ours(banked, tmp_path):
    """A peft-made IA3 (its own config: module-name suffixes, feed-forward names) + our card/head files."""
    from peft import IA3Config, get_peft_model

    model, clean = _model(causal=True)
    pm = get_peft_model(copy.deepcopy(clean), IA3Config(target_modules=["k_proj", "v_proj", "up_proj"],
                                                        feedforward_modules=["up_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "ia3_l" in n:
                p.uniform_(0.3, 1.7)
    pm.eval()
    pm.save_pretrained(str(tmp_path / "peft"))
    model.add_adapter("x", IA3(target_modules=["k_proj", "v_proj", "up_proj"], feedforward_modules=["up_proj"]),
                      task="causal-lm")
    d = model.save_adapter("x", tmp_path / "ours")
    model.delete_adapter("x")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (d / f).write_bytes((tmp_path / "peft" / f).read_bytes())
    resign(d)
    model.load_adapter(d, name="x", trainable=not banked)
    assert model.entry("x").banked == banked
    ids, mask = _batch()
    with torch.no_grad():
        ours = model(ids, mask, adapters="x").logits["x"]
        theirs = pm(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_merge_folds_rows_columns_and_bias_and_unmerges_bit_for_bit():
    model, _ = _model(causal=False)  # BERT: every Linear has a bias; value scales its output (bias too)
    model.add_adapter("x", IA3(target_modules=["value", "intermediate.dense"],
                               feedforward_modules=["intermediate.dense"]), labels=["a", "b"])
    _randomize(model, "x", 2)
    ids, mask = _batch()
    want = model(ids, mask, adapters="x").hidden_states.detach()
    before = {k: v.clone() for k, v in model.base_parameters().items()}
    model.merge("x")
    changed = {k for k, v in model.base_parameters().items() if not torch.equal(v, before[k])}
    assert "encoder.layer.0.attention.self.value.bias" in changed  # output scaling scales the bias
    assert "encoder.layer.0.intermediate.dense.weight" in changed
    assert "encoder.layer.0.intermediate.dense.bias" not in changed  # input scaling leaves it
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, adapters="x").hidden_states, want, atol=1e-5, rtol=0)
    assert model.unmerge() == "x"
    assert all(torch.equal(v, before[k]) for k, v in model.base_parameters().items())


def test_export_merged_loads_in_transformers(tmp_path):
    from transformers import AutoModel

    model, _ = _model(causal=False)
    model.add_adapter("x", IA3(), labels=["a", "b"])
    _randomize(model, "x", 3)
    ids, mask = _batch()
    want = model(ids, mask, adapters="x").hidden_states.detach()
    d = model.export_merged("x", tmp_path / "merged")
    again = AutoModel.from_pretrained(str(d)).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).last_hidden_state, want, atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize("layout", ["units", "banks"])
def test_mixed_batch_with_lora_and_bottleneck(layout, tmp_path):
    """IA3 rows (output and input scaling, two adapters) beside LoRA and bottleneck rows in one forward."""
    model, _ = _model(causal=False)
    model.add_adapter("i1", IA3(), labels=["a", "b"])
    model.add_adapter("i2", IA3(target_modules=["query", "intermediate.dense"],
                                feedforward_modules=["intermediate.dense"]), labels=["a", "b"])
    model.add_adapter("lo", LoRA(r=2, target_modules="all-linear"), labels=["a", "b"])
    model.add_adapter("bn", Bottleneck(reduction_factor=4), labels=["a", "b"])
    for i, n in enumerate(("i1", "i2", "lo", "bn")):
        _randomize(model, n, 10 + i)
    if layout == "banks":
        for n in ("i1", "i2"):
            model.bank(n)
    route = ["i1", "lo", "i2", "bn", "i2", "i1"]
    ids, mask = _batch(len(route))
    with torch.no_grad():
        mixed = model(ids, mask, adapters=route).hidden_states
        for i, n in enumerate(route):
            alone = model(ids[i:i + 1], mask[i:i + 1], adapters=n).hidden_states
            torch.testing.assert_close(mixed[i:i + 1], alone, atol=1e-5, rtol=0)


def test_bad_configs_name_the_field():
    model, _ = _model(causal=False)
    with pytest.raises(AdapterHubError, match=r"IA3\.target_modules must be a list"):
        model.add_adapter("x", IA3(target_modules=[3]), labels=["a"])
    with pytest.raises(AdapterHubError, match=r"IA3\.feedforward_modules must be a list"):
        model.add_adapter("x", IA3(feedforward_modules={"a": 1}), labels=["a"])
    with pytest.raises(AdapterHubError, match=r"IA3\.feedforward_modules \['dense'\] are not in IA3\.target_modules"):
        model.add_adapter("x", IA3(target_modules=["query"], feedforward_modules=["dense"]), labels=["a"])
    with pytest.raises(AdapterHubError, match=r"matches no nn\.Linear"):
        model.add_adapter("x", IA3(target_modules=["q_proj"], feedforward_modules=[]), labels=["a"])
    assert model.adapters == []


def test_unknown_architecture_needs_explicit_modules():
    from transformers import DistilBertConfig, DistilBertModel

    base = DistilBertModel(DistilBertConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, hidden_dim=64)).eval()
    model = AdapterModel(base, make_tokenizer(), base_id="distil")
    with pytest.raises(AdapterHubError, match=r"no default target_modules for model_type 'distilbert'.*"
                                              r"IA3\(target_modules"):
        model.add_adapter("x", IA3(), labels=["a"])
    with pytest.raises(AdapterHubError, match=r"no default feedforward_modules for model_type 'distilbert'"):
        model.add_adapter("x", IA3(target_modules=["q_lin"]), labels=["a"])
    model.add_adapter("x", IA3(target_modules=["q_lin", "lin2"], feedforward_modules=["lin2"]), labels=["a"])
    assert model.adapters == ["x"]


def test_bad_files_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model, _ = _model(causal=False)
    model.add_adapter("x", IA3(), labels=["a", "b"])
    d = model.save_adapter("x", tmp_path / "x")
    # a vector of the wrong orientation (an output scaling stored where the config says input scaling)
    bad = tmp_path / "shape"
    bad.mkdir()
    for f in d.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    st = load_file(str(bad / "adapter_model.safetensors"))
    k = next(k for k in st if k.endswith("layer.0.output.dense.ia3_l"))
    st[k] = torch.ones(32, 1)
    save_file(st, str(bad / "adapter_model.safetensors"))
    resign(bad)
    with pytest.raises(BaseMismatchError, match=r"tensor ia3_l has shape \(32, 1\), the base needs \(1, 64\)"):
        model.load_adapter(bad, name="y")
    # Conv1D layout (fan_in_fan_out) is refused by name, not misread
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["fan_in_fan_out"] = True
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    resign(bad)
    with pytest.raises(AdapterHubError, match="fan_in_fan_out"):
        model.load_adapter(bad, name="y")
    assert model.adapters == ["x"]


def test_gradients_through_a_mixed_batch_equal_the_rows_alone():
    """IA3 rows computed apart from LoRA rows (own_rows_only) keep autograd exact: the same gradients as the IA3 rows
    run alone, none for the LoRA adapter."""
    model, _ = _model(causal=False)
    model.add_adapter("i", IA3(), labels=["a", "b"], dropout=0.0)
    model.add_adapter("lo", LoRA(r=2, target_modules="all-linear"), labels=["a", "b"])
    _randomize(model, "i", 7)
    model.eval()  # no dropout: the two runs must see the same function (gradients flow in eval mode too)
    ids, mask = _batch(4)
    labels = torch.tensor([0, 1])
    model(ids, mask, adapters=["i", "lo", "i", "lo"], labels={"i": labels}).losses["i"].backward()
    mixed = [p.grad.clone() for p in model.adapter_parameters("i")]
    assert all(p.grad is None or not p.grad.any() for p in model.adapter_parameters("lo"))
    model.zero_grad(set_to_none=True)
    model(ids[[0, 2]], mask[[0, 2]], adapters="i", labels={"i": labels}).losses["i"].backward()
    for got, want in zip(mixed, [p.grad for p in model.adapter_parameters("i")]):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("banked", [True, False], ids=["banks", "units"])
def test_plain_peft_ia3_directory_loads_without_a_card(banked, tmp_path):
    """A peft-made IA3 directory as peft writes it (no adapterhub card or head): peft's target and feed-forward
    rules on peft's module names (``model.layers.0.mlp.up_proj`` under the causal LM), same logits as peft."""
    from peft import IA3Config, PeftModel, get_peft_model

    model, clean = _model(causal=True)
    pm = get_peft_model(copy.deepcopy(clean), IA3Config(target_modules=["k_proj", "v_proj", "up_proj"],
                                                        feedforward_modules=["up_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "ia3_l" in n:
                p.uniform_(0.3, 1.7)
    pm.save_pretrained(str(tmp_path / "ia"))
    model.load_adapter(tmp_path / "ia", trainable=not banked)
    e = model.entry("ia")
    assert e.banked == banked and e.task == "causal-lm"
    assert sorted(p for p in e.targets if e.config.is_feedforward(p)) == [
        f"model.layers.{i}.mlp.up_proj" for i in range(2)]
    ids, mask = _batch()
    theirs = PeftModel.from_pretrained(copy.deepcopy(clean), str(tmp_path / "ia")).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, adapters="ia").logits["ia"],
                                   theirs(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)
    d = model.save_adapter("ia", tmp_path / "ours")  # stored with a card: the same adapter again
    model.delete_adapter("ia")
    model.load_adapter(d)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, adapters="ia").logits["ia"],
                                   theirs(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)


def test_plain_peft_ia3_with_unknown_field_is_refused_by_name(tmp_path):
    from peft import IA3Config, get_peft_model

    model, clean = _model(causal=True)
    get_peft_model(copy.deepcopy(clean), IA3Config(target_modules=["k_proj"], feedforward_modules=[],
                                                   task_type="CAUSAL_LM")).save_pretrained(str(tmp_path / "ia"))
    cfg_path = tmp_path / "ia" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["ia3_magic"] = 3
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(AdapterHubError, match="ia3_magic"):
        model.load_adapter(tmp_path / "ia")
    assert model.adapters == []


def test_combine_and_compress_refuse_ia3_as_not_low_rank():
    """IA3 merges (a diagonal scaling folds into the weights) but is no low-rank product: combine and compress say
    so, without calling it nonlinear."""
    model, _ = _model(causal=False)
    model.add_adapter("x", IA3(), task="sequence-classification", labels=["a", "b"])
    model.add_adapter("y", LoRA(r=2), task="sequence-classification", labels=["a", "b"])
    for call in (lambda: model.combine({"x": 0.5, "y": 0.5}, "xy"), lambda: model.compress("x", "x2", rank=1)):
        with pytest.raises(AdapterHubError, match=r"'x' is a ia3 adapter: its delta is not a low-rank product") as ei:
            call()
        assert "nonlinear" not in str(ei.value)
    assert sorted(model.adapters) == ["x", "y"]


def test_plain_peft_ia3_feedforward_outside_targets_is_refused(tmp_path):
    """peft refuses list feed-forward modules that are not targets; so do we (no silent ignoring)."""
    from peft import IA3Config, get_peft_model

    model, clean = _model(causal=True)
    get_peft_model(copy.deepcopy(clean), IA3Config(target_modules=["k_proj", "up_proj"], feedforward_modules=["up_proj"],
                                                   task_type="CAUSAL_LM")).save_pretrained(str(tmp_path / "ia"))
    cfg_path = tmp_path / "ia" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["feedforward_modules"] = ["up_proj", "down_proj"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(AdapterHubError, match=r"adapter_config.json.*feedforward_modules \['down_proj'\]"):
        model.load_adapter(tmp_path / "ia")
    assert model.adapters == []
