"""Multi-task training (issue 15): length-sorted micro-batches that keep the draw's gradient, adaptive loss weights
(logged, plotted, in the checkpoint), a shared adapter trained beneath each task's own and folded into it on store,
per-task early stopping, and the recipe errors of each new key."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.recipes import RecipeError, load_recipe
from adapterhub.training import Trainer, train_recipe
from test_training import write_recipe

LORA_NER = {"type": "token-classification", "data": {"type": "conll", "path": None},
            "adapter": {"method": "lora", "r": 2, "target_modules": "all-linear"}, "max_length": 16}


def lora_tasks(ws):
    """The tiny sent + ner tasks, both LoRA (a shared adapter folds into linear adapters only)."""
    return {"sent": {"type": "sequence-classification", "data": {"type": "csv", "path": str(ws / "sent.csv")},
                     "labels": ["neg", "pos"], "adapter": {"method": "lora", "r": 4, "target_modules": "all-linear"},
                     "max_length": 16},
            "ner": {**LORA_NER, "data": {"type": "conll", "path": str(ws / "ner.conll")}}}


# ---- recipe errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["shared={method: nope, r: 4}"], r"shared\.method: unknown method 'nope'"),
    (["shared={method: bottleneck}"], r"shared\.method: 'bottleneck' adapters cannot be shared"),
    (["shared={method: ia3}"], r"shared\.method: 'ia3' adapters cannot be shared"),
    (["shared={method: prefix, num_virtual_tokens: 4}"], r"shared\.method: 'prefix' adapters cannot be shared"),
    (["shared={method: lora, r: 4}", "tasks.ner.adapter={method: ia3}"],
     r"tasks\.ner\.adapter\.method: 'ia3' adapters have no low-rank"),
    (["shared={r: 4}"], r"shared\.method: required key is missing"),
    (["shared={method: lora, r: 0}"], r"shared: .*r must be a positive int"),
    (["shared={method: lora, r: 4}"], r"tasks\.ner\.adapter\.method: 'bottleneck' adapters have no low-rank"),
    (["training.loss_weighting=magic"], r"training\.loss_weighting: 'magic' is not one of"),
    (["training.loss_weighting=dwa", "training.mode=separate"], r"training\.loss_weighting: 'dwa' balances .*separate"),
    (["training.loss_weighting=gradnorm", "training.gradnorm_on=shared"],
     r"training\.gradnorm_on: 'shared' .* no shared adapter"),
    (["training.gradnorm_alpha=2"], r"training\.gradnorm_alpha: applies to loss_weighting: gradnorm"),
    (["training.loss_weighting=uncertainty", "training.dwa_window=5"], r"training\.dwa_window: applies to .*dwa"),
    (["training.dwa_temperature=0", "training.loss_weighting=dwa"], r"training\.dwa_temperature: must be > 0"),
    (["training.token_budget=8"], r"training\.token_budget: 8 is below tasks\.\w+\.max_length=16"),
    (["training.token_budget=0"], r"training\.token_budget: must be >= 1"),
    (["tasks.ner.sampling_weight=0"], r"tasks\.ner\.sampling_weight: must be > 0"),
    (["tasks.ner.sampling_weight=2", "training.mode=separate"], r"tasks\.ner\.sampling_weight: weighs .* one task"),
])
def test_multitask_keys_are_checked_by_dotted_key(workspace, overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(workspace), overrides)


def test_shared_needs_joint_mode_and_a_single_task_cannot_weigh(workspace):
    path = write_recipe(workspace, mode="separate", tasks=lora_tasks(workspace))
    with pytest.raises(RecipeError, match=r"^shared: a shared adapter trains .* 'separate'"):
        load_recipe(path, ["shared={method: lora, r: 4}"])
    one = {"sent": lora_tasks(workspace)["sent"]}
    with pytest.raises(RecipeError, match="the recipe has one task"):
        load_recipe(write_recipe(workspace, tasks=one), ["training.loss_weighting=uncertainty"])


def test_sampling_weights_scale_each_strategy():
    from adapterhub.training.sampling import TaskSampler, task_probabilities

    p = task_probabilities({"a": 100, "b": 100, "c": 400}, "equal", weights={"c": 2.0})
    assert p == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5})
    p = task_probabilities({"a": 100, "b": 300}, "proportional", weights={"a": 3.0})
    assert p == pytest.approx({"a": 0.5, "b": 0.5})
    s = TaskSampler({"a": 1, "b": 1}, "equal", 1.0, 0, weights={"a": 3.0})
    drawn = s.draw(4000, 0)
    assert drawn.count("a") / 4000 == pytest.approx(0.75, abs=0.03)
    s.stop("a")  # a task stopped early leaves the sampler
    assert set(s.draw(50, 1)) == {"b"}


# ---- micro-batches ---------------------------------------------------------------------------------------

def test_plan_sorts_by_length_under_the_budget():
    from adapterhub.training.batches import plan

    assert plan([5, 9, 3], None) == [[0, 1, 2]]
    assert plan([5, 9, 3], 27) == [[0, 1, 2]]       # fits: one micro-batch, the draw's order
    parts = plan([30, 4, 30, 5, 6, 29], 60)
    assert sorted(i for p in parts for i in p) == list(range(6))
    for p in parts:
        lens = [[30, 4, 30, 5, 6, 29][i] for i in p]
        assert len(p) * max(lens) <= 60
    assert parts[0] == [1, 3, 4]                      # the short rows together


def test_plan_cuts_where_padding_plus_the_per_micro_batch_cost_is_least():
    """Against every way of cutting the sorted rows into consecutive runs under the budget (brute force)."""
    import itertools
    import random

    from adapterhub.training.batches import MICRO_BATCH_COST, plan

    def cost(parts, lengths):
        return sum(len(p) * max(lengths[i] for i in p) + MICRO_BATCH_COST for p in parts)

    rng = random.Random(0)
    for _ in range(40):
        lengths = [rng.choice([4, 6, 9, 12, 30, 60]) for _ in range(rng.randint(2, 9))]
        budget = rng.choice([60, 90, 128])
        parts = plan(lengths, budget)
        assert sorted(i for p in parts for i in p) == list(range(len(lengths)))
        assert all(len(p) == 1 or len(p) * max(lengths[i] for i in p) <= budget for p in parts)
        if len(parts) == 1 and len(lengths) * max(lengths) <= budget:
            continue
        ls = sorted(lengths)
        best = min(sum(len(r) * r[-1] + MICRO_BATCH_COST for r in runs)
                   for k in range(len(ls)) for cuts in itertools.combinations(range(1, len(ls)), k)
                   for runs in [[ls[a:b] for a, b in zip((0, *cuts), (*cuts, len(ls)))]]
                   if all(len(r) == 1 or len(r) * r[-1] <= budget for r in runs))
        assert cost(parts, lengths) == best, (lengths, budget, parts)


def test_plan_with_tasks_splits_a_run_by_adapter_when_mixing_costs_more():
    """Against brute force over the cut points and, per run, one mixed micro-batch or one per adapter; rows of
    one task that fit the budget stay one micro-batch."""
    import itertools
    import random

    from adapterhub.training.batches import MICRO_BATCH_COST as F, MIXED_ADAPTER_COST as M, plan

    def part_cost(p, lengths):
        return len(p) * max(lengths[i] for i in p) + F

    def run_cost(run, tasks, budget, split):
        if not split:
            k = len({tasks[i] for i in run})
            ok = len(run) == 1 or len(run) * max(lengths[i] for i in run) <= budget
            return part_cost(run, lengths) + M * (k - 1) if ok else None
        parts = [[i for i in run if tasks[i] == t] for t in dict.fromkeys(tasks[i] for i in run)]
        if len(parts) == 1 or any(len(p) > 1 and len(p) * max(lengths[i] for i in p) > budget for p in parts):
            return None
        return sum(part_cost(p, lengths) for p in parts)

    rng = random.Random(0)
    assert plan([5, 9, 3], 60, ["a", "a", "a"]) == [[0, 1, 2]]
    for _ in range(60):
        n = rng.randint(2, 8)
        lengths = [rng.choice([4, 6, 9, 12, 30, 60]) for _ in range(n)]
        tasks = [rng.choice("abc") for _ in range(n)]
        budget = rng.choice([60, 90, 128])
        parts = plan(lengths, budget, tasks)
        assert sorted(i for p in parts for i in p) == list(range(n))
        assert all(len(p) == 1 or len(p) * max(lengths[i] for i in p) <= budget for p in parts)
        if len(set(tasks)) == 1 and n * max(lengths) <= budget:
            continue
        got = sum(part_cost(p, lengths) + M * (len({tasks[i] for i in p}) - 1) for p in parts)
        order = sorted(range(n), key=lambda j: lengths[j])
        best = float("inf")
        for k in range(n):
            for cuts in itertools.combinations(range(1, n), k):
                runs = [order[a:b] for a, b in zip((0, *cuts), (*cuts, n))]
                options = [[c for c in (run_cost(r, tasks, budget, False), run_cost(r, tasks, budget, True))
                            if c is not None] for r in runs]
                if all(options):
                    best = min(best, sum(min(o) for o in options))
        assert got == best, (lengths, tasks, budget, parts)


def test_gradients_are_clipped_per_optimizer_group():
    """One task's huge gradient does not shrink another task's step."""
    from accelerate import Accelerator

    from adapterhub.training.fit import clip_each

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.full((3,), 100.0), torch.tensor([0.3, 0.0, 0.4])
    clip_each(Accelerator(cpu=True), {"ner": [a], "sent": [b]}, max_norm=1.0)
    assert float(a.grad.norm()) == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.0, 0.4]))


def test_micro_batches_keep_the_draws_gradient(workspace):
    """The sum over micro-batches of share * loss has the gradient of the whole draw (same rows, same weights)."""
    from adapterhub.training.batches import draw_rows, micro_batches, to_device

    tr = Trainer(load_recipe(write_recipe(workspace, tasks=lora_tasks(workspace)),
                             ["tasks.sent.max_length=12", "training.batch_size=16"]), show_progress=False)
    tr.prepare()
    from adapterhub.training.setup import setup_group

    g = setup_group(tr.session, ["sent", "ner"], "joint")
    rows = draw_rows(g.streams, g.sampler, 16, 0)
    model = tr.model
    model.eval()  # no dropout: the two computations must agree

    def grads(budget):
        model.zero_grad(set_to_none=True)
        parts = micro_batches(tr.tasks, rows, budget, model.tokenizer)
        for mb in parts:
            b = to_device(mb.batch, "cpu")
            total, _ = g.loss_module(b["input_ids"], b["attention_mask"], b["adapters"], b["labels"], mb.shares)
            total.backward()
        return len(parts), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    n_whole, whole = grads(None)
    n_split, split = grads(24)
    assert n_whole == 1 and n_split > 2
    assert whole.keys() == split.keys() and whole
    for k in whole:
        torch.testing.assert_close(split[k], whole[k], atol=1e-6, rtol=1e-4, msg=k)


def test_training_records_tokens_and_padding(workspace):
    recipe = load_recipe(write_recipe(workspace, steps=4, extra_training={"eval_every": 4}),
                         ["training.token_budget=32", "output.store=false"])
    train_recipe(recipe)
    hist = [json.loads(l) for l in (workspace / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [h for h in hist if h["split"] == "train"]
    assert all(h["tokens"] > 0 and h["padded_tokens"] >= h["tokens"] and 0 <= h["pad_fraction"] < 1 for h in train)
    assert all(h["weight/sent"] == 1.0 and h["weight/ner"] == 1.0 for h in train)  # fixed weights, logged


# ---- loss weighting --------------------------------------------------------------------------------------

@pytest.mark.parametrize("weighting, extra", [
    ("uncertainty", []),
    ("dwa", ["training.dwa_window=2"]),
    ("gradnorm", ["training.gradnorm_lr=0.05"]),
    ("gradnorm", ["training.gradnorm_lr=0.05", "shared={method: lora, r: 2, target_modules: all-linear}"]),
])
def test_adaptive_weights_move_are_logged_and_plotted(workspace, weighting, extra):
    recipe = load_recipe(write_recipe(workspace, steps=12, tasks=lora_tasks(workspace)),
                         [f"training.loss_weighting={weighting}", "training.log_every=1", "output.store=false",
                          *extra])
    results = train_recipe(recipe)
    hist = [json.loads(l) for l in (workspace / "run" / "metrics.jsonl").read_text().splitlines()]
    w = [(h["weight/sent"], h["weight/ner"]) for h in hist if h["split"] == "train"]
    assert len(w) == 12 and all(a > 0 and b > 0 for a, b in w)
    assert len(set(w)) > 1, f"{weighting}: the weights never moved: {w}"
    if weighting in ("dwa", "gradnorm"):  # renormalised: they sum to the number of tasks (loss weights 1)
        assert sum(w[-1]) == pytest.approx(2.0, abs=1e-4)
    from PIL import Image

    width, _ = Image.open(workspace / "run" / "curves.png").size
    assert width > 1500  # three panels: losses, validation metrics, loss weights
    assert results["sent"].test["n"] > 0


class Killed(Exception):
    pass


@pytest.mark.parametrize("weighting, extra", [
    ("uncertainty", []),
    ("dwa", ["training.dwa_window=2"]),
    ("gradnorm", ["shared={method: lora, r: 2, target_modules: all-linear}", "training.early_stopping=1"]),
])
def test_resume_restores_loss_weights_and_the_shared_adapter_exactly(workspace, tmp_path, monkeypatch, weighting,
                                                                     extra):
    """Killed right after the checkpoint of step 6, resumed in a fresh trainer: the same adapters and the same
    logged weights as a run that was never interrupted. Validation scores are scripted so that every run takes the
    same path whatever the floats do: ner never improves after its first evaluation (with ``early_stopping=1`` it
    stops at step 6, so the checkpoint the kill leaves holds a stopped task), sent improves at every one."""
    from adapterhub.training import checkpoint, fit

    real_step, real_eval, now = fit._optimizer_step, fit.evaluate, {"step": 0}

    def counting_step(session, group, step):
        now["step"] = step + 1
        return real_step(session, group, step)

    def scripted_eval(session, task, split, **kw):
        m = real_eval(session, task, split, **kw)
        if split == "validation":
            m.update({"f1": 0.0} if task == "ner" else {"accuracy": now["step"] / 100})
        return m

    monkeypatch.setattr(fit, "_optimizer_step", counting_step)
    monkeypatch.setattr(fit, "evaluate", scripted_eval)
    over = [f"training.loss_weighting={weighting}", "training.log_every=1", "training.save_every=3",
            "training.eval_every=3", "output.store=false", *extra]
    path = write_recipe(workspace, steps=12, tasks=lora_tasks(workspace))
    train_recipe(load_recipe(path, over + [f"output.dir={tmp_path / 'ref'}"]))

    real = checkpoint.save_checkpoint

    def save_then_die(session, group, state):
        real(session, group, state)
        if state.step == 6:
            raise Killed

    monkeypatch.setattr(fit, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train_recipe(load_recipe(path, over + [f"output.dir={tmp_path / 'run'}"]))
    monkeypatch.setattr(fit, "save_checkpoint", real)
    train_recipe(load_recipe(path, over + [f"output.dir={tmp_path / 'run'}"]), resume=True)

    def weights(run):
        return [(h["step"], h["weight/sent"], h["weight/ner"]) for h in map(json.loads, (
            run / "metrics.jsonl").read_text().splitlines()) if h["split"] == "train"]

    assert weights(tmp_path / "run") == weights(tmp_path / "ref")
    if "training.early_stopping=1" in extra:  # the premise: the killed checkpoint holds a stopped task
        recs = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
        trained = {t: max(r["step"] for r in recs if r["split"] == "train" and f"loss/{t}" in r)
                   for t in ("sent", "ner")}
        assert trained == {"sent": 12, "ner": 6}, trained
    for task in ("sent", "ner"):
        a = load_file(str(tmp_path / "ref" / "adapters" / task / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "run" / "adapters" / task / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=f"{task}:{k}")


# ---- the shared adapter in a run ---------------------------------------------------------------------------

def test_shared_adapter_trains_and_each_task_is_stored_self_contained(workspace):
    from adapterhub import AdapterModel
    from adapterhub.store import Store

    recipe = load_recipe(write_recipe(workspace, steps=8, extra_training={"eval_every": 4}, tasks=lora_tasks(workspace)),
                         ["shared={method: lora, r: 3, target_modules: [query, value]}"])
    results = train_recipe(recipe)
    store = Store()
    for t, own in (("sent", 4), ("ner", 2)):
        cfg = json.loads((store.get(t).path / "adapter_config.json").read_text())
        assert cfg["r"] == 3 + own  # shared + own, concatenated
        assert store.get(t).card["metrics"]["test"] == {k: v for k, v in results[t].test.items() if k != "report"}
    model = AdapterModel.from_pretrained(str(workspace / "base"))
    model.load_adapter("sent")
    model.load_adapter("ner")
    assert len(model.predict(["good film", "paris was good"], adapters=["sent", "ner"])) == 2
    # the shared units left the model after the fold
    tr = Trainer(recipe, show_progress=False)
    tr.prepare()
    assert tr.session.shared is not None and tr.session.shared.key == "shared#shared"


# ---- per-task early stopping -----------------------------------------------------------------------------

def test_a_task_that_stops_early_leaves_the_sampler_and_the_others_go_on(workspace, monkeypatch, capsys):
    from adapterhub.training import fit

    calls = {"sent": 0, "ner": 0}

    def scripted(session, task, split="validation", full=False):
        calls[task] += 1
        if task == "sent":
            return {"accuracy": 0.5 + 0.01 * calls[task], "macro_f1": 0.5, "n": 10}
        return {"precision": 0.1, "recall": 0.1, "f1": 0.1, "token_accuracy": 0.9, "n": 10}  # never improves

    monkeypatch.setattr(fit, "evaluate", scripted)
    recipe = load_recipe(write_recipe(workspace, steps=12, extra_training={"eval_every": 2, "early_stopping": 2,
                                                                            "log_every": 1}),
                         ["output.store=false"])
    capsys.readouterr()
    tr = Trainer(recipe, show_progress=False)
    tr.prepare()
    results = tr.train()
    err = capsys.readouterr().err
    assert "early stopping ner at step 6: no improvement in 2 evaluations; it leaves the sampler, sent go on" in err
    train = [h for h in tr.history if h["split"] == "train"]
    assert [h["step"] for h in train if "loss/ner" in h] == [1, 2, 3, 4, 5, 6]
    assert [h["step"] for h in train if "loss/sent" in h] == list(range(1, 13))
    assert [h["step"] for h in tr.history if h.get("task") == "ner"] == [2, 4, 6]
    assert results["ner"].best_step == 2 and results["sent"].best_step == 12


def test_two_process_ddp_with_micro_batches_shared_adapter_and_gradnorm(workspace):
    """Under 2-process DDP: several micro-batches per step (one gradient sync), a shared adapter and GradNorm weights
    averaged over the processes: both ranks end with the same weights."""
    from test_training import train_two_processes

    path = write_recipe(workspace, steps=6, extra_training={"eval_every": 3, "token_budget": 32,
                                                           "loss_weighting": "gradnorm", "log_every": 1},
                        tasks=lora_tasks(workspace))
    raw = path.read_text() + "shared: {method: lora, r: 2, target_modules: all-linear}\n"
    path.write_text(raw)
    train_two_processes(path)
    run = workspace / "run"
    assert (run / "weights-joint-rank0.sha256").read_text() == (run / "weights-joint-rank1.sha256").read_text()
    hist = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    w = [(h["weight/sent"], h["weight/ner"]) for h in hist if h["split"] == "train"]
    assert len(w) == 6 and len(set(w)) > 1
    assert json.loads((run / "adapters" / "sent" / "adapter_config.json").read_text())["r"] == 2 + 4


def test_gradnorm_refuses_activations_that_depend_on_nothing_trainable():
    from adapterhub import AdapterHubError
    from adapterhub.training.weighting import GradNormWeighting

    w = GradNormWeighting(["a", "b"], {"a": 1.0, "b": 1.0}, alpha=1.5, lr=0.025, probe=None)
    hidden = torch.ones(2, 3, 4)  # no autograd path to any parameter
    with pytest.raises(AdapterHubError, match="gradnorm .* depend on no trainable parameter"):
        w.probe({"a": hidden.sum(), "b": hidden.mean()}, {"a": 0.5, "b": 0.5}, hidden)


def test_gradnorm_moves_weight_toward_the_task_that_lags():
    """Equal gradient norms, task b's loss falls slower (higher relative inverse training rate): b's weight rises,
    and the weights keep summing to the loss weights' sum."""
    from adapterhub.training.weighting import GradNormWeighting

    w = GradNormWeighting(["a", "b"], {"a": 1.0, "b": 1.0}, alpha=1.5, lr=0.05, probe=None)
    for losses in ({"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.9}, {"a": 0.4, "b": 0.9}):
        w.sq = {"a": 1.0, "b": 1.0}
        w.after_step(losses, None)
    assert w.w["b"] > 1.0 > w.w["a"] and w.w["a"] + w.w["b"] == pytest.approx(2.0)


def test_dwa_weights_follow_the_ratio_of_the_last_two_windows():
    import math

    from adapterhub.training.weighting import DWAWeighting

    w = DWAWeighting(["a", "b"], {"a": 1.0, "b": 1.0}, temperature=2.0, window=2)
    for losses in ({"a": 1.0, "b": 1.0},) * 2 + ({"a": 0.5, "b": 1.0},) * 2:
        w.after_step(losses, None)
    ea, eb = math.exp(0.5 / 2.0), math.exp(1.0 / 2.0)
    assert w.w == pytest.approx({"a": 2 * ea / (ea + eb), "b": 2 * eb / (ea + eb)})
