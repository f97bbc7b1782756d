"""A quantized base under full-precision adapters (torchao int8): the modes and why, adapters loading onto it,
mixed batches and hot-swap unchanged, QLoRA-style training, compact merged exports, ``predict --quantize``, and
every bad input leaving the model as it was."""
from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from adapterhub import AdapterHubError, AdapterModel, Bottleneck, LoRA
from adapterhub.model.qlayers import QuantizedEmbedding, QuantizedLinear, dequantized, weight_bytes
from adapterhub.model.quantize import MODES
from conftest import make_tokenizer, tiny_bert

pytest.importorskip("torchao")

TEXTS = ["the film was good", "a bad plot", "i love paris and london", "it was awful", "the actor won"]
LABELS = ["neg", "pos"]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def randomize(model: AdapterModel, name: str, seed: int, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def fresh() -> AdapterModel:
    return AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")


def batch():
    enc = make_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def base_state(model: AdapterModel) -> dict:
    return {k: (type(v), dequantized(v.detach()).clone()) for k, v in model.base_parameters().items()}


def assert_same_base(model: AdapterModel, before: dict) -> None:
    now = base_state(model)
    assert now.keys() == before.keys()
    for k, (cls, v) in before.items():
        assert now[k][0] is cls and torch.equal(now[k][1], v), k


@pytest.fixture
def stored(tmp_path):
    """Three adapters trained (randomised) on the fp32 base and saved: LoRA, all-linear LoRA, bottleneck."""
    m = fresh()
    m.add_adapter("a", LoRA(r=4), labels=LABELS)
    m.add_adapter("b", LoRA(r=2, target_modules="all-linear"), labels=LABELS)
    m.add_adapter("bn", Bottleneck(reduction_factor=4), labels=LABELS)
    for i, n in enumerate(m.adapters):
        randomize(m, n, i)
        m.save_adapter(n, tmp_path / n)
    m.eval()
    return m, tmp_path


# ---------------------------------------------------------------------------------------------------------
# the modes
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(MODES))
def test_each_mode_quantizes_linears_and_embeddings_close_to_fp32(mode):
    ref, m = fresh(), fresh()
    fp = dict(m.base_fingerprint)
    ids, mask = batch()
    info = m.quantize(mode)
    assert m.quantization is info and info.mode == mode
    assert info.linears == 13 and info.embeddings == 3 and info.kept == {}
    assert all(isinstance(mod, QuantizedLinear) for mod in (m.base.pooler.dense, m.base.encoder.layer[0].output.dense))
    assert isinstance(m.base.embeddings.word_embeddings, QuantizedEmbedding)
    assert info.bytes_after == weight_bytes(m.base) and info.bytes_after < 0.45 * info.bytes_before
    assert m.base_fingerprint == fp  # adapters made on fp32 load here, and the other way round
    with torch.no_grad():
        want = ref.base(input_ids=ids, attention_mask=mask).last_hidden_state
        got = m.base(input_ids=ids, attention_mask=mask).last_hidden_state
    assert cos(got, want) > 0.995


def test_the_modes_say_whether_backward_reaches_the_inputs():
    """``trains`` is measured, not assumed: weight-only gives the exact gradient through the dequantized weight,
    the dynamic mode refuses a grad-tracking input instead of silently cutting it off (torchao's own tensor does
    cut it: no gradient reaches ``x``)."""
    from adapterhub.model.quantize import import_torchao, torchao_configs

    for mode, spec in MODES.items():
        m = fresh()
        m.quantize(mode)
        lin = m.base.encoder.layer[0].attention.self.query
        x = torch.randn(3, 32, requires_grad=True)
        if spec.trains:
            lin(x).pow(2).sum().backward()
            xr = x.detach().clone().requires_grad_(True)
            F.linear(xr, dequantized(lin.weight), lin.bias).pow(2).sum().backward()
            torch.testing.assert_close(x.grad, xr.grad)
        else:
            with pytest.raises(AdapterHubError, match="no gradient.*int8-weight-only"):
                lin(x)
            with torch.no_grad():
                lin(x)  # inference is fine
    raw = torch.nn.Linear(32, 32)
    import_torchao().quantize_(raw, torchao_configs("int8")[0])
    x = torch.randn(3, 32, requires_grad=True)
    out = raw(x)
    if out.requires_grad:
        out.sum().backward()
    assert x.grad is None


