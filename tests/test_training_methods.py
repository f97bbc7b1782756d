"""Prefix tuning and IA3 train through recipes (``method: prefix`` / ``method: ia3``), the CLI, and jointly with
LoRA and bottleneck adapters in one run; a prefix adapter trains on a decoder (causal LM) and generates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from adapterhub.recipes import RecipeError, load_recipe
from conftest import make_tokenizer, tiny_llama
from test_training import run_cli, write_recipe


def _tasks(ws):
    sent = {"type": "sequence-classification", "data": {"type": "csv", "path": str(ws / "sent.csv")},
            "labels": ["neg", "pos"], "max_length": 16}
    ner = {"type": "token-classification", "data": {"type": "conll", "path": str(ws / "ner.conll")}, "max_length": 16}
    return {"sent_prefix": {**sent, "adapter": {"method": "prefix", "num_virtual_tokens": 4}},
            "ner_ia3": {**ner, "adapter": {"method": "ia3"}},
            "sent_lora": {**sent, "adapter": {"method": "lora", "r": 4}},
            "ner_bn": {**ner, "adapter": {"method": "bottleneck", "reduction_factor": 4}}}


def test_prefix_and_ia3_train_jointly_with_lora_and_bottleneck(workspace):
    from adapterhub import AdapterModel
    from adapterhub.store import Store
    from adapterhub.training import train_recipe

    path = write_recipe(workspace, steps=40, tasks=_tasks(workspace), extra_training={"lr": 2e-2, "eval_every": 20})
    results = train_recipe(load_recipe(path))
    assert set(results) == {"sent_prefix", "ner_ia3", "sent_lora", "ner_bn"}
    hist = [json.loads(line) for line in (workspace / "run" / "metrics.jsonl").read_text().splitlines()]
    for task in ("sent_prefix", "ner_ia3"):
        losses = [h[f"loss/{task}"] for h in hist if f"loss/{task}" in h]
        # the trend, not two single noisy steps (tiny data, lr 2e-2: one step's loss swings by 3x)
        k = len(losses) // 4
        assert k >= 2 and sum(losses[-k:]) / k < sum(losses[:k]) / k, (task, losses)
    cards = {t: Store().get(t).card for t in results}
    assert cards["sent_prefix"]["method"] == "prefix" and cards["ner_ia3"]["method"] == "ia3"
    model = AdapterModel.from_pretrained(str(workspace / "base"))
    for t in results:
        model.load_adapter(t)
    texts = ["the film was good", "paris is great", "i hate the plot", "london and the team"]
    mixed = model.predict(texts, adapters=list(results))
    assert mixed == [model.predict(x, adapters=t) for x, t in zip(texts, results)]


def test_cli_trains_prefix_and_ia3(workspace):
    tasks = {k: v for k, v in _tasks(workspace).items() if k in ("sent_prefix", "ner_ia3")}
    path = write_recipe(workspace, mode="separate", steps=6, tasks=tasks, extra_training={"eval_every": 3})
    res = run_cli(["train", str(path)], env_extra={"ADAPTERHUB_HOME": str(workspace / "home")}, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    written = json.loads((workspace / "run" / "results.json").read_text())
    assert set(written) == {"sent_prefix", "ner_ia3"}
    for t, peft_type in (("sent_prefix", "PREFIX_TUNING"), ("ner_ia3", "IA3")):
        stored = Path(written[t]["adapter"]["path"])
        assert stored.is_relative_to(workspace / "home")  # the CLI run's own store
        assert json.loads((stored / "adapter_config.json").read_text())["peft_type"] == peft_type


def test_prefix_trains_on_a_decoder_and_generates(tmp_path):
    from adapterhub import AdapterModel
    from adapterhub.training import train_recipe

    base = tmp_path / "llama"
    tiny_llama().save_pretrained(base)
    make_tokenizer(causal=True).save_pretrained(base)
    with open(tmp_path / "lm.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": "i love the film", "completion": " good" if i % 2 else " great"}) + "\n")
    recipe = {"name": "lm", "base": str(base), "tasks": {"gen": {
        "type": "causal-lm", "data": {"type": "jsonl", "path": str(tmp_path / "lm.jsonl")},
        "adapter": {"method": "prefix", "num_virtual_tokens": 5, "prefix_projection": True}, "max_length": 16}},
        "training": {"mode": "separate", "steps": 8, "batch_size": 4, "lr": 1e-2, "eval_every": 4},
        "output": {"dir": str(tmp_path / "run"), "store": False}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    results = train_recipe(load_recipe(tmp_path / "r.yaml"))
    assert results["gen"].test["perplexity"] > 1.0
    model = AdapterModel.from_pretrained(str(base))
    model.load_adapter(tmp_path / "run" / "adapters" / "gen")
    assert model.entry("gen").banked
    out = model.generate(["i love the film", "the plot"], adapters="gen", max_new_tokens=3)
    assert out == [model.generate([t], adapters="gen", max_new_tokens=3)[0] for t in ["i love the film", "the plot"]]
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[5, 6, 7]]), adapters="gen").logits["gen"]).all()


@pytest.mark.parametrize("overrides, message", [
    (["tasks.sent_prefix.adapter.num_virtual_tokens=0"], r"PrefixTuning\.num_virtual_tokens must be a positive int"),
    (["tasks.sent_prefix.adapter.prefix_projection=maybe"], r"PrefixTuning\.prefix_projection must be true or false"),
    (["tasks.sent_prefix.adapter.virtual_tokens=4"], r"unknown option\(s\) \['virtual_tokens'\]"),
    (["tasks.ner_ia3.adapter.target_modules=[query]", "tasks.ner_ia3.adapter.feedforward_modules=[dense]"],
     r"IA3\.feedforward_modules \['dense'\] are not in IA3\.target_modules"),
])
def test_recipe_errors_name_prefix_and_ia3_options(workspace, overrides, message):
    path = write_recipe(workspace, tasks=_tasks(workspace))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, overrides)
