"""Rank compression (``model.compress`` / ``adapterhub compress``): truncated SVD of each module's delta-W
(:mod:`adapterhub.merge`), per-module ranks from the method plug-in (AdaLoRA's allocation), sizes and the
test-metric change, and every bad input leaving the model and the store as they were."""
from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from adapterhub import AdaLoRA, AdapterHubError, AdapterModel, AdapterNameError, Bottleneck, LoRA
from adapterhub.cli import main
from adapterhub.merge import energy_rank, lowrank_delta, lowrank_svd, split_svd, truncated_svd
from adapterhub.store import Store
from conftest import make_tokenizer, tiny_bert

LABELS = ["neg", "pos"]


def randomize(model: AdapterModel, name: str, seed: int, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def ids_mask():
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 10, 3], [2, 11, 3, 0, 0]])
    return ids, (ids != 0).long()


def delta(model: AdapterModel, name: str, path: str) -> torch.Tensor:
    a, b, s = model.entry(name).method.lowrank_factors(model.adapter_units(name)[path])
    return lowrank_delta(a, b, s, torch.float64)


def state(model: AdapterModel) -> dict:
    return {n: {k: v.clone() for k, v in model.adapter_state(n).items()} for n in model.adapters}


def assert_state(model: AdapterModel, before: dict) -> None:
    assert model.adapters == list(before)
    for n, st in before.items():
        now = model.adapter_state(n)
        assert now.keys() == st.keys() and all(torch.equal(now[k], v) for k, v in st.items()), n


@pytest.fixture
def lora8(bert_model):
    m = bert_model
    m.add_adapter("a", LoRA(r=8, alpha=16, target_modules="all-linear"), labels=LABELS)
    randomize(m, "a", 0)
    m.eval()
    return m


# ---------------------------------------------------------------------------------------------------------
# the math
# ---------------------------------------------------------------------------------------------------------

def test_lowrank_svd_energy_rank_and_split_match_the_dense_svd():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 20, generator=g, dtype=torch.float64), torch.randn(30, 6, generator=g, dtype=torch.float64)
    d = b @ a
    u, s, vh = lowrank_svd([(a, b)], [1.0])
    torch.testing.assert_close(s, torch.linalg.svdvals(d)[:6])
    torch.testing.assert_close(u @ torch.diag(s) @ vh, d)
    for k in (1, 3, 6):
        ak, bk = split_svd(u, s, vh, k)
        a2, b2 = truncated_svd(d, k)
        torch.testing.assert_close(bk @ ak, b2 @ a2)  # the best rank-k approximation (Eckart-Young)
        assert float((d - bk @ ak).norm()) == pytest.approx(float(s[k:].pow(2).sum().sqrt()), abs=1e-9)
    e = s.pow(2) / s.pow(2).sum()
    for k in range(1, 7):
        assert energy_rank(s, float(e[:k].sum())) == k          # exactly reaching the share takes k values
        if k < 6:
            assert energy_rank(s, float(e[:k].sum()) + 1e-6) == k + 1
    assert energy_rank(s, 1.0) == 6 and energy_rank(torch.zeros(4), 0.5) == 1
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="energy must be in"):
            energy_rank(s, bad)
    with pytest.raises(ValueError, match="rank must be a positive int"):
        split_svd(u, s, vh, 0)


# ---------------------------------------------------------------------------------------------------------
# model.compress
# ---------------------------------------------------------------------------------------------------------

def test_compress_to_a_rank_is_the_truncated_svd_of_each_delta(lora8, tmp_path):
    m = lora8
    ids, mask = ids_mask()
    before = state(m)
    e, rep = m.compress("a", "a4", rank=4)
    assert e.method.name == m.entry("a").method.name and e.config.r == 4 and not e.config.rank_pattern
    assert rep.ranks_before == dict.fromkeys(rep.ranks_before, 8) and set(rep.ranks_after.values()) == {4}
    assert rep.params_after * 2 == rep.params_before
    for path in m.adapter_units("a"):
        a2, b2 = truncated_svd(delta(m, "a", path), 4)
        torch.testing.assert_close(delta(m, "a4", path), b2 @ a2, atol=1e-6, rtol=0)
    assert m.entry("a4").extra["compression"]["params"] == [rep.params_before, rep.params_after]
    full, _ = m.compress("a", "a8", rank=8)  # the current rank: exact
    with torch.no_grad():
        torch.testing.assert_close(m(ids, mask, adapters="a8").logits["a8"], m(ids, mask, adapters="a").logits["a"],
                                   atol=1e-5, rtol=0)
        ref = m(ids, mask, adapters="a4").logits["a4"]
    assert_state(m, {**before, "a4": m.adapter_state("a4"), "a8": m.adapter_state("a8")})  # "a" untouched
    d = m.save_adapter("a4", tmp_path / "a4")
    fresh = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    fresh.load_adapter(d)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids, mask, adapters="a4").logits["a4"], ref, atol=1e-6, rtol=0)


