"""Training: recipes, joint/separate runs on tiny models, resume after SIGKILL, 2-process DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from adapterhub.recipes import RecipeError, load_recipe
from conftest import make_tokenizer, tiny_llama

ROOT = Path(__file__).resolve().parents[1]


def write_recipe(ws: Path, mode="joint", steps=12, extra_training=None, tasks=None) -> Path:
    tasks = tasks or {
        "sent": {"type": "sequence-classification", "data": {"type": "csv", "path": str(ws / "sent.csv")},
                 "labels": ["neg", "pos"], "adapter": {"method": "lora", "r": 4, "target_modules": "all-linear"},
                 "max_length": 16},
        "ner": {"type": "token-classification", "data": {"type": "conll", "path": str(ws / "ner.conll")},
                "adapter": {"method": "bottleneck", "reduction_factor": 4}, "max_length": 16},
    }
    training = {"mode": mode, "steps": steps, "batch_size": 8, "lr": 5e-3, "eval_every": 6, "seed": 0,
                "log_every": 2, **(extra_training or {})}
    recipe = {"name": "tiny", "base": str(ws / "base"), "tasks": tasks, "training": training,
              "output": {"dir": str(ws / "run")}}
    path = ws / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(args, env_extra=None, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "adapterhub", *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, **kw)


# ---- recipe validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("training.stepz=3", r"training\.stepz: unknown key"),
    ("training.batch_size=abc", r"training\.batch_size: expected int"),
    ("tasks.sent.adapter.r=four", r"r must be a positive int"),
    ("tasks.sent.adapter.rank=4", r"unknown option"),
    ("training.mode=both", r"training\.mode: 'both' is not one of"),
    ("tasks.sent.type=regression", r"tasks\.sent\.type"),
    ("tasks.sent.data.colour=red", r"tasks\.sent\.data\.colour: unknown key"),
])
def test_recipe_errors_name_the_key(workspace, override, message):
    path = write_recipe(workspace)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, [override])


def test_shipped_recipes_validate():
    for p in sorted((ROOT / "recipes").glob("*.yaml")):
        r = load_recipe(p)
        assert r.tasks, p


def _trainer(recipe_path, overrides=()):
    from adapterhub.training import Trainer

    return Trainer(load_recipe(recipe_path, list(overrides)), show_progress=False)


@pytest.mark.parametrize("override, message", [
    ("tasks.sent.data.path=/nonexistent/x.csv", r"x\.csv"),
    ("tasks.sent.labels=[neg, positive]", r"pos"),
])
def test_bad_data_fails_before_training(workspace, override, message):
    from adapterhub import AdapterHubError

    tr = _trainer(write_recipe(workspace), [override])
    with pytest.raises(AdapterHubError, match=message):
        tr.prepare()
    assert tr.model.adapters == []  # nothing was created
    assert not (workspace / "run").exists()


def test_empty_dataset(workspace):
    from adapterhub import AdapterHubError

    (workspace / "empty.csv").write_text("text,label\n")
    tr = _trainer(write_recipe(workspace), [f"tasks.sent.data.path={workspace / 'empty.csv'}"])
    with pytest.raises(AdapterHubError, match="empty"):
        tr.prepare()


def test_tokenizer_base_mismatch(workspace):
    from transformers import BertConfig, BertModel

    small = workspace / "small"
    BertModel(BertConfig(vocab_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(small)
    make_tokenizer().save_pretrained(small)
    tr = _trainer(write_recipe(workspace), [f"base={small}"])
    with pytest.raises(RecipeError, match="tokenizer"):
        tr.prepare()


# ---- runs -----------------------------------------------------------------------------------------------

def test_joint_training_stores_adapters_with_metrics(workspace):
    from adapterhub import AdapterModel
    from adapterhub.store import Store
    from adapterhub.training import train_recipe

    recipe = load_recipe(write_recipe(workspace, steps=60, extra_training={"lr": 2e-2, "eval_every": 20}))
    results = train_recipe(recipe)
    run = workspace / "run"
    for f in ("metrics.jsonl", "report.txt", "results.json", "curves.png"):
        assert (run / f).is_file(), f
    # the joint loss fell, and the sentiment task is learnable from its keyword
    hist = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    sent = [h["loss/sent"] for h in hist if "loss/sent" in h]
    assert sent[-1] < sent[0]
    assert results["sent"].test["accuracy"] > 0.7
    assert "f1" in results["ner"].test
    store = Store()
    written = json.loads((run / "results.json").read_text())
    for t in ("sent", "ner"):
        card = store.get(t).card
        assert card["metrics"]["test"]
        assert card["metrics"]["recipe"] == "tiny"
        assert card["extra"]["datasets"] == [("sent.csv" if t == "sent" else "ner.conll")]
        assert store.get(t).version == 1  # written once
        assert written[t]["adapter"] == {"store": t, "version": 1, "path": str(store.get(t).path)}
        assert f"{t}: store {t} v1" in (run / "report.txt").read_text()
    assert not (run / "adapters").exists()  # the store copy is the only one
    model = AdapterModel.from_pretrained(str(workspace / "base"))
    model.load_adapter("sent")
    model.load_adapter("ner")
    preds = model.predict(["good film", "paris was good"], adapters=["sent", "ner"])
    assert preds[0] in ("neg", "pos") and len(preds[1]) == 3


def test_trainer_returns_results_and_leaves_the_registry_alone(workspace):
    tr = _trainer(write_recipe(workspace, steps=4, extra_training={"eval_every": 2}),
                  ["tasks.sent.primary_metric=macro_f1", "output.store=false"])
    tr.prepare()
    results = tr.train()
    tr.close()
    val = [h for h in tr.history if h["split"] == "validation" and h["task"] == "sent"]
    assert [h["step"] for h in val] == [2, 4]
    best = max(val, key=lambda h: h["macro_f1/sent"])  # the first of equals: a later one must be better
    assert results["sent"].best_step == best["step"] and results["sent"].validation["macro_f1"] == best["macro_f1/sent"]
    assert results["sent"].adapter is None  # Trainer.train writes no adapter; train_recipe does, once
    for t in ("sent", "ner"):  # metrics are returned, not written into the model's registry
        assert tr.model.entry(t).metrics == {}
        assert tr.model.entry(t).extra == {"max_length": 16}  # what it was trained with: predict cuts there too
    assert not (workspace / "run" / "adapters").exists()


def test_lower_is_better_metrics_pick_the_lowest():
    from adapterhub.training.tasks import TaskData

    for metric in ("loss", "perplexity"):
        td = TaskData("g", "causal-lm", None, [], [], [], metric)
        assert td.signed_score({metric: 2.0}) > td.signed_score({metric: 3.0})
    td = TaskData("s", "sequence-classification", ["a"], [], [], [], "accuracy")
    assert td.signed_score({"accuracy": 0.9}) > td.signed_score({"accuracy": 0.8})


def test_joint_batches_mix_tasks_and_route_rows(workspace):
    tr = _trainer(write_recipe(workspace))
    tr.prepare()
    from adapterhub.training.batches import draw_batch
    from adapterhub.training.sampling import ExampleStream, TaskSampler

    names = list(tr.tasks)
    streams = {t: ExampleStream(len(tr.tasks[t].train), i) for i, t in enumerate(names)}
    sampler = TaskSampler({t: len(tr.tasks[t].train) for t in names}, "equal", 1.0, 0)
    batch = draw_batch(tr.tasks, streams, sampler, 8, 0, tr.model.tokenizer)
    assert set(batch["adapters"]) == {"sent", "ner"}
    assert batch["labels"]["sent"].dim() == 1 and batch["labels"]["ner"].dim() == 2
    assert sum(len(v) for v in batch["labels"].values()) == len(batch["adapters"])


def test_task_sampling_strategies():
    from adapterhub.training.sampling import TaskSampler, task_probabilities

    sizes = {"a": 900, "b": 100}
    assert task_probabilities(sizes, "proportional")["a"] == pytest.approx(0.9)
    assert task_probabilities(sizes, "equal")["a"] == pytest.approx(0.5)
    assert task_probabilities(sizes, "temperature", 2.0)["a"] == pytest.approx(30 / 40)
    s = TaskSampler(sizes, "equal", 1.0, 0, start_steps={"b": 5})
    assert set(s.draw(50, step=0)) == {"a"}
    assert set(s.draw(200, step=5)) == {"a", "b"}


def test_separate_mode_trains_each_task_alone(workspace):
    from adapterhub.store import Store
    from adapterhub.training import train_recipe

    recipe = load_recipe(write_recipe(workspace, mode="separate", steps=6), ["output.store_prefix=exp-"])
    results = train_recipe(recipe)
    assert set(results) == {"sent", "ner"}
    groups = {json.loads(l)["group"] for l in (workspace / "run" / "metrics.jsonl").read_text().splitlines()}
    assert groups == {"sent", "ner"}
    assert sorted(Store().names()) == ["exp-ner", "exp-sent"]
    assert results["sent"].adapter["store"] == "exp-sent"


def test_causal_lm_recipe_masks_prompt(tmp_path, capsys):
    from adapterhub.store import Store
    from adapterhub.training import train_recipe

    base = tmp_path / "llama"
    tiny_llama().save_pretrained(base)
    make_tokenizer(causal=True).save_pretrained(base)
    with open(tmp_path / "lm.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": "i love the film", "completion": " good" if i % 2 else " great"}) + "\n")
    recipe = {"name": "lm", "base": str(base), "tasks": {"gen": {
        "type": "causal-lm", "data": {"type": "jsonl", "path": str(tmp_path / "lm.jsonl")},
        "adapter": {"method": "lora", "r": 4}, "max_length": 16}},
        "training": {"mode": "separate", "steps": 8, "batch_size": 4, "lr": 1e-2, "eval_every": 4},
        "output": {"dir": str(tmp_path / "run"), "store": False}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    results = train_recipe(load_recipe(tmp_path / "r.yaml"))
    assert results["gen"].test["perplexity"] > 1.0
    assert 0.0 <= results["gen"].test["exact_match"] <= 1.0
    # output.store=false: the run dir holds the one copy, and results.json says so
    assert (tmp_path / "run" / "adapters" / "gen" / "adapter_card.json").is_file()
    assert Store().names() == []
    assert json.loads((tmp_path / "run" / "results.json").read_text())["gen"]["adapter"] == {
        "path": str(tmp_path / "run" / "adapters" / "gen")}
    # one progress line per evaluation, with the validation metrics
    err = capsys.readouterr().err
    assert "validation step 4/8 [gen] gen: loss=" in err and "validation step 8/8 [gen] gen: loss=" in err


# ---- checkpoint / resume ------------------------------------------------------------------------------

def _final_weights(run: Path, task: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapters" / task / "adapter_model.safetensors"))


def test_resume_after_sigkill_matches_uninterrupted_run(workspace, tmp_path):
    steps = 40
    common = [f"training.steps={steps}", "training.save_every=5", "training.eval_every=20", "output.store=false"]
    path = write_recipe(workspace)
    ref = run_cli(["train", str(path), *common, f"output.dir={tmp_path / 'ref'}"], timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    run = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "adapterhub", "train", str(path), *common, f"output.dir={run}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "joint" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline:
        if latest.is_file() and int(latest.read_text().strip().split("-")[1]) >= 10:
            break
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip().split("-")[1])
    assert killed_at < steps
    assert not (run / "adapters").exists()
    # only complete checkpoints are visible
    for d in (run / "checkpoints" / "joint").glob("step-*"):
        assert (d / "state.json").is_file()

    res = run_cli(["train", str(path), *common, f"output.dir={run}", "--resume"], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resume: continuing from" in res.stdout + res.stderr
    for task in ("sent", "ner"):
        a, b = _final_weights(tmp_path / "ref", task), _final_weights(run, task)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=f"{task}:{k}")


def test_resume_refuses_checkpoint_of_another_recipe(workspace, tmp_path):
    from adapterhub.training import train_recipe

    path = write_recipe(workspace, steps=6, extra_training={"save_every": 3})
    train_recipe(load_recipe(path, ["output.store=false"]))
    with pytest.raises(RecipeError, match="another recipe"):
        train_recipe(load_recipe(path, ["output.store=false", "training.lr=0.1"]), resume=True)


# ---- DDP --------------------------------------------------------------------------------------------------

def train_two_processes(recipe_path: Path) -> None:
    """``adapterhub train`` under real 2-process CPU DDP (gloo) via ``accelerate launch --multi_gpu``."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
                           "-m", "adapterhub", "train", str(recipe_path), "output.store=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_two_process_ddp_identical_weights_and_gathered_metrics(workspace):
    path = write_recipe(workspace, steps=8, extra_training={"eval_every": 4})
    train_two_processes(path)
    run = workspace / "run"
    d0 = (run / "weights-joint-rank0.sha256").read_text()
    d1 = (run / "weights-joint-rank1.sha256").read_text()
    assert d0 == d1
    results = json.loads((run / "results.json").read_text())
    from adapterhub.training import Trainer

    tr = Trainer(load_recipe(path), show_progress=False)
    tr.prepare()
    # every validation/test example was scored once: both ranks' shards were gathered
    assert results["sent"]["test"]["n"] == len(tr.tasks["sent"].test)
    assert results["sent"]["validation"]["n"] == len(tr.tasks["sent"].validation)


def test_overrides_and_yaml_read_scientific_notation_as_float(workspace):
    path = write_recipe(workspace)
    assert load_recipe(path, ["training.lr=1e-4"]).training.lr == 1e-4
    path.write_text(path.read_text().replace("lr: 0.005", "lr: 5e-3"))
    assert load_recipe(path).training.lr == 5e-3
