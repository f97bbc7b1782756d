"""The method test matrix (peft's TEST_CASES style): every registered method plug-in x {add, forward, mixed batch,
save/load round trip, delete, merge-or-refusal, training step}, on an encoder and a decoder. A new method is
tested by adding a row to CASES; a registered method without a row fails ``test_every_method_has_a_row``."""
from __future__ import annotations

import pytest
import torch

from adapterhub import AdapterModel
from adapterhub.errors import AdapterHubError
from adapterhub.methods import config_classes, get_method, methods
from adapterhub.routing import INPUTS_PATH, AdaptedLinear
from conftest import make_tokenizer, tiny_bert, tiny_llama

C = config_classes()

#: (case id, method name, config kwargs): several rows per method cover its options
CASES = [
    ("lora", "lora", {"r": 4}),
    ("lora-rslora-patterns", "lora", {"r": 4, "use_rslora": True, "target_modules": "all-linear",
                                      "rank_pattern": {"layers.1.*": 2}, "alpha_pattern": {"layers.0.*": 3.0}}),
    ("adalora", "adalora", {"init_r": 4, "target_r": 2, "total_step": 20}),
    ("bottleneck-houlsby", "bottleneck", {"reduction_factor": 4}),
    ("bottleneck-pfeiffer-gelu", "bottleneck", {"reduction_factor": 8, "placement": "pfeiffer",
                                                "non_linearity": "gelu"}),
    ("ia3", "ia3", {}),  # peft's per-architecture targets and feed-forward modules
    ("ia3-regex-ff", "ia3", {"target_modules": r".*\.(value|v_proj|intermediate\.dense|up_proj)",
                             "feedforward_modules": r".*\.(intermediate\.dense|up_proj)"}),
    ("prefix", "prefix", {"num_virtual_tokens": 4}),
    ("prefix-projection", "prefix", {"num_virtual_tokens": 3, "prefix_projection": True, "encoder_hidden_size": 8}),
]
BASES = ["bert", "llama"]


def _config(method: str, kwargs: dict, base: str):
    kw = dict(kwargs)
    if base == "bert" and "rank_pattern" in kw:  # BERT module paths: encoder.layer.N.*
        kw["rank_pattern"] = {"layer.1.*": 2}
        kw["alpha_pattern"] = {"layer.0.*": 3.0}
    return C[get_method(method).config_cls.__name__](**kw)


def _model(base: str) -> AdapterModel:
    if base == "bert":
        return AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    return AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")


