"""Prefix tuning: peft's files both ways (same outputs, fp32, 1e-5), mixed batches (different prefixes, module-level
adapters, rows with nothing) equal to each row alone, generate (batched = alone = greedy decoding through full
forwards), and every refusal named (architecture, head counts, merge, files, caches)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from adapterhub import IA3, AdapterModel, Bottleneck, LoRA, PrefixTuning
from adapterhub.errors import AdapterHubError, BaseMismatchError
from adapterhub.routing import Route, routed
from conftest import make_tokenizer, resign, tiny_bert, tiny_llama

BASES = ["bert", "llama"]


def _model(base: str):
    b = tiny_llama() if base == "llama" else tiny_bert()
    return AdapterModel(b, make_tokenizer(causal=base == "llama"), base_id=f"tiny-{base}"), copy.deepcopy(b)


def _add(model, name, config, base, seed):
    task = "causal-lm" if base == "llama" else "sequence-classification"
    model.add_adapter(name, config, task=task, labels=None if base == "llama" else ["a", "b", "c"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name, include_head=False):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _batch(n, seed=0, pad_row=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (n, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[pad_row, 5:] = 0
    return ids, mask


def _out(model, base, res, name):
    return res.logits[name] if base == "llama" else res.hidden_states


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("projection", [False, True], ids=["table", "projection"])
def test_plain_peft_loads_our_prefix(base, projection, tmp_path):
    from peft import PeftModel

    model, clean = _model(base)
    _add(model, "x", PrefixTuning(num_virtual_tokens=5, prefix_projection=projection), base, 1)
    d = model.save_adapter("x", tmp_path / "x")
    cfg = json.loads((d / "adapter_config.json").read_text())
    kv_width = 16 if base == "llama" else 32  # Llama: 2 key/value heads x 8 (grouped-query attention, as peft)
    assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["token_dim"] == kv_width and cfg["num_layers"] == 2
    assert cfg["task_type"] == ("CAUSAL_LM" if base == "llama" else "FEATURE_EXTRACTION")
    ids, mask = _batch(3)
    with torch.no_grad():
        plain = clean(input_ids=ids, attention_mask=mask)
    peft_model = PeftModel.from_pretrained(clean, str(d)).eval()
    with torch.no_grad():
        ours = _out(model, base, model(ids, mask, adapters="x"), "x")
        theirs = peft_model(input_ids=ids, attention_mask=mask)
    theirs = theirs.logits if base == "llama" else theirs.last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - (plain.logits if base == "llama" else plain.last_hidden_state)).abs().max() > 1e-2
    assert peft_model.prompt_encoder["default"].embedding.weight.shape == (5, 2 * 2 * kv_width)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("banked", [True, False], ids=["banks", "units"])
def test_peft_saved_prefix_loads_into_ours(base, banked, tmp_path):
    from peft import PrefixTuningConfig, get_peft_model

    model, clean = _model(base)
    task_type = "CAUSAL_LM" if base == "llama" else "FEATURE_EXTRACTION"
    pm = get_peft_model(copy.deepcopy(clean), PrefixTuningConfig(num_virtual_tokens=4, task_type=task_type)).eval()
    pm.save_pretrained(str(tmp_path / "peft"))
    _add(model, "x", PrefixTuning(num_virtual_tokens=4), base, 0)  # borrow our card and head files
    d = model.save_adapter("x", tmp_path / "ours")
    model.delete_adapter("x")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (d / f).write_bytes((tmp_path / "peft" / f).read_bytes())
    resign(d)
    model.load_adapter(d, name="x", trainable=not banked)
    assert model.entry("x").banked == banked
    ids, mask = _batch(3)
    with torch.no_grad():
        ours = _out(model, base, model(ids, mask, adapters="x"), "x")
        theirs = pm(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(ours, theirs.logits if base == "llama" else theirs.last_hidden_state, atol=1e-5,
                               rtol=0)


def _mixed_model(base, tmp_path):
    """Prefixes of two lengths (trainable units and banks) beside LoRA, bottleneck (banked) and IA3 rows."""
    model, clean = _model(base)
    _add(model, "p2", PrefixTuning(num_virtual_tokens=2), base, 1)
    _add(model, "p5", PrefixTuning(num_virtual_tokens=5, prefix_projection=True), base, 2)
    _add(model, "p3", PrefixTuning(num_virtual_tokens=3), base, 3)
    _add(model, "lo", LoRA(r=2, target_modules="all-linear"), base, 4)
    _add(model, "bn", Bottleneck(reduction_factor=4), base, 5)
    _add(model, "ia", IA3(), base, 6)
    model.save_adapter("p5", tmp_path / "p5")
    model.delete_adapter("p5")
    model.load_adapter(tmp_path / "p5")  # banked
    model.bank("bn")
    return model, clean


@pytest.mark.parametrize("base", BASES)
def test_mixed_batch_equals_rows_alone(base, tmp_path):
    model, clean = _mixed_model(base, tmp_path)
    assert model.entry("p5").banked and not model.entry("p2").banked
    route = ["p2", "lo", "p5", "bn", "p3", "ia", "p5", "p2"]
    ids, mask = _batch(len(route))
    with torch.no_grad():
        out = model(ids, mask, adapters=route)
        for i, name in enumerate(route):
            alone = model(ids[i:i + 1], mask[i:i + 1], adapters=name)
            torch.testing.assert_close(out.hidden_states[i:i + 1], alone.hidden_states, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.row_logits(i), alone.logits[name][0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("base", BASES)
def test_rows_with_nothing_share_the_forward(base, tmp_path):
    """A route row whose adapter is held by no site gets the base's own output, beside prefix and LoRA rows."""
    model, clean = _mixed_model(base, tmp_path)
    names = ["p2", "-", "p5", "lo", "-"]
    entries = {n: model.entry(n) for n in names if n != "-"}
    route = Route(names, [entries[n].key if n in entries else "-" for n in names],
                  [entries[n].slot if n in entries else 0 for n in names])
    ids, mask = _batch(len(names))
    backbone = model.base.base_model
    with torch.no_grad():
        with routed(route):
            mixed = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = clean.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        for i, n in enumerate(names):
            want = plain[i:i + 1] if n == "-" else model(ids[i:i + 1], mask[i:i + 1], adapters=n).hidden_states
            torch.testing.assert_close(mixed[i:i + 1], want, atol=1e-5, rtol=0)


