"""A shared adapter beneath each task's own (issue 15, item 3): per row shared + own through the one route, and the
fold into one self-contained LoRA of rank r_shared + r_task with identical outputs (adapterhub and plain peft)."""
from __future__ import annotations

import pytest
import torch

from adapterhub import AdapterHubError, AdapterModel
from adapterhub.methods import config_from_dict
from adapterhub.model.shared import add_shared, fold_shared, remove_shared, shared_parameters
from conftest import make_tokenizer, tiny_bert


def _randomize(params, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _model_with_shared():
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    model.add_adapter("a", config_from_dict({"method": "lora", "r": 4, "target_modules": "all-linear"}),
                      labels=["neg", "pos"])
    model.add_adapter("b", config_from_dict({"method": "lora", "r": 2, "alpha": 3, "target_modules": ["query"]}),
                      labels=["x", "y", "z"])
    shared = add_shared(model, "common", config_from_dict({"method": "lora", "r": 8, "target_modules": ["query",
                                                                                                       "value"]}))
    _randomize(shared_parameters(model, shared), 1)
    _randomize(model.adapter_parameters("a", include_head=False), 2)
    _randomize(model.adapter_parameters("b", include_head=False), 3)
    model.eval()
    return model, shared


def _batch(model):
    enc = model.tokenizer(["the film was good", "obama said paris", "i love new york city", "bad plot"],
                          padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_shared_units_apply_to_every_row_beneath_its_own():
    model, shared = _model_with_shared()
    ids, mask = _batch(model)
    rows = ["a", "b", "b", "a"]
    plain = model(ids, mask, adapters=rows)
    both = model(ids, mask, adapters=rows, shared=[shared.key])
    assert not torch.allclose(plain.logits["a"], both.logits["a"])
    # per row: the same as that row alone with the shared adapter (the route is per row, the shared part uniform)
    for i, name in enumerate(rows):
        alone = model(ids[i:i + 1], mask[i:i + 1], adapters=name, shared=[shared.key])
        torch.testing.assert_close(both.row_logits(i), alone.logits[name][0], atol=1e-5, rtol=0)


def test_fold_is_one_lora_of_summed_rank_with_identical_outputs(tmp_path):
    model, shared = _model_with_shared()
    ids, mask = _batch(model)
    rows = ["a", "b", "b", "a"]
    before = model(ids, mask, adapters=rows, shared=[shared.key])
    for name in ("a", "b"):
        fold_shared(model, name, shared)
    remove_shared(model, shared)
    after = model(ids, mask, adapters=rows)
    for name in ("a", "b"):
        torch.testing.assert_close(after.logits[name], before.logits[name], atol=1e-5, rtol=0)
    e = model.entry("a")
    assert e.method is shared.method and e.config.r == 8 + 4  # r_shared + r_task (query/value: both targeted)
    assert model.entry("b").config.r == 8 + 2
    # self-contained on disk: a fresh model (banked, the inference layout) and plain peft give the same outputs
    model.save_adapter("a", tmp_path / "a")
    fresh = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    fresh.load_adapter(tmp_path / "a", name="a")
    torch.testing.assert_close(fresh(ids, mask, adapters="a").logits["a"], model(ids, mask, adapters="a").logits["a"],
                               atol=1e-5, rtol=0)
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(tiny_bert(), str(tmp_path / "a")).eval()
    want = model(ids, mask, adapters="a").hidden_states
    with torch.no_grad():
        got = peft_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_fold_refuses_a_task_adapter_without_low_rank_factors():
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    model.add_adapter("n", config_from_dict({"method": "bottleneck", "reduction_factor": 4}), labels=["O", "B-x"])
    shared = add_shared(model, "common", config_from_dict({"method": "lora", "r": 2}))
    with pytest.raises(AdapterHubError, match="no low-rank factors"):
        fold_shared(model, "n", shared)
    with pytest.raises(AdapterHubError, match="cannot be folded"):
        add_shared(model, "other", config_from_dict({"method": "bottleneck", "reduction_factor": 4}))