def _add(model: AdapterModel, name: str, method: str, kwargs: dict, base: str, seed: int = 0):
    model.add_adapter(name, _config(method, kwargs, base), task="sequence-classification", labels=["a", "b", "c"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # fresh adapters are the identity (B = 0, E = 0, up = 0): make them do something
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _with_two(base: str, method: str, kwargs: dict, names=("a", "b"), trainable: bool = False) -> AdapterModel:
    """A model with two adapters of the case (seeds 1 and 2); ``trainable``: in train mode, both requiring grad."""
    model = _model(base)
    for seed, name in enumerate(names, 1):
        _add(model, name, method, kwargs, base, seed=seed)
    if trainable:
        model.train()
        for name in names:
            for p in model.adapter_parameters(name):
                p.requires_grad_(True)
    return model


def _batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (n, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return ids, mask


def _hidden(model: AdapterModel, ids, mask, adapters):
    with torch.no_grad():
        return model(ids, mask, adapters=adapters).hidden_states


def _base_hidden(model: AdapterModel, ids, mask):
    backbone = model.base.base_model if model.lm_head is not None else model.base
    with torch.no_grad():
        return backbone(input_ids=ids, attention_mask=mask).last_hidden_state


CASE_IDS = [c[0] for c in CASES]
matrix = pytest.mark.parametrize("base", BASES)
cases = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


def test_every_method_has_a_row():
    assert set(methods()) <= {m for _, m, _ in CASES}, "add a row to CASES for every registered method"


@matrix
@cases
def test_add(case, base):
    _, method, kw = case
    model = _model(base)
    model.add_adapter("x", _config(method, kw, base), labels=["a", "b"])
    units = model.adapter_units("x")
    key = model.entry("x").key  # module-level units sit in the Linear's wrapper, input-level ones in the input site
    assert units and all((model.inputs if p == INPUTS_PATH else model.base.get_submodule(p)).holds(key) for p in units)
    assert all(isinstance(model.base.get_submodule(p), AdaptedLinear) for p in units if p != INPUTS_PATH)
    assert model.num_parameters("x", include_head=False) > 0
    assert all(not p.requires_grad for p in model.base_parameters().values())
    assert model.entry("x").method is get_method(method)
    ids, mask = _batch()
    fresh, base_out = _hidden(model, ids, mask, "x"), _base_hidden(model, ids, mask)
    if get_method(method).identity_at_init:  # fresh: the identity, exactly
        torch.testing.assert_close(fresh, base_out, atol=0, rtol=0)
    else:  # (prefix tuning starts from random key/values, as in peft)
        assert torch.isfinite(fresh).all() and (fresh - base_out).abs().max() > 1e-3


@matrix
@cases
def test_forward_changes_output(case, base):
    _, method, kw = case
    model = _model(base)
    _add(model, "x", method, kw, base)
    ids, mask = _batch()
    assert (_hidden(model, ids, mask, "x") - _base_hidden(model, ids, mask)).abs().max() > 1e-3


@matrix
@cases
def test_mixed_batch_equals_rows_alone(case, base):
    _, method, kw = case
    model = _with_two(base, method, kw)
    model.add_adapter("other", C["LoRA"](r=2), labels=["a", "b", "c"])  # another method/rank in the same batch
    with torch.no_grad():
        for p in model.adapter_parameters("other"):
            p.normal_(0, 0.3)
    ids, mask = _batch(6)
    route = ["a", "b", "other", "b", "a", "other"]
    out = model(ids, mask, adapters=route)
    for i, name in enumerate(route):
        alone = model(ids[i:i + 1], mask[i:i + 1], adapters=name)
        torch.testing.assert_close(out.hidden_states[i:i + 1], alone.hidden_states, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.row_logits(i), alone.logits[name][0], atol=1e-5, rtol=0)


@matrix
@cases
def test_mixed_batch_gradients_equal_the_rows_alone(case, base):
    """Training through a mixed batch: each adapter's gradient is the sum of its rows' gradients taken alone."""
    _, method, kw = case
    model = _with_two(base, method, kw, trainable=True)
    model.to(torch.float64)  # float64: the comparison is of the math, not of float32 summation orders
    ids, mask = _batch(4)
    route, params = ["a", "b", "b", "a"], model.adapter_parameters("a") + model.adapter_parameters("b")

    def grads(batches):
        for p in params:
            p.grad = None
        for rows in batches:  # gradients summed over the calls
            h = model(ids[rows], mask[rows], adapters=[route[i] for i in rows]).hidden_states
            (h * torch.linspace(-1, 1, h.shape[-1], dtype=h.dtype)).sum().backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    for mod in model.modules():  # no dropout: the same function row by row
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    for g_mixed, g_alone in zip(grads([[0, 1, 2, 3]]), grads([[0], [1], [2], [3]])):
        torch.testing.assert_close(g_mixed, g_alone, atol=1e-10, rtol=1e-8)


@matrix
@cases
def test_save_load_round_trip(case, base, tmp_path):
    """Trainable units -> files -> trainable units: the same function (the same float ops, 1e-6)."""
    _, method, kw = case
    model = _model(base)
    _add(model, "x", method, kw, base)
    model.save_adapter("x", tmp_path / "x")
    other = _model(base)
    other.load_adapter(tmp_path / "x", name="y", trainable=True)
    assert other.entry("y").method is get_method(method) and not other.entry("y").banked
    assert sorted(other.adapter_units("y")) == sorted(model.adapter_units("x"))
    ids, mask = _batch()
    torch.testing.assert_close(_hidden(other, ids, mask, "y"), _hidden(model, ids, mask, "x"), atol=1e-6, rtol=0)
    assert other.predict(["the film was good"], adapters="y") == model.predict(["the film was good"], adapters="x")


@matrix
@cases
def test_banks_are_exact_and_route_like_units(case, base, tmp_path):
    """The inference layout: load -> banks (default), train -> bank -> save -> load; no value is lost (the files
    written from banks are the files written from units, byte for byte) and outputs agree with the trainable
    layout, alone and in a batch mixing both layouts. The banked product is ordered differently (``(x A^T * e s)
    B^T`` vs ``s (x A^T) B^T``): float32 rounding, amplified through the layers by these large random adapters, so
    the comparison allows 1e-4 (relative and absolute; |h| is up to ~3) where the same-layout checks allow 1e-6."""
    _, method, kw = case
    model = _model(base)
    _add(model, "x", method, kw, base, seed=1)
    _add(model, "t", method, kw, base, seed=2)
    d_units = model.save_adapter("x", tmp_path / "units")
    ids, mask = _batch(6)
    want = _hidden(model, ids, mask, "x")
    model.bank("x")
    assert model.entry("x").banked and model.entry("x").slot > 0
    with pytest.raises(AdapterHubError, match="held in banks"):
        model.adapter_parameters("x")
    close = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_hidden(model, ids, mask, "x"), want, **close)
    d_banks = model.save_adapter("x", tmp_path / "banks")
    for f in ("adapter_model.safetensors", "adapterhub_head.safetensors", "adapter_config.json"):
        assert (d_banks / f).read_bytes() == (d_units / f).read_bytes(), f
    other = _model(base)
    other.load_adapter(d_banks, name="y")  # banked by default
    assert other.entry("y").banked
    torch.testing.assert_close(_hidden(other, ids, mask, "y"), want, **close)
    route = ["x", "t", "x", "t", "t", "x"]  # banked rows beside trainable rows in one forward
    mixed = model(ids, mask, adapters=route).hidden_states
    for i, n in enumerate(route):
        torch.testing.assert_close(mixed[i:i + 1], _hidden(model, ids[i:i + 1], mask[i:i + 1], n), **close)
    model.unbank("x")
    assert not model.entry("x").banked
    torch.testing.assert_close(_hidden(model, ids, mask, "x"), want, atol=1e-6, rtol=0)


@matrix
@cases
def test_delete_restores_base(case, base):
    _, method, kw = case
    model = _model(base)
    before = {k: v.clone() for k, v in model.base_parameters().items()}
    _add(model, "x", method, kw, base)
    model.delete_adapter("x")
    assert model.adapters == [] and "x" not in model.heads
    assert not any(isinstance(m, AdaptedLinear) for m in model.base.modules())
    after = model.base_parameters()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())


@matrix
@cases
def test_merge_or_refusal(case, base):
    _, method, kw = case
    model = _model(base)
    _add(model, "x", method, kw, base)
    ids, mask = _batch()
    want = _hidden(model, ids, mask, "x")
    weights = {k: v.clone() for k, v in model.base_parameters().items()}
    if not get_method(method).mergeable:
        with pytest.raises(AdapterHubError, match="nonlinear.*cannot be merged"):
            model.merge("x")
        assert model.merged is None
        return
    model.merge("x")
    torch.testing.assert_close(_hidden(model, ids, mask, "x"), want, atol=1e-5, rtol=0)
    assert model.unmerge() == "x"
    assert all(torch.equal(model.base_parameters()[k], v) for k, v in weights.items())  # bit for bit


@matrix
@cases
def test_training_step_moves_only_this_adapter(case, base):
    _, method, kw = case
    model = _with_two(base, method, kw, names=("x", "y"), trainable=True)
    frozen_base = {k: v.clone() for k, v in model.base_parameters().items()}
    y_before = {k: v.clone() for k, v in model.adapter_state("y").items()}
    x_before = {k: v.clone() for k, v in model.adapter_state("x").items()}
    opt = torch.optim.SGD(model.adapter_parameters("x"), lr=0.1)
    ids, mask = _batch()
    out = model(ids, mask, adapters=["x", "y", "x", "y"],
                labels={"x": torch.tensor([0, 1]), "y": torch.tensor([2, 0])})
    loss = out.losses["x"]
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.adapter_parameters("x"))
    # y's rows share the batch but not the loss: it gets no gradient (None, or exact zeros through the stacks)
    assert all(p.grad is None or not p.grad.any() for p in model.adapter_parameters("y"))
    opt.step()
    assert any(not torch.equal(v, x_before[k]) for k, v in model.adapter_state("x").items())
    assert all(torch.equal(v, y_before[k]) for k, v in model.adapter_state("y").items())
    assert all(torch.equal(model.base_parameters()[k], v) for k, v in frozen_base.items())