def _greedy(model, text, name, steps):
    tok = model.tokenizer
    ids = tok([text], return_tensors="pt")["input_ids"]
    seq = ids
    with torch.no_grad():
        for _ in range(steps):
            logits = model(seq, torch.ones_like(seq), adapters=name).logits[name]
            nxt = logits[:, -1:].argmax(-1)
            seq = torch.cat([seq, nxt], 1)
            if int(nxt) == tok.eos_token_id:
                break
    return tok.decode(seq[0, ids.shape[1]:], skip_special_tokens=True)


def test_generate_mixed_rows_equal_alone_and_greedy_forwards(tmp_path):
    model, _ = _mixed_model("llama", tmp_path)
    texts = ["the film was", "a good movie and the plot was", "i love", "paris is a city", "obama said"]
    route = ["p2", "lo", "p5", "p3", "ia"]
    batched = model.generate(texts, adapters=route, max_new_tokens=6)
    assert any(batched)
    for text, name, got in zip(texts, route, batched):
        assert got == model.generate([text], adapters=name, max_new_tokens=6)[0], name
        assert got == _greedy(model, text, name, 6), name  # the cache path = full forwards
    beams = model.generate(texts[:2], adapters=["p5", "p2"], max_new_tokens=4, num_beams=2)
    assert beams == [model.generate([t], adapters=n, max_new_tokens=4, num_beams=2)[0]
                     for t, n in zip(texts[:2], ["p5", "p2"])]
    assert model.predict(texts[:2], adapters=["p2", "p5"], max_new_tokens=6) == batched[:1] + [
        model.generate([texts[1]], adapters="p5", max_new_tokens=6)[0]]


def test_training_moves_only_the_prefix_rows_adapter():
    model, _ = _model("bert")
    _add(model, "a", PrefixTuning(num_virtual_tokens=3), "bert", 1)
    _add(model, "b", PrefixTuning(num_virtual_tokens=6), "bert", 2)
    _add(model, "lo", LoRA(r=2), "bert", 3)
    model.train()
    ids, mask = _batch(4)
    out = model(ids, mask, adapters=["a", "b", "lo", "a"], labels={"a": torch.tensor([0, 1])})
    out.losses["a"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter_parameters("a"))
    for other in ("b", "lo"):
        assert all(p.grad is None or not p.grad.any() for p in model.adapter_parameters(other))