def test_compress_by_energy_gives_per_module_ranks_that_load_in_peft(bert_model, tmp_path):
    from peft import PeftModel

    m = bert_model
    m.add_adapter("a", LoRA(r=6, target_modules="all-linear"), labels=LABELS)
    randomize(m, "a", 1)
    units = m.adapter_units("a")
    first = sorted(units)[0]
    with torch.no_grad():  # one module's delta is rank 1 (all of A's rows alike)
        units[first].lora_A.weight.copy_(units[first].lora_A.weight[:1].expand(6, -1))
    m.eval()
    _, rep = m.compress("a", "e", energy=0.95)
    assert rep.ranks_after[first] == 1 and len(set(rep.ranks_after.values())) > 1
    assert all(v >= 0.95 - 1e-9 for v in rep.energy_kept.values())
    assert all(rep.ranks_after[p] <= 6 for p in rep.ranks_after)
    cfg = m.entry("e").config
    assert cfg.r == max(rep.ranks_after.values()) and cfg.rank_pattern[first] == 1
    ids, mask = ids_mask()
    with torch.no_grad():
        ours = m(ids, mask, adapters="e").hidden_states
    d = m.save_adapter("e", tmp_path / "e")
    peft_model = PeftModel.from_pretrained(tiny_bert(), str(d)).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids, attention_mask=mask).last_hidden_state, ours,
                                   atol=1e-5, rtol=0)


def test_adalora_allocation_is_where_compression_starts(bert_model):
    m = bert_model
    m.add_adapter("ada", AdaLoRA(init_r=6, target_r=3, total_step=10, target_modules="all-linear"), labels=LABELS)
    randomize(m, "ada", 2)
    alloc = {}
    for i, (path, unit) in enumerate(sorted(m.adapter_units("ada").items())):
        mask = torch.zeros(6, dtype=torch.bool)
        mask[: i % 5] = True  # ranks 0..4, never init_r
        unit.set_mask(mask)
        alloc[path] = i % 5
    m.eval()
    before = state(m)
    with pytest.raises(AdapterHubError, match=r"rank 5 is above 'ada''s current rank \(4\)"):
        m.compress("ada", "x", rank=5)  # 5 <= init_r, but above every allocated rank
    assert_state(m, before)
    _, rep = m.compress("ada", "c", rank=3)
    assert rep.ranks_after == {p: min(3, r) for p, r in alloc.items() if r}  # rank-0 modules stay out
    _, same = m.compress("ada", "same", rank=4)  # the allocation itself: lossless
    ids, mask = ids_mask()
    with torch.no_grad():
        torch.testing.assert_close(m(ids, mask, adapters="same").logits["same"],
                                   m(ids, mask, adapters="ada").logits["ada"], atol=1e-5, rtol=0)
    assert same.params_after == same.params_before - sum(alloc.values())  # AdaLoRA's E values, folded into A


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rank": 9}, AdapterHubError, r"rank 9 is above 'a''s current rank \(8\); compression only lowers ranks"),
    ({"rank": 0}, AdapterHubError, "rank must be a positive int"),
    ({"rank": True}, AdapterHubError, "rank must be a positive int"),
    ({"rank": "4"}, AdapterHubError, "rank must be a positive int"),
    ({}, AdapterHubError, "exactly one of rank= .* or energy="),
    ({"rank": 2, "energy": 0.9}, AdapterHubError, "exactly one of"),
    ({"energy": 0.0}, AdapterHubError, r"energy must be in \(0, 1\]"),
    ({"energy": 1.5}, AdapterHubError, r"energy must be in \(0, 1\]"),
    ({"energy": float("nan")}, AdapterHubError, r"energy must be in \(0, 1\]"),
    ({"rank": 2, "name": "bn"}, AdapterHubError, "bottleneck adapter.*cannot be compressed"),
    ({"rank": 2, "name": "nope"}, AdapterNameError, "unknown adapter 'nope'"),
    ({"rank": 2, "new": "a"}, AdapterNameError, "already loaded"),
    ({"rank": 2, "new": "bad/name"}, AdapterNameError, "path separator"),
])
def test_bad_compress_requests_change_nothing(lora8, kwargs, error, match):
    m = lora8
    m.add_adapter("bn", Bottleneck(reduction_factor=4), labels=LABELS)
    before = state(m)
    name, new = kwargs.pop("name", "a"), kwargs.pop("new", "small")
    with pytest.raises(error, match=match):
        m.compress(name, new, **kwargs)
    assert_state(m, before)


