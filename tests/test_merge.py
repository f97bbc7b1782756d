"""Merge / unmerge, export of a merged standalone model, and combination of adapters (linear, TIES, DARE, SVD)
in delta-W space, plus the pure math in :mod:`adapterhub.merge`."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from adapterhub import AdaLoRA, AdapterHubError, AdapterModel, AdapterNameError, Bottleneck, LoRA
from adapterhub.errors import AdapterFileError
from adapterhub.heads import head_from_config
from adapterhub.routing import AdaptedLinear
from adapterhub.merge import (combine_deltas, dare_merge, disjoint_mean, linear_merge, lowrank_delta,
                              lowrank_sum_factors, magnitude_prune, majority_sign, random_prune, ties_merge,
                              truncated_svd)
from conftest import make_tokenizer, tiny_bert, tiny_llama

LABELS2 = ["neg", "pos"]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER"]
TEXTS = ["the film was good", "a bad plot", "i love paris and london", "it was awful", "the actor won"]


def randomize(model: AdapterModel, name: str, seed: int, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)


def batch(causal: bool = False):
    enc = make_tokenizer(causal=causal)(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def snapshot(model: AdapterModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.base_parameters().items()}


def assert_base_bits(model: AdapterModel, snap: dict[str, torch.Tensor]) -> None:
    now = model.base_parameters()
    assert set(now) == set(snap)
    for k, v in snap.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k].detach(), v), f"base tensor {k} differs"


def delta_of(model: AdapterModel, name: str, path: str) -> torch.Tensor:
    e = model.entry(name)
    a, b, s = e.method.lowrank_factors(model.adapter_units(name)[path])
    return lowrank_delta(a, b, s, torch.float64)


@pytest.fixture
def bert2(bert_model):
    """Two LoRAs of different ranks and targets (plus a bottleneck and a token classifier)."""
    m = bert_model
    m.add_adapter("a", LoRA(r=4, alpha=16), labels=LABELS2)                               # query, value
    m.add_adapter("b", LoRA(r=8, target_modules="all-linear", use_rslora=True), labels=LABELS2)
    m.add_adapter("bn", Bottleneck(reduction_factor=4), labels=LABELS2)
    m.add_adapter("tok", LoRA(r=2), task="token-classification", labels=TAGS)
    for i, n in enumerate(m.adapters):
        randomize(m, n, 10 + i)
    m.eval()
    return m


# ---------------------------------------------------------------------------------------------------------
# merge / unmerge
# ---------------------------------------------------------------------------------------------------------

def test_merge_folds_delta_and_unmerge_restores_bits(bert2):
    m = bert2
    ids, mask = batch()
    snap = snapshot(m)
    with torch.no_grad():
        ref = m(ids, mask, adapters="a")
        ref_b = m(ids, mask, adapters="b")
    ref_pred = m.predict(TEXTS, adapters="a")
    assert m.merged is None
    m.merge("a")
    assert m.merged == "a"
    # each targeted weight is W + scale * B @ A; nothing else changed
    targeted = set(m.adapter_units("a"))
    assert targeted and all(p.endswith(("query", "value")) for p in targeted)
    now = m.base_parameters()
    for k, v in snap.items():
        path = k[: -len(".weight")] if k.endswith(".weight") else None
        if path in targeted:
            want = (v.double() + delta_of(m, "a", path)).to(v.dtype)
            assert torch.equal(now[k].detach(), want), k
            assert not torch.equal(now[k].detach(), v), k
        else:
            assert torch.equal(now[k].detach(), v), k
    with torch.no_grad():
        out = m(ids, mask, adapters="a")  # the unit is skipped: the delta is not added twice
        plain = m.base(input_ids=ids, attention_mask=mask).last_hidden_state  # the bare base now is "a"
    torch.testing.assert_close(out.hidden_states, ref.hidden_states, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits["a"], ref.logits["a"], atol=1e-5, rtol=0)
    torch.testing.assert_close(plain, ref.hidden_states, atol=1e-5, rtol=0)
    assert m.predict(TEXTS, adapters="a") == ref_pred
    assert m.unmerge() == "a" and m.merged is None
    assert_base_bits(m, snap)
    assert m.unmerge() is None  # nothing merged: no-op
    with torch.no_grad():
        assert torch.equal(m(ids, mask, adapters="a").hidden_states, ref.hidden_states)
        assert torch.equal(m(ids, mask, adapters="b").hidden_states, ref_b.hidden_states)
    # merge again after unmerge (another adapter this time), and back
    m.merge("b")
    with torch.no_grad():
        torch.testing.assert_close(m(ids, mask, adapters="b").hidden_states, ref_b.hidden_states, atol=1e-5, rtol=0)
    m.unmerge()
    assert_base_bits(m, snap)


def test_merged_model_refuses_other_adapters(bert2):
    m = bert2
    ids, mask = batch()
    with torch.no_grad():
        ref = m(ids, mask, adapters=["a", "b", "bn", "a", "tok"])
    m.merge("a")
    for route in (["a", "b", "a", "a", "a"], ["a", "bn", "a", "a", "a"], "b", "bn"):
        with pytest.raises(AdapterHubError, match=r"'a' is merged into the base weights.*unmerge\(\)"):
            with torch.no_grad():
                m(ids, mask, adapters=route)
    with pytest.raises(AdapterHubError, match="merged"):
        m.predict(TEXTS[0], adapters="tok")
    m.unmerge()
    with torch.no_grad():
        out = m(ids, mask, adapters=["a", "b", "bn", "a", "tok"])
    for n in ref.logits:
        assert torch.equal(out.logits[n], ref.logits[n])


def test_merge_errors(bert2):
    m = bert2
    snap = snapshot(m)
    with pytest.raises(AdapterNameError, match="unknown adapter 'nope'"):
        m.merge("nope")
    with pytest.raises(AdapterHubError, match="bottleneck adapter.*nonlinear.*cannot be merged"):
        m.merge("bn")
    assert m.merged is None
    assert_base_bits(m, snap)
    m.merge("a")
    merged_bits = snapshot(m)
    with pytest.raises(AdapterHubError, match="'a' is already merged"):
        m.merge("a")
    with pytest.raises(AdapterHubError, match="'a' is merged; call unmerge\\(\\) before merging 'b'"):
        m.merge("b")
    # a merged adapter cannot be deleted (its delta would stay in the base); nothing changes
    with pytest.raises(AdapterHubError, match="merged into the base weights; call unmerge\\(\\) before deleting"):
        m.delete_adapter("a")
    assert "a" in m.adapters and m.adapter_units("a") and m.merged == "a"
    assert_base_bits(m, merged_bits)
    # other adapters can still be added / deleted while one is merged
    m.delete_adapter("tok")
    m.add_adapter("late", LoRA(r=2, target_modules=["query", "key"]), labels=LABELS2)
    m.unmerge()
    assert_base_bits(m, snap)
    m.delete_adapter("a")


def test_merge_adalora_llama_generate_and_bf16_bits():
    m = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    m.add_adapter("ada", AdaLoRA(init_r=6, target_r=4, target_modules="all-linear"), task="causal-lm")
    randomize(m, "ada", 3, std=0.3)
    m.eval()
    ids, mask = batch(causal=True)
    snap = snapshot(m)
    with torch.no_grad():
        ref = m(ids, mask, adapters="ada").logits["ada"]
    gen = m.generate(TEXTS, adapters="ada", max_new_tokens=4)
    m.merge("ada")
    with torch.no_grad():
        torch.testing.assert_close(m(ids, mask, adapters="ada").logits["ada"], ref, atol=1e-5, rtol=0)
    assert m.generate(TEXTS, adapters="ada", max_new_tokens=4) == gen
    m.unmerge()
    assert_base_bits(m, snap)

    # half precision: the merged weight is rounded, the unmerged one is the original, bit for bit
    mb = AdapterModel(tiny_llama().to(torch.bfloat16), make_tokenizer(causal=True), base_id="tiny-llama")
    mb.add_adapter("l", LoRA(r=4), task="causal-lm")
    randomize(mb, "l", 4, std=0.3)
    snap = snapshot(mb)
    mb.merge("l")
    assert any(not torch.equal(v.detach(), snap[k]) for k, v in mb.base_parameters().items())
    assert all(v.dtype == torch.bfloat16 for v in mb.base_parameters().values())
    mb.unmerge()
    assert_base_bits(mb, snap)


# ---------------------------------------------------------------------------------------------------------
# export_merged
# ---------------------------------------------------------------------------------------------------------

def _tensor_names(path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def test_export_merged_bert_classifier(bert2, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    m = bert2
    ids, mask = batch()
    snap = snapshot(m)
    with torch.no_grad():
        ref = m(ids, mask, adapters="b")
    d = m.export_merged("b", tmp_path / "merged_b")
    assert_base_bits(m, snap)  # our model is left as it was
    assert {"config.json", "model.safetensors", "adapterhub_head.json", "adapterhub_head.safetensors",
            "adapterhub_merged.json", "tokenizer.json"} <= {p.name for p in d.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    keys = _tensor_names(d / "model.safetensors")
    assert not [k for k in keys if "lora" in k or ".units." in k or "base_layer" in k]
    assert set(keys) == set(snap)  # the base's own names, nothing else

    loaded = AutoModel.from_pretrained(str(d)).eval()
    assert not any(isinstance(x, AdaptedLinear) for x in loaded.modules())
    with torch.no_grad():
        hidden = loaded(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(hidden, ref.hidden_states, atol=1e-5, rtol=0)
    # the head saved beside it gives the same logits on the exported model's hidden states
    head = head_from_config(json.loads((d / "adapterhub_head.json").read_text()), 32)
    with safe_open(str(d / "adapterhub_head.safetensors"), framework="pt") as f:
        head.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(hidden, mask), ref.logits["b"], atol=1e-5, rtol=0)
    assert head.labels == LABELS2
    info = json.loads((d / "adapterhub_merged.json").read_text())
    assert info["adapter"] == "b" and info["method"] == "lora"
    tok = AutoTokenizer.from_pretrained(str(d))
    assert tok(TEXTS[0])["input_ids"] == m.tokenizer(TEXTS[0])["input_ids"]

    # not over a non-empty directory unless asked
    with pytest.raises(AdapterFileError, match="not empty; pass overwrite=True"):
        m.export_merged("a", d)
    # while another adapter is merged, the export holds only the exported one
    m.merge("a")
    d2 = m.export_merged("b", d, overwrite=True)
    m.unmerge()
    again = AutoModel.from_pretrained(str(d2)).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).last_hidden_state, ref.hidden_states,
                                   atol=1e-5, rtol=0)
    assert_base_bits(m, snap)
    with pytest.raises(AdapterHubError, match="nonlinear"):
        m.export_merged("bn", tmp_path / "bn")
    with pytest.raises(AdapterNameError):
        m.export_merged("nope", tmp_path / "nope")
    assert not (tmp_path / "bn").exists() and not (tmp_path / "nope").exists()


def test_export_merged_llama_causal(tmp_path):
    from transformers import AutoModelForCausalLM

    m = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    m.add_adapter("l", LoRA(r=8, target_modules="all-linear"), task="causal-lm")
    randomize(m, "l", 5, std=0.3)
    m.eval()
    ids, mask = batch(causal=True)
    with torch.no_grad():
        ref = m(ids, mask, adapters="l").logits["l"]
    d = m.export_merged("l", tmp_path / "merged")
    assert not (d / "adapterhub_head.json").exists()  # a causal LM needs no head of ours
    loaded = AutoModelForCausalLM.from_pretrained(str(d)).eval()
    with torch.no_grad():
        theirs = loaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# combine
# ---------------------------------------------------------------------------------------------------------

def test_combine_linear_different_ranks_is_exact(bert2, tmp_path):
    m = bert2
    ids, mask = batch()
    w = {"a": 0.6, "b": 0.4}
    paths = sorted(set(m.adapter_units("a")) | set(m.adapter_units("b")))
    want = {}
    for p in paths:
        want[p] = sum(wt * delta_of(m, n, p) for n, wt in w.items() if p in m.adapter_units(n))
    e = m.combine(w, name="ab", rank=12)
    assert e.method.name == "lora" and e.config.r == 12 and e.config.scaling == 1.0
    assert sorted(m.adapter_units("ab")) == sorted(paths)
    for p in paths:
        torch.testing.assert_close(delta_of(m, "ab", p), want[p], atol=1e-5, rtol=0)
    # the default rank of "linear" is the sum of the input ranks: the same exact result
    e2 = m.combine(w, name="ab_default")
    assert e2.config.r == 12
    for p in paths:
        torch.testing.assert_close(delta_of(m, "ab_default", p), want[p], atol=1e-5, rtol=0)

    # model output == a clean base with W + sum_i w_i delta_i, and the head is the weighted head
    clean = tiny_bert()
    with torch.no_grad():
        for p in paths:
            lin = clean.get_submodule(p)
            lin.weight.copy_((lin.weight.double() + want[p]).float())
        hidden = clean(input_ids=ids, attention_mask=mask).last_hidden_state
        out = m(ids, mask, adapters="ab")
    torch.testing.assert_close(out.hidden_states, hidden, atol=1e-5, rtol=0)
    for k, t in m.heads["ab"].state_dict().items():
        torch.testing.assert_close(t, 0.6 * m.heads["a"].state_dict()[k] + 0.4 * m.heads["b"].state_dict()[k],
                                   atol=1e-6, rtol=0)
    assert m.heads["ab"].labels == LABELS2

    # saveable, and a plain LoRA for peft
    from peft import PeftModel

    d = m.save_adapter("ab", tmp_path / "ab")
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 12 and cfg["lora_alpha"] == 12
    pm = PeftModel.from_pretrained(tiny_bert(), str(d)).eval()
    with torch.no_grad():
        theirs = pm(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(theirs, out.hidden_states, atol=1e-5, rtol=0)
    m.load_adapter(d, name="ab_loaded")
    with torch.no_grad():
        assert torch.equal(m(ids, mask, adapters="ab_loaded").logits["ab_loaded"], out.logits["ab"])


def _reference_deltas(m, names, paths):
    return {p: [delta_of(m, n, p) if p in m.adapter_units(n) else torch.zeros_like(delta_of(m, "b", p))
                for n in names] for p in paths}


@pytest.mark.parametrize("method", ["ties", "dare", "svd"])
def test_combine_methods_shapes_determinism_and_math(bert2, method):
    m = bert2
    w = {"a": 0.7, "b": 0.5}
    paths = list(m.adapter_units("b"))  # module order
    ref = _reference_deltas(m, list(w), paths)
    e = m.combine(w, name="c1", method=method, density=0.4, seed=3)
    assert e.config.r == 8  # default: the largest input rank
    for p, u in m.adapter_units("c1").items():
        lin = m.base.get_submodule(p).base_layer
        assert tuple(u.lora_A.weight.shape) == (8, lin.in_features)
        assert tuple(u.lora_B.weight.shape) == (lin.out_features, 8)
        assert torch.isfinite(u.lora_A.weight).all() and torch.isfinite(u.lora_B.weight).all()
    m.combine(w, name="c2", method=method, density=0.4, seed=3)
    for p in paths:
        assert torch.equal(m.adapter_units("c1")[p].lora_A.weight, m.adapter_units("c2")[p].lora_A.weight)
        assert torch.equal(m.adapter_units("c1")[p].lora_B.weight, m.adapter_units("c2")[p].lora_B.weight)
    # rank 32 = min(out, in) of every module: the combination itself, untruncated (higher ranks are refused)
    m.combine(w, name="full", method=method, density=0.4, seed=3, rank=32)
    gen = torch.Generator().manual_seed(3)
    for p in paths:
        if method == "ties":
            want = ties_merge(ref[p], list(w.values()), 0.4)
        elif method == "dare":
            want = dare_merge(ref[p], list(w.values()), 0.4, gen)
        else:
            want = linear_merge(ref[p], list(w.values()))
        torch.testing.assert_close(delta_of(m, "full", p), want, atol=1e-5, rtol=0)
        # truncated to rank 8: the best rank-8 approximation of the same combination
        a, b = truncated_svd(want, 8)
        torch.testing.assert_close(delta_of(m, "c1", p), b @ a, atol=1e-5, rtol=0)
    if method == "dare":  # another seed drops other entries
        m.combine(w, name="c3", method=method, density=0.4, seed=4)
        assert any(not torch.equal(m.adapter_units("c1")[p].lora_B.weight, m.adapter_units("c3")[p].lora_B.weight) for p in paths)
    ids, mask = batch()
    with torch.no_grad():
        out = m(ids, mask, adapters=["c1", "a", "c2", "b", "c1"])
        alone = m(ids, mask, adapters="c2").logits["c2"]
    assert torch.isfinite(out.hidden_states).all()
    for i in (0, 2, 4):  # c1 and c2 are the same adapter
        torch.testing.assert_close(out.row_logits(i), alone[i], atol=1e-5, rtol=0)


def test_combine_adalora_and_lora_llama():
    m = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    m.add_adapter("ada", AdaLoRA(init_r=6, target_r=4), task="causal-lm")
    m.add_adapter("l", LoRA(r=2, target_modules=["q_proj", "o_proj"]), task="causal-lm")
    randomize(m, "ada", 1, std=0.3)
    randomize(m, "l", 2, std=0.3)
    m.eval()
    e = m.combine({"ada": 1.0, "l": -0.5}, name="mix")
    assert e.task == "causal-lm" and e.config.r == 8
    for p in m.adapter_units("mix"):
        want = sum(wt * delta_of(m, n, p) for n, wt in (("ada", 1.0), ("l", -0.5)) if p in m.adapter_units(n))
        torch.testing.assert_close(delta_of(m, "mix", p), want, atol=1e-5, rtol=0)
    assert m.generate(TEXTS[:2], adapters="mix", max_new_tokens=3)


def test_combine_errors(bert2):
    m = bert2
    m.add_adapter("a3", LoRA(r=4), labels=["neg", "pos", "mixed"])
    m.add_adapter("a_swapped", LoRA(r=4), labels=["pos", "neg"])
    m.add_adapter("a_cls", LoRA(r=4), labels=LABELS2, pooling="cls")
    before = list(m.adapters)
    cases = [
        (dict(weights={"a": 0.5, "tok": 0.5}), AdapterHubError, "different tasks.*'a': 'sequence-classification'"
                                                                ".*'tok': 'token-classification'"),
        (dict(weights={"a": 0.5, "a3": 0.5}), AdapterHubError, "different labels.*'a3': \\['neg', 'pos', 'mixed'\\]"),
        (dict(weights={"a": 0.5, "a_swapped": 0.5}), AdapterHubError, "different labels"),
        (dict(weights={"a": 0.5, "a_cls": 0.5}), AdapterHubError, "heads differ \\(pooling"),
        (dict(weights={"a": 0.5, "nope": 0.5}), AdapterNameError, "unknown adapter 'nope'"),
        (dict(weights={"a": 0.5, "bn": 0.5}), AdapterHubError, "'bn' is a bottleneck adapter.*nonlinear"),
        (dict(weights={}), AdapterHubError, "non-empty dict"),
        (dict(weights=["a", "b"]), AdapterHubError, "non-empty dict"),
        (dict(weights={"a": float("nan"), "b": 0.5}), AdapterHubError, "weight of 'a' must be a finite number"),
        (dict(weights={"a": "0.5", "b": 0.5}), AdapterHubError, "weight of 'a' must be a finite number"),
        (dict(weights={"a": True, "b": 0.5}), AdapterHubError, "weight of 'a' must be a finite number"),
        (dict(weights={"a": math.inf}), AdapterHubError, "finite"),
        (dict(weights={"a": 1.0, "b": 1.0}, method="mean"), AdapterHubError, "unknown method 'mean'"),
        (dict(weights={"a": 1.0, "b": 1.0}, rank=0), AdapterHubError, "rank must be a positive int"),
        (dict(weights={"a": 1.0, "b": 1.0}, rank=2.5), AdapterHubError, "rank must be a positive int"),
        (dict(weights={"a": 1.0, "b": 1.0}, method="ties", density=0.0), AdapterHubError, "density must be in"),
        (dict(weights={"a": 1.0, "b": 1.0}, method="dare", density=1.5), AdapterHubError, "density must be in"),
        (dict(weights={"a": 1.0, "b": 1.0}, name="b"), AdapterNameError, "already loaded"),
        (dict(weights={"a": 1.0, "b": 1.0}, name="bad name!"), AdapterNameError, ""),
    ]
    for kwargs, exc, pattern in cases:
        kwargs = dict(kwargs)
        kwargs.setdefault("name", "new")
        with pytest.raises(exc, match=pattern):
            m.combine(**kwargs)
        assert m.adapters == before, kwargs
    assert not any(k.startswith("new#") for x in m.base.modules() if isinstance(x, AdaptedLinear) for k in x.units)


# ---------------------------------------------------------------------------------------------------------
# pure math
# ---------------------------------------------------------------------------------------------------------

def test_pure_prune_and_ties_by_hand():
    t = torch.tensor([[0.1, -3.0], [2.0, -0.5]])
    assert torch.equal(magnitude_prune(t, 0.5), torch.tensor([[0.0, -3.0], [2.0, 0.0]]))
    assert torch.equal(magnitude_prune(t, 1.0), t)
    assert torch.equal(magnitude_prune(t, 0.1), torch.zeros_like(t))
    x = torch.tensor([1.0, -2.0, 3.0, 0.0])
    y = torch.tensor([-4.0, -1.0, 1.0, 0.0])
    assert torch.equal(majority_sign([x, y]), torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    # entry 0: only y agrees (-4); entry 1: both (-1.5); entry 2: both (2); entry 3: none (0)
    assert torch.equal(disjoint_mean([x, y], majority_sign([x, y])), torch.tensor([-4.0, -1.5, 2.0, 0.0]))
    # TIES with density 1 and unit weights is the disjoint mean; with density 0.5 only the big entries count
    assert torch.equal(ties_merge([x, y], [1.0, 1.0], 1.0), torch.tensor([-4.0, -1.5, 2.0, 0.0]))
    # density 0.5 keeps the 2 largest magnitudes of each task vector before electing signs
    got = ties_merge([x, y], [1.0, 1.0], 0.5)
    xt, yt = magnitude_prune(x, 0.5), magnitude_prune(y, 0.5)
    assert torch.equal(got, disjoint_mean([xt, yt], majority_sign([xt, yt])))
    assert torch.equal(xt, torch.tensor([0.0, -2.0, 3.0, 0.0]))
    assert torch.equal(combine_deltas([x, y], [0.5, 2.0], "linear"), 0.5 * x + 2.0 * y)
    with pytest.raises(ValueError, match="unknown combination method"):
        combine_deltas([x], [1.0], "avg")
    with pytest.raises(ValueError, match="differ in shape"):
        linear_merge([x, t], [1.0, 1.0])


def test_pure_dare_is_seeded_and_unbiased():
    t = torch.randn(200, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p1 = random_prune(t, 0.3, torch.Generator().manual_seed(1))
    p2 = random_prune(t, 0.3, torch.Generator().manual_seed(1))
    p3 = random_prune(t, 0.3, torch.Generator().manual_seed(2))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    kept = p1 != 0
    assert abs(kept.double().mean().item() - 0.3) < 0.01
    torch.testing.assert_close(p1[kept], t[kept] / 0.3)  # kept entries are rescaled by 1 / density
    assert torch.equal(random_prune(t, 1.0), t)
    g = torch.Generator().manual_seed(5)
    d = dare_merge([t, -t], [1.0, 0.5], 0.5, g)
    assert d.shape == t.shape and torch.isfinite(d).all()
    with pytest.raises(ValueError, match="density"):
        random_prune(t, 0.0)


def test_pure_svd_refactoring():
    g = torch.Generator().manual_seed(0)
    a1, b1 = torch.randn(4, 20, generator=g, dtype=torch.float64), torch.randn(12, 4, generator=g, dtype=torch.float64)
    a2, b2 = torch.randn(8, 20, generator=g, dtype=torch.float64), torch.randn(12, 8, generator=g, dtype=torch.float64)
    full = 0.6 * b1 @ a1 + 0.4 * b2 @ a2            # rank 12 = min(12, 20)
    a, b = truncated_svd(full, 12)
    assert a.shape == (12, 20) and b.shape == (12, 12)
    torch.testing.assert_close(b @ a, full, atol=1e-10, rtol=0)
    a, b = truncated_svd(full, 30)                   # beyond min(out, in): zero-padded
    assert a.shape == (30, 20) and b.shape == (12, 30) and not a[12:].any() and not b[:, 12:].any()
    torch.testing.assert_close(b @ a, full, atol=1e-10, rtol=0)
    # truncation = the best rank-k approximation (Eckart-Young): error == the dropped singular values
    s = torch.linalg.svdvals(full)
    a, b = truncated_svd(full, 5)
    torch.testing.assert_close(torch.linalg.matrix_norm(full - b @ a), s[5:].norm(), atol=1e-9, rtol=0)
    # the factored path gives the same product without forming the full matrix
    for k in (5, 12, 16):
        fa, fb = lowrank_sum_factors([(a1, b1), (a2, b2)], [0.6, 0.4], k)
        ta, tb = truncated_svd(full, k)
        assert fa.shape == ta.shape and fb.shape == tb.shape
        torch.testing.assert_close(fb @ fa, tb @ ta, atol=1e-9, rtol=0)
    torch.testing.assert_close(lowrank_delta(a1, b1, 2.0), 2.0 * b1 @ a1)
    with pytest.raises(ValueError, match="rank"):
        truncated_svd(full, 0)