def test_refusals_name_architecture_heads_and_merge():
    from transformers import DistilBertConfig, DistilBertModel

    distil = AdapterModel(DistilBertModel(DistilBertConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4,
                                                           hidden_dim=64)).eval(), make_tokenizer(), base_id="d")
    with pytest.raises(AdapterHubError, match=r"base DistilBertModel \(model_type 'distilbert'\) cannot hold prefix "
                                              r"key/values: DistilBertModel\.forward takes no past key/values"):
        distil.add_adapter("x", PrefixTuning(), labels=["a"])
    llama, _ = _model("llama")
    with pytest.raises(AdapterHubError, match=r"PrefixTuning\.num_attention_heads=4 does not match the base "
                                              r"LlamaForCausalLM: it has num attention heads 2 \(grouped-query"):
        llama.add_adapter("x", PrefixTuning(num_attention_heads=4), task="causal-lm")
    with pytest.raises(AdapterHubError, match=r"PrefixTuning\.token_dim=32 does not match.*token dim 16"):
        llama.add_adapter("x", PrefixTuning(token_dim=32), task="causal-lm")
    with pytest.raises(AdapterHubError, match=r"PrefixTuning\.num_layers=3 does not match.*num layers 2"):
        llama.add_adapter("x", PrefixTuning(num_layers=3), task="causal-lm")
    for bad, field in (({"num_virtual_tokens": 0}, "num_virtual_tokens"), ({"prefix_projection": "yes"},
                       "prefix_projection"), ({"encoder_hidden_size": -1}, "encoder_hidden_size"),
                       ({"token_dim": 10, "num_attention_heads": 4}, "token_dim")):
        with pytest.raises(AdapterHubError, match=rf"PrefixTuning\.{field}"):
            llama.add_adapter("x", PrefixTuning(**bad), task="causal-lm")
    assert llama.adapters == []
    _add(llama, "x", PrefixTuning(num_virtual_tokens=2), "llama", 0)
    _add(llama, "lo", LoRA(r=2), "llama", 1)
    with pytest.raises(AdapterHubError, match=r"'x' is a prefix adapter: its effect is nonlinear \(key/value "
                                              r"prefixes.*cannot be merged"):
        llama.merge("x")
    with pytest.raises(AdapterHubError, match=r"'x' is a prefix adapter.*nonlinear"):
        llama.combine({"x": 0.5, "lo": 0.5}, "both")
    assert llama.merged is None and llama.adapters == ["x", "lo"]


def test_bad_files_and_caches_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers.cache_utils import DynamicCache, StaticCache

    model, _ = _model("llama")
    _add(model, "x", PrefixTuning(num_virtual_tokens=3), "llama", 0)
    d = model.save_adapter("x", tmp_path / "x")

    def variant(name, weights=None, config=None):
        v = tmp_path / name
        v.mkdir()
        for f in d.iterdir():
            (v / f.name).write_bytes(f.read_bytes())
        if weights is not None:
            save_file(weights, str(v / "adapter_model.safetensors"))
        if config is not None:
            (v / "adapter_config.json").write_text(json.dumps(config))
        resign(v)
        return v

    st = load_file(str(d / "adapter_model.safetensors"))
    cfg = json.loads((d / "adapter_config.json").read_text())
    with pytest.raises(BaseMismatchError, match=r"prompt_embeddings has shape \(3, 32\), the base needs \(3, 64\)"):
        model.load_adapter(variant("narrow", {"prompt_embeddings": st["prompt_embeddings"][:, :32].contiguous()}),
                           name="y")
    with pytest.raises(AdapterHubError, match=r"unexpected tensors \['base_model\.model\.extra'\]"):
        model.load_adapter(variant("extra", {**st, "base_model.model.extra": torch.zeros(1)}), name="y")
    with pytest.raises(BaseMismatchError, match=r"PrefixTuning\.num_attention_heads=4 does not match"):
        model.load_adapter(variant("heads", config={**cfg, "num_attention_heads": 4, "token_dim": 32}), name="y")
    with pytest.raises(AdapterHubError, match=r"encoder-decoder model \(num_transformer_submodules=2\)"):
        model.load_adapter(variant("seq2seq", config={**cfg, "num_transformer_submodules": 2}), name="y")
    assert model.adapters == ["x"]
    ids, mask = _batch(2)
    with torch.no_grad(), model.routed("x", n_rows=2):
        with pytest.raises(AdapterHubError, match="DynamicCache; this call passes a StaticCache"):
            model.base(input_ids=ids, cache=StaticCache(config=model.base.config, max_cache_len=16))
        started = DynamicCache()
        model.base(input_ids=ids, cache=started)  # our cache: the prefix is written once and marked
        assert started.get_seq_length() == 3 + 7
        model.base(input_ids=ids[:, :1], cache=started)  # a decoding step on it
        foreign = DynamicCache()
    with torch.no_grad():
        model.base(input_ids=ids, cache=foreign)  # filled outside the route: no prefix in it
        with model.routed("x", n_rows=2), pytest.raises(AdapterHubError, match="start from an empty cache"):
            model.base(input_ids=ids[:, :1], cache=foreign)