def test_weight_only_backward_keeps_int8_weights_only():
    """QLoRA-style memory: between forward and backward only the int8 weight is kept, never a dense copy; the
    gradients (input and a trainable bias) are those of the dequantized weight."""
    m = fresh()
    m.quantize("int8-weight-only")
    lin = m.base.encoder.layer[0].intermediate.dense  # [64, 32]
    lin.bias.requires_grad_(True)
    x = torch.randn(2, 3, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t.dtype, tuple(t.shape))) or t,
                                                  lambda t: t):
        y = lin(x)
    assert (torch.int8, (64, 32)) in saved and (torch.float32, (64, 32)) not in saved
    y.pow(2).sum().backward()
    xr, b = x.detach().clone().requires_grad_(True), lin.bias.detach().clone().requires_grad_(True)
    F.linear(xr, dequantized(lin.weight), b).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(lin.bias.grad, b.grad)


def test_output_head_and_its_tied_embedding_stay_full_precision():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True)
    m = AdapterModel(LlamaForCausalLM(cfg).eval(), make_tokenizer(causal=True), base_id="tiny-tied")
    info = m.quantize("int8")
    assert info.kept == {"lm_head": "the output head: logits stay in full precision",
                         "model.embed_tokens": "tied to the output head (one tensor)"}
    assert m.base.lm_head.weight is m.base.model.embed_tokens.weight and type(m.base.lm_head) is torch.nn.Linear
    m.add_adapter("g", LoRA(r=2), task="causal-lm")
    assert len(m.generate(["the film"], adapters="g", max_new_tokens=3)) == 1


# ---------------------------------------------------------------------------------------------------------
# adapters on a quantized base
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(MODES))
def test_adapters_load_in_full_precision_and_mixed_batches_are_unchanged(stored, mode):
    ref, d = stored
    m = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    m.quantize(mode)
    for n in ("a", "b", "bn"):
        m.load_adapter(d / n)
    assert all(t.dtype == torch.float32 for n in ("a", "b", "bn") for t in m.adapter_state(n).values())
    ids, mask = batch()
    route = ["a", "b", "bn", "a", "b"]
    with torch.no_grad():
        mixed = m(ids, mask, adapters=route)
        want = ref(ids, mask, adapters=route)
        for i, n in enumerate(route):
            alone = m(ids[i:i + 1], mask[i:i + 1], adapters=n)
            torch.testing.assert_close(mixed.row_logits(i), alone.logits[n][0], atol=1e-5, rtol=0)
    for n in ("a", "b", "bn"):
        assert cos(mixed.logits[n], want.logits[n]) > 0.99
    # hot swap: a new version replaces the old atomically, the base untouched
    before = base_state(m)
    m.load_adapter(d / "b", name="a", replace=True)
    with torch.no_grad():
        torch.testing.assert_close(m(ids, mask, adapters="a").logits["a"], m(ids, mask, adapters="b").logits["b"])
    assert_same_base(m, before)


def test_training_through_a_dynamic_int8_base_is_refused_not_silent():
    m = fresh()
    m.quantize("int8")
    m.add_adapter("t", LoRA(r=2, target_modules="all-linear"), labels=LABELS)
    ids, mask = batch()
    with pytest.raises(AdapterHubError, match="no gradient"):
        m(ids, mask, adapters="t", labels={"t": torch.tensor([0, 1, 0, 1, 0])})
    with torch.no_grad():
        assert m(ids, mask, adapters="t").logits["t"].shape == (5, 2)


# ---------------------------------------------------------------------------------------------------------
# bad inputs: each with a clear error, the model as it was
# ---------------------------------------------------------------------------------------------------------

def test_unknown_modes_are_refused_before_anything_changes(tmp_path):
    m = fresh()
    before = base_state(m)
    for bad in ("int4", "INT8", "", None, 8):
        with pytest.raises(AdapterHubError, match="^quantize: unknown quantization mode"):
            m.quantize(bad)
    assert m.quantization is None
    assert_same_base(m, before)
    known = r"^quantize: unknown quantization mode 'fp4'; known: \['int8', 'int8-weight-only'\]"
    with pytest.raises(AdapterHubError, match=known):
        AdapterModel.from_pretrained(str(tmp_path / "no-such-base"), quantize="fp4")  # before loading anything


def test_quantizing_twice_and_quantizing_a_merged_base_are_refused(bert_model):
    m = bert_model
    m.add_adapter("a", LoRA(r=2), labels=LABELS)
    randomize(m, "a", 0)
    m.merge("a")
    before = base_state(m)
    with pytest.raises(AdapterHubError, match="'a' is merged.*unmerge"):
        m.quantize("int8")
    assert m.quantization is None
    assert_same_base(m, before)
    m.unmerge()
    m.quantize("int8-weight-only")
    before = base_state(m)
    for mode in MODES:
        with pytest.raises(AdapterHubError, match=rf"^quantize='{mode}': the base is already quantized "
                                                  r"\(int8-weight-only\)"):
            m.quantize(mode)
    assert m.quantization.mode == "int8-weight-only"
    assert_same_base(m, before)


