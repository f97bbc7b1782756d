"""AdaLoRA: many adapters at once, exact-name allocators, shared budget, pruned files, plain-peft interop."""
from __future__ import annotations

import json

import pytest
import torch

from adapterhub import AdaLoRA, AdapterModel
from adapterhub.errors import AdapterHubError
from adapterhub.recipes import RecipeError, load_recipe
from conftest import make_tokenizer, tiny_bert
from test_training import train_two_processes, write_recipe


def ada_tasks(ws, names=("task1", "task10", "a"), init_r=6, target_r=2, total=16, tinit=2, tfinal=4, **kw):
    return {n: {"type": "sequence-classification", "data": {"type": "csv", "path": str(ws / "sent.csv")},
                "labels": ["neg", "pos"], "max_length": 16,
                "adapter": {"method": "adalora", "init_r": init_r, "target_r": target_r, "total_step": total,
                            "tinit": tinit, "tfinal": tfinal, "deltaT": 2, **kw}} for n in names}


def run(ws, tasks, steps=16, **training):
    from adapterhub.training import Trainer

    path = write_recipe(ws, steps=steps, tasks=tasks, extra_training={"eval_every": 8, **training})
    recipe = load_recipe(path, ["output.store=false"])
    tr = Trainer(recipe, show_progress=False)
    tr.prepare()
    results = tr.train()
    return tr, results


def test_names_task1_task10_a_train_jointly_with_own_allocators(workspace):
    tr, results = run(workspace, ada_tasks(workspace))
    alloc = tr.method_hooks["adalora"].allocator
    assert sorted(g.names for g in alloc.groups) == [["a"], ["task1"], ["task10"]]
    for n in ("task1", "task10", "a"):
        units = tr.model.adapter_units(n)
        assert set(alloc.units[n]) == set(units)  # exactly this adapter's modules, nothing else
        assert alloc.total_rank([n]) == 2 * len(units)  # target_r per module, on average
    report = json.loads((workspace / "run" / "rank_allocation-joint.json").read_text())
    assert set(report["per_task"]) == {"task1", "task10", "a"}
    assert (workspace / "run" / "rank_allocation-joint.png").stat().st_size > 1000
    # ranks differ across modules: the allocator allocated, it did not just truncate uniformly
    ranks = [r for n in ("task1", "task10", "a") for r in report["allocation"][n].values()]
    assert len(set(ranks)) > 1


def test_shared_budget_total_is_exact_and_shares_reported(workspace):
    tasks = ada_tasks(workspace, names=("sent", "other"))
    tr, _ = run(workspace, tasks, adalora_budget="shared", adalora_total_rank=37)
    assert len(tr.method_hooks["adalora"].allocator.groups) == 1
    assert tr.method_hooks["adalora"].allocator.total_rank() == 37
    rep = tr.method_hooks["adalora"].report
    assert sum(v["total_rank"] for v in rep["per_task"].values()) == 37
    assert sum(v["share"] for v in rep["per_task"].values()) == pytest.approx(1.0)


def test_allocator_runs_on_optimizer_steps_only(workspace, monkeypatch):
    from adapterhub.methods.adalora.allocation import RankAllocator

    calls = []
    orig = RankAllocator.step
    monkeypatch.setattr(RankAllocator, "step", lambda self, s: (calls.append(s), orig(self, s))[1])
    run(workspace, ada_tasks(workspace, names=("sent",)), steps=16, grad_accum=3)
    assert calls == list(range(1, 17))


def test_budget_follows_schedule():
    from adapterhub.methods.adalora.allocation import RankAllocator, _Group

    g = _Group(["x"], init_budget=120, target_budget=40, config=AdaLoRA(init_r=12, target_r=4, total_step=100,
                                                                          tinit=10, tfinal=20, deltaT=5))
    assert RankAllocator.budget_at(g, 10) == (120, False)
    b, mask = RankAllocator.budget_at(g, 45)
    assert 40 < b < 120 and mask
    assert RankAllocator.budget_at(g, 81) == (40, True)
    budgets = [RankAllocator.budget_at(g, s)[0] for s in range(0, 101)]
    assert budgets == sorted(budgets, reverse=True)


def _trained_ada_model(seed=0):
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny")
    model.add_adapter("ada", AdaLoRA(init_r=6, target_r=2, total_step=10, target_modules=["query", "value"]),
                      labels=["neg", "pos"])
    torch.manual_seed(seed)
    units = model.adapter_units("ada")
    for i, u in enumerate(units.values()):
        with torch.no_grad():
            u.lora_E.normal_()
            mask = torch.zeros(6, dtype=torch.bool)
            mask[: (i % 4)] = True  # ranks 0..3, one module pruned to 0
            u.set_mask(mask)
    return model