def test_model_cards_describe_prefix_and_ia3(tmp_path):
    from adapterhub.hub.modelcard import render_model_card

    model, _ = _model("llama")
    _add(model, "p", PrefixTuning(num_virtual_tokens=6), "llama", 0)
    model.add_adapter("i", IA3(), task="causal-lm")
    for name, section in (("p", "6 virtual tokens of keys and values in each of 2 layers"),
                          ("i", "IA3 vectors")):
        d = model.save_adapter(name, tmp_path / name)
        readme = render_model_card(json.loads((d / "adapter_card.json").read_text()), f"alice/{name}", d)
        assert section in readme, readme
        assert f'PeftModel.from_pretrained(base, "alice/{name}")' in readme and "AutoModelForCausalLM" in readme


def test_export_beside_a_prefix_adapter_carries_no_hook(tmp_path):
    """The backbone hook that serves prefix adapters stays out of copies of the base (export_merged)."""
    from transformers import AutoModel

    from adapterhub.model.merging import clean_base_copy

    model, clean = _model("bert")
    _add(model, "p", PrefixTuning(num_virtual_tokens=3), "bert", 0)
    _add(model, "lo", LoRA(r=2), "bert", 1)
    assert any(model.base._forward_pre_hooks.values())
    copy_ = clean_base_copy(model)
    assert not any(getattr(h, "_adapterhub_inputs", False) for m in copy_.modules()
                   for h in m._forward_pre_hooks.values())
    ids, mask = _batch(2)
    want = model(ids, mask, adapters="lo").hidden_states
    d = model.export_merged("lo", tmp_path / "merged")
    with torch.no_grad(), routed(Route(["p", "p"], [model.entry("p").key] * 2, [0, 0])):
        got = AutoModel.from_pretrained(str(d)).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_a_4d_attention_mask_is_refused_not_misread():
    model, _ = _model("llama")
    _add(model, "x", PrefixTuning(num_virtual_tokens=2), "llama", 0)
    ids = torch.randint(5, 40, (1, 4))
    with torch.no_grad(), model.routed("x"), pytest.raises(AdapterHubError, match="2-D attention mask.*4-D"):
        model.base(input_ids=ids, attention_mask=torch.ones(1, 1, 4, 4))


@pytest.mark.parametrize("banked", [True, False], ids=["banks", "units"])
def test_plain_peft_prefix_directory_loads_without_a_card(banked, tmp_path):
    """A peft-made causal-LM prefix directory as peft writes it (no adapterhub files): same logits as peft."""
    from peft import PeftModel, PrefixTuningConfig, get_peft_model

    model, clean = _model("llama")
    pm = get_peft_model(copy.deepcopy(clean), PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for p in pm.prompt_encoder.parameters():
            p.normal_(0, 0.5)
    pm.save_pretrained(str(tmp_path / "pre"))
    model.load_adapter(tmp_path / "pre", trainable=not banked)
    assert model.entry("pre").banked == banked
    ids, mask = _batch(3)
    theirs = PeftModel.from_pretrained(copy.deepcopy(clean), str(tmp_path / "pre")).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, adapters="pre").logits["pre"],
                                   theirs(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)


def test_plain_peft_prefix_for_another_geometry_is_refused(tmp_path):
    from peft import PrefixTuningConfig, get_peft_model

    model, clean = _model("llama")
    get_peft_model(copy.deepcopy(clean), PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM")
                   ).save_pretrained(str(tmp_path / "pre"))
    cfg_path = tmp_path / "pre" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_layers"] += 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(BaseMismatchError, match="num_layers"):
        model.load_adapter(tmp_path / "pre")
    assert model.adapters == []