def test_merge_into_an_int8_base_is_refused(bert_model):
    m = bert_model
    m.add_adapter("a", LoRA(r=2), labels=LABELS)
    randomize(m, "a", 0)
    m.quantize("int8")
    before = base_state(m)
    ids, mask = batch()
    with torch.no_grad():
        ref = m(ids, mask, adapters="a").logits["a"]
    with pytest.raises(AdapterHubError, match=r"cannot merge 'a'.*quantized \(int8\).*export_merged"):
        m.merge("a")
    assert m.merged is None
    assert_same_base(m, before)
    with torch.no_grad():
        assert torch.equal(m(ids, mask, adapters="a").logits["a"], ref)


def test_missing_torchao_names_the_extra(bert_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import fails
    before = base_state(bert_model)
    with pytest.raises(AdapterHubError, match=r"needs torchao.*pip install 'adapterhub\[quant\]'"):
        bert_model.quantize("int8")
    assert bert_model.quantization is None
    assert_same_base(bert_model, before)


def test_failed_quantization_changes_nothing(bert_model, monkeypatch):
    from adapterhub.model import quantize as Q

    calls = []
    real = Q._quantized_weight

    def flaky(mod, config):
        calls.append(mod)
        if len(calls) == 7:
            raise RuntimeError("torchao broke")
        return real(mod, config)

    monkeypatch.setattr(Q, "_quantized_weight", flaky)
    before = base_state(bert_model)
    with pytest.raises(RuntimeError, match="torchao broke"):
        bert_model.quantize("int8")
    assert bert_model.quantization is None
    assert not any(isinstance(x, (QuantizedLinear, QuantizedEmbedding)) for x in bert_model.base.modules())
    assert_same_base(bert_model, before)


# ---------------------------------------------------------------------------------------------------------
# compact exports
# ---------------------------------------------------------------------------------------------------------

def test_export_merged_int8_loads_with_from_pretrained(tmp_path, bert_model):
    from transformers import AutoModel

    m = bert_model
    m.add_adapter("a", LoRA(r=4, target_modules="all-linear"), labels=LABELS)
    randomize(m, "a", 1, std=0.1)
    m.eval()
    ids, mask = batch()
    with torch.no_grad():
        want = m(ids, mask, adapters="a").hidden_states
    d = m.export_merged("a", tmp_path / "x", quantize="int8")
    assert m.quantization is None and m.merged is None
    q = json.loads((d / "adapterhub_merged.json").read_text())["quantization"]
    assert q["mode"] == "int8" and q["quantized_modules"] == 16 and q["max_relative_error"] < 0.02
    assert q["weights_file_bytes"] == (d / "model.safetensors").stat().st_size < q["full_precision_bytes"]
    assert json.loads((d / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"
    plain = AutoModel.from_pretrained(d)
    assert type(plain.encoder.layer[0].attention.self.query.weight).__name__ == "Int8Tensor"
    loaded = AdapterModel.from_pretrained(str(d))
    assert loaded.quantization.mode == "int8" and loaded.quantization.linears == 13
    assert isinstance(loaded.base.embeddings.word_embeddings, QuantizedEmbedding)
    with torch.no_grad():
        assert cos(loaded.base(input_ids=ids, attention_mask=mask).last_hidden_state, want) > 0.995
        assert cos(plain(input_ids=ids, attention_mask=mask).last_hidden_state, want) > 0.995
    with pytest.raises(AdapterHubError, match=r"^quantize='int8': the base is already quantized \(int8\)"):
        AdapterModel.from_pretrained(str(d), quantize="int8")


def test_export_from_an_int8_base_requantizes_and_says_so(tmp_path, stored):
    _, src = stored
    m = fresh()
    m.quantize("int8")
    m.load_adapter(src / "b")
    before = base_state(m)
    d = m.export_merged("b", tmp_path / "x")  # default: the base's own mode
    q = json.loads((d / "adapterhub_merged.json").read_text())["quantization"]
    assert q["mode"] == "int8" and q["requantized_from"] == "int8"
    assert_same_base(m, before)
    with pytest.raises(AdapterHubError, match="^quantize: unknown quantization mode 'int4'"):
        m.export_merged("b", tmp_path / "y", quantize="int4")
    assert not (tmp_path / "y").exists()


# ---------------------------------------------------------------------------------------------------------
# QLoRA-style training and the command line
# ---------------------------------------------------------------------------------------------------------

def test_qlora_training_on_int8_weight_only_loads_on_the_fp32_base(workspace):
    import yaml

    from adapterhub.recipes import RecipeError, load_recipe
    from adapterhub.store import Store
    from adapterhub.training import train_recipe

    recipe = {"name": "q", "base": str(workspace / "base"), "base_quantize": "int8-weight-only",
              "tasks": {"sent": {"type": "sequence-classification",
                                 "data": {"type": "csv", "path": str(workspace / "sent.csv")}, "labels": LABELS,
                                 "adapter": {"method": "lora", "r": 4, "target_modules": "all-linear"},
                                 "max_length": 16}},
              "training": {"steps": 30, "batch_size": 16, "lr": 2e-2, "eval_every": 15, "seed": 0},
              "output": {"dir": str(workspace / "run")}}
    path = workspace / "q.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"base_quantize: a base quantized with 'int8' cannot train"):
        load_recipe(path, ["base_quantize=int8"])
    with pytest.raises(RecipeError, match=r"base_quantize: unknown quantization mode 'nf3'"):
        load_recipe(path, ["base_quantize=nf3"])
    results = train_recipe(load_recipe(path))
    entry = Store().get("sent")
    assert entry.card["extra"]["trained_on_base_quantized"] == "int8-weight-only"
    assert results["sent"].test["accuracy"] > 0.7
    texts = [line.split(",")[0] for line in (workspace / "sent.csv").read_text().splitlines()[1:81]]
    q = AdapterModel.from_pretrained(str(workspace / "base"), quantize="int8-weight-only")
    fp = AdapterModel.from_pretrained(str(workspace / "base"))
    q.load_adapter("sent")
    fp.load_adapter("sent")  # the fp32 fingerprint: no base mismatch
    agree = sum(a == b for a, b in zip(q.predict(texts, adapters="sent"), fp.predict(texts, adapters="sent")))
    assert agree / len(texts) >= 0.95


def test_training_refuses_a_base_that_does_not_match_or_cannot_train(workspace):
    """A model handed to a run must be quantized as the recipe says; a base quantized with a torchao layout
    adapterhub does not run itself (here per-tensor int8) is left to torchao, and never trained on."""
    import yaml

    from adapterhub.model.quantize import import_torchao
    from adapterhub.recipes import RecipeError, load_recipe
    from adapterhub.training import Trainer
    from torchao.quantization.granularity import PerTensor

    recipe = {"name": "q", "base": str(workspace / "base"), "base_quantize": "int8-weight-only",
              "tasks": {"sent": {"type": "sequence-classification", "labels": LABELS,
                                 "data": {"type": "csv", "path": str(workspace / "sent.csv")},
                                 "adapter": {"method": "lora", "r": 2}}},
              "training": {"steps": 2}, "output": {"dir": str(workspace / "run")}}
    (workspace / "q.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"base_quantize: the recipe asks for 'int8-weight-only', the given "
                                          r"model's base is not quantized"):
        Trainer(load_recipe(workspace / "q.yaml"), model=fresh())
    int8 = fresh()
    int8.quantize("int8")
    with pytest.raises(RecipeError, match="asks for 'int8-weight-only'.*base is int8"):
        Trainer(load_recipe(workspace / "q.yaml"), model=int8)
    with pytest.raises(RecipeError, match="base: a base quantized with 'int8' cannot train"):
        Trainer(load_recipe(workspace / "q.yaml", ["base_quantize=null"]), model=int8)
    base = tiny_bert()
    q = import_torchao()
    q.quantize_(base, q.Int8WeightOnlyConfig(granularity=PerTensor()))
    other = AdapterModel(base, make_tokenizer(), base_id="tiny-bert")
    assert other.quantization.mode == "torchao" and other.quantization.linears == 0
    assert all(r == "Int8Tensor: left to torchao's kernels" for r in other.quantization.kept.values())
    with pytest.raises(RecipeError, match="does not run itself"):
        Trainer(load_recipe(workspace / "q.yaml", ["base_quantize=null"]), model=other)
    with pytest.raises(AdapterHubError, match=r"already quantized \(torchao\)"):
        other.quantize("int8")
    other.add_adapter("s", LoRA(r=2), labels=LABELS)
    with torch.no_grad():
        assert other(*batch(), adapters="s").logits["s"].shape == (5, 2)  # inference runs on torchao's kernels


def test_predict_quantize_on_the_command_line(tmp_path, capsys):
    from adapterhub.cli import main

    d = tmp_path / "base"
    base, tok = tiny_bert(), make_tokenizer()
    base.save_pretrained(d)
    tok.save_pretrained(d)
    m = AdapterModel(base, tok, base_id=str(d))
    m.add_adapter("s", LoRA(r=4), labels=LABELS)
    randomize(m, "s", 2)
    m.store_adapter("s")
    want = m.predict(TEXTS, adapters="s")
    capsys.readouterr()
    assert main(["predict", "s", *TEXTS, "--quantize", "int8", "--json"]) == 0
    got = [r["prediction"] for r in json.loads(capsys.readouterr().out)]
    assert sum(a == b for a, b in zip(got, want)) >= len(TEXTS) - 1
    assert main(["predict", "s", *TEXTS, "--quantize", "int3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --quantize: unknown quantization mode 'int3'") and "Traceback" not in err


def test_serve_quantize_builds_an_int8_base_under_full_precision_adapters(tmp_path, capsys):
    """``adapterhub serve --quantize int8``: the served model's base is int8, stored adapters load on first use in
    full precision and answer as the in-process quantized model does; a mode that does not exist is refused
    naming --quantize before anything loads."""
    pytest.importorskip("starlette")
    from adapterhub.cli import build_parser, main
    from adapterhub.cli.serve_commands import _model
    from serve_helpers import call, serving

    d = tmp_path / "base"
    base, tok = tiny_bert(), make_tokenizer()
    base.save_pretrained(d)
    tok.save_pretrained(d)
    src = AdapterModel(base, tok, base_id=str(d))
    src.add_adapter("s", LoRA(r=4), labels=LABELS)
    randomize(src, "s", 2)
    src.store_adapter("s")
    args = build_parser().parse_args(["serve", "--base", str(d), "--quantize", "int8"])
    model = _model(args, str(d))
    assert model.quantization.mode == "int8" and model.residency.store is not None
    ref = AdapterModel.from_pretrained(str(d), quantize="int8")
    ref.load_adapter("s")
    with serving(model) as srv:
        status, _, body = call(srv, "POST", "/v1/predict", {"inputs": TEXTS, "adapter": "s"})
    assert status == 200, body
    assert [r["label"] for r in body["predictions"]] == ref.predict(TEXTS, adapters="s")
    assert model.quantization.mode == "int8" and model.entry("s").method.name == "lora"
    capsys.readouterr()
    assert main(["serve", "--base", str(tmp_path / "no-such-base"), "--quantize", "int4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --quantize: unknown quantization mode 'int4'") and "Traceback" not in err


def test_ia3_and_prefix_adapters_run_on_a_quantized_base():
    """IA3 (output and input scalings) and prefix tuning (an input-level site, outside the base) stay in full
    precision on an int8 base, are close to the fp32 outputs, train on int8-weight-only; an IA3 input scaling on the
    dynamic int8 base, which has no gradient, is refused rather than left untrained."""
    from adapterhub.methods.ia3 import IA3
    from adapterhub.methods.prefix import PrefixTuning

    def build(mode):
        m = fresh()
        m.add_adapter("i", IA3(), labels=LABELS)
        m.add_adapter("p", PrefixTuning(num_virtual_tokens=4), labels=LABELS)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n in ("i", "p"):
                for q in m.adapter_parameters(n):
                    q.add_(torch.randn(q.shape, generator=g) * 0.3)
        if mode:
            m.quantize(mode)
        return m

    ids, mask = batch()
    ref = build(None)
    for mode in MODES:
        m = build(mode)
        assert all(type(q) is torch.nn.Parameter and q.dtype == torch.float32
                   for n in ("i", "p") for q in m.adapter_parameters(n))
        with torch.no_grad():
            for n in ("i", "p"):
                assert cos(m(ids, mask, adapters=n).hidden_states, ref(ids, mask, adapters=n).hidden_states) > 0.99
            rows = ["i", "p", "i", "p", "i"]
            assert cos(m(ids, mask, adapters=rows).hidden_states, ref(ids, mask, adapters=rows).hidden_states) > 0.99
    m = build("int8-weight-only")
    m.train()
    for n in ("i", "p"):
        sum(m(ids, mask, adapters=n, labels={n: torch.tensor([0, 1, 0, 1, 0])}).losses.values()).backward()
        assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in m.adapter_parameters(n))
    m = fresh()
    m.add_adapter("ff", IA3(target_modules=["output.dense"], feedforward_modules=["output.dense"]), labels=LABELS)
    m.quantize("int8")
    m.train()
    with pytest.raises(AdapterHubError, match=r"IA3: the base weight \(Int8Tensor\) gives no gradient"):
        m(ids, mask, adapters="ff", labels={"ff": torch.tensor([0, 1, 0, 1, 0])})