def test_saved_adalora_is_pruned_and_reloads_identically(tmp_path):
    model = _trained_ada_model()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    mask = (ids != 0).long()
    ref = model(ids, mask, adapters="ada").logits["ada"]
    d = model.save_adapter("ada", tmp_path / "ada")
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "ADALORA" and cfg["rank_pattern"]
    from safetensors.torch import load_file

    st = load_file(str(d / "adapter_model.safetensors"))
    ranks = {k: v.shape[0] for k, v in st.items() if k.endswith("lora_E")}
    assert sorted(ranks.values()) == sorted(u.rank for u in model.adapter_units("ada").values())
    assert sum(ranks.values()) < 6 * len(ranks)  # smaller than the unpruned file
    card = json.loads((d / "adapter_card.json").read_text())
    assert card["extra"]["total_rank"] == sum(ranks.values())

    fresh = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny")
    fresh.load_adapter(d)
    torch.testing.assert_close(fresh(ids, mask, adapters="ada").logits["ada"], ref, atol=1e-6, rtol=0)


def test_pruned_adalora_loads_in_plain_peft_and_as_lora(tmp_path):
    from peft import PeftModel

    model = _trained_ada_model()
    model.eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    mask = (ids != 0).long()
    ours = model(ids, mask, adapters="ada").hidden_states
    d = model.save_adapter("ada", tmp_path / "ada")
    peft_model = PeftModel.from_pretrained(tiny_bert(), str(d)).eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)

    d2 = model.save_adapter("ada", tmp_path / "ada-lora", convert_to="lora")
    cfg = json.loads((d2 / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["rank_pattern"]
    lora_model = PeftModel.from_pretrained(tiny_bert(), str(d2)).eval()
    with torch.no_grad():
        theirs = lora_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # and in our model, as a LoRA with per-module ranks
    fresh = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny")
    fresh.load_adapter(d2)
    assert fresh.entry("ada").method.name == "lora"
    torch.testing.assert_close(fresh(ids, mask, adapters="ada").hidden_states, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("override, message", [
    ("tasks.task1.adapter.target_r=9", r"target_r \(9\) must be <= init_r"),
    ("tasks.task1.adapter.total_step=null", r"total_step is missing"),
    ("tasks.task1.adapter.total_step=5", r"total_step \(5\) must be larger than tinit \+ tfinal"),
])
def test_adalora_recipe_errors(workspace, override, message):
    path = write_recipe(workspace, tasks=ada_tasks(workspace))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, [override])


def test_adalora_options_on_lora_adapter_and_bad_budgets(workspace):
    path = write_recipe(workspace)
    with pytest.raises(RecipeError, match=r"unknown option.*target_r"):
        load_recipe(path, ["tasks.sent.adapter.target_r=2"])
    with pytest.raises(RecipeError, match="no task uses an AdaLoRA adapter"):
        load_recipe(path, ["training.adalora_budget=shared"])
    from adapterhub.training import Trainer

    path = write_recipe(workspace, tasks=ada_tasks(workspace, names=("x", "y")),
                        extra_training={"adalora_budget": "shared", "adalora_total_rank": 3})
    tr = Trainer(load_recipe(path), show_progress=False)
    tr.prepare()
    with pytest.raises(AdapterHubError, match="smaller than the number of adapted modules"):
        tr.train()


def test_show_prints_rank_allocation(tmp_path, capsys):
    from adapterhub.cli import main

    model = _trained_ada_model()
    model.store_adapter("ada")
    assert main(["show", "ada"]) == 0
    out = capsys.readouterr().out
    assert "encoder.layer.0.attention.self.query" in out
    assert str(sum(u.rank for u in model.adapter_units("ada").values())) in out


def test_ddp_ranks_identical_on_both_processes(workspace):
    tasks = ada_tasks(workspace, names=("x", "y"), total=8, tinit=1, tfinal=2)
    path = write_recipe(workspace, steps=8, tasks=tasks, extra_training={"eval_every": 4})
    train_two_processes(path)
    run_dir = workspace / "run"
    # the digest covers every unit tensor and its rank mask
    assert (run_dir / "weights-joint-rank0.sha256").read_text() == (run_dir / "weights-joint-rank1.sha256").read_text()
    rep = json.loads((run_dir / "rank_allocation-joint.json").read_text())
    assert rep["per_task"]["x"]["total_rank"] == 2 * rep["per_task"]["x"]["modules"]