# ---------------------------------------------------------------------------------------------------------
# adapterhub compress
# ---------------------------------------------------------------------------------------------------------

def run(capsys, *argv):
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def stored(workspace):
    """A LoRA r=8 stored as ``sent`` (v1), made on the workspace's saved base; a bottleneck stored as ``bn``."""
    base = str(workspace / "base")
    m = AdapterModel.from_pretrained(base)
    m.add_adapter("sent", LoRA(r=8, target_modules="all-linear"), labels=LABELS)
    m.add_adapter("bn", Bottleneck(reduction_factor=4), labels=LABELS)
    randomize(m, "sent", 3, std=0.1)
    m.store_adapter("sent")
    m.store_adapter("bn")
    recipe = {"name": "r", "base": base, "tasks": {"sent": {
        "type": "sequence-classification", "labels": LABELS, "max_length": 16,
        "data": {"type": "csv", "path": str(workspace / "sent.csv"), "test": 0.25},
        "adapter": {"method": "lora", "r": 8, "target_modules": "all-linear"}}},
        "training": {"steps": 1, "eval_batch_size": 32}}
    (workspace / "r.yaml").write_text(yaml.safe_dump(recipe))
    return m, workspace / "r.yaml"


def test_cli_compress_stores_a_new_version_with_sizes_and_the_metric_change(capsys, stored):
    m, recipe = stored
    rc, out, err = run(capsys, "compress", "sent", "--rank", "2", "--recipe", str(recipe), "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["stored"] == "sent@v2" and s["source"] == "sent@v1" and s["task"] == "sent"
    assert s["total_rank"] == [8 * 12, 2 * 12] and s["params"][1] * 4 == s["params"][0]
    assert s["file_bytes"][1] < 0.4 * s["file_bytes"][0]
    assert s["test_before"]["n"] == s["test_after"]["n"] == 40 and "accuracy" in s["test_after"]
    card = Store().get("sent").card
    assert card["name"] == "sent" and card["method_config"]["r"] == 2
    assert card["metrics"]["test"] == s["test_after"] and card["extra"]["compression"]["source"] == "sent@v1"
    loaded = AdapterModel.from_pretrained(str(recipe.parent / "base"))
    loaded.load_adapter("sent")
    assert loaded.entry("sent").config.r == 2
    rc, out, err = run(capsys, "compress", "sent@v1", "--energy", "0.9")
    assert rc == 0, err
    assert out.startswith("stored sent@v3 (from sent@v1, energy=0.9): 12 modules") and "weights file" in out


@pytest.mark.parametrize("argv, match", [
    (["sent", "--rank", "9"], r"error: compress: rank 9 is above 'sent@v1''s current rank \(8\)"),
    (["sent", "--energy", "1.5"], r"error: compress: energy must be in \(0, 1\]"),
    (["bn", "--rank", "2"], "error: .*bottleneck adapter.*cannot be compressed"),
    (["nope", "--rank", "2"], "error: no adapter named 'nope'"),
    (["sent", "--rank", "2", "--recipe", "RECIPE", "--task", "other"], "error: recipe 'r' has no task 'other'"),
])
def test_cli_compress_errors_leave_the_store_alone(capsys, stored, argv, match):
    _, recipe = stored
    argv = [str(recipe) if a == "RECIPE" else a for a in argv]
    rc, _, err = run(capsys, "compress", *argv)
    assert rc == 2 and "Traceback" not in err
    assert re.search("^" + match, err, re.M), err
    assert Store().versions("sent") == [1] and Store().versions("bn") == [1]


def test_cli_compress_needs_rank_or_energy(capsys, stored):
    rc, _, err = run(capsys, "compress", "sent")
    assert rc == 2 and "one of the arguments --rank --energy is required" in err
    assert Store().versions("sent") == [1]
