"""Quality on MiniLM for the three real tasks (sentiment, topic, NER): full fine-tuning vs LoRA vs bottleneck vs
AdaLoRA (and prefix tuning / IA3 on request), each trained on its own (``separate``), and LoRA trained jointly
(``joint``: every batch mixes the three tasks) and jointly with a shared adapter (``joint+shared``), with the share of
trainable parameters. Same data, splits, batch size, schedule and samples per task for every configuration; the
evaluation subsets are the trainer's seeded random caps (never a prefix) for every configuration, full FT included.

``--sweep`` (the issue's protocol): every configuration's learning rate is chosen by the same small grid search
(``GRIDS``: three log-spaced rates per family, the same three trials for every configuration, full FT included; a
grid rather than ``adapterhub tune``'s TPE, which may repeat a value of a 3-way choice in 3 trials), on the
validation primary metric (joint: its mean over the tasks, as ``adapterhub tune``'s objective); the test metric
reported is the chosen trial's. Without ``--sweep`` each configuration runs once at its
default rate. Trials run as ``--jobs`` child processes (1 torch thread each).

    .venv/bin/python benchmarks/quality.py --sweep --steps 150 --jobs 2        # CPU-sized: results/quality_sweep.json
    .venv/bin/python benchmarks/quality.py --tasks sentiment --methods lora,prefix,ia3 --steps 200
    .venv/bin/python benchmarks/quality.py --quick
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402

TASK_RECIPES = {"sentiment": "sentiment-lora.yaml", "topic": "topic-lora.yaml", "ner": "ner-bottleneck.yaml"}
METHODS = {
    "lora": {"method": "lora", "r": 4, "alpha": 16, "target_modules": "all-linear"},
    "bottleneck": {"method": "bottleneck", "reduction_factor": 32, "placement": "houlsby"},
    "adalora": {"method": "adalora", "init_r": 6, "target_r": 4, "alpha": 16, "target_modules": "all-linear",
                "tinit": 50, "tfinal": 100, "deltaT": 10},
    "prefix": {"method": "prefix", "num_virtual_tokens": 20},
    "ia3": {"method": "ia3"},
}
JOINT = ("joint", "joint+shared")
SHARED = {"method": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"}
#: default learning rates (no sweep) and the sweep grids, per family
LR = {"full": 5e-5, "prefix": 1e-2, "ia3": 5e-3}
GRIDS = {"full": [2e-5, 5e-5, 1.2e-4], "peft": [5e-4, 1.5e-3, 4e-3], "prefix": [3e-3, 1e-2, 3e-2],
         "ia3": [2e-3, 5e-3, 1.2e-2]}
PRIMARY = {"sentiment": "accuracy", "topic": "accuracy", "ner": "f1"}
CAPS = {"max_eval_examples": 300, "max_test_examples": 1000}


def grid(config: str) -> list[float]:
    return GRIDS[config if config in GRIDS else "peft"]


def common(steps: int, batch: int, caps: dict) -> list[str]:
    return [f"training.batch_size={batch}", "output.store=false", "training.early_stopping=null",
            *[f"training.{k}={v}" for k, v in caps.items()]]


def peft_recipe(task: str, method: str, steps: int, batch: int, lr: float | None, caps: dict):
    from adapterhub.recipes import load_recipe

    over = [*common(steps, batch, caps), f"training.steps={steps}", f"training.eval_every={max(1, steps // 3)}"]
    adapter = dict(METHODS[method])
    if method == "adalora":
        adapter.update(total_step=steps, tinit=min(adapter["tinit"], steps // 5),
                       tfinal=min(adapter["tfinal"], steps // 4))
    over.append(f"tasks.{task}.adapter={json.dumps(adapter)}")  # JSON is YAML: the one override mechanism
    lr = lr if lr is not None else LR.get(method)
    if lr is not None:
        over.append(f"training.lr={lr}")
    return load_recipe(C.ROOT / "recipes" / TASK_RECIPES[task], over)


def joint_recipe(variant: str, steps: int, batch: int, lr: float | None, caps: dict):
    """The multitask recipe with the separate runs' settings: every task LoRA r=4 (all-linear), mean pooling for the
    classifiers, one learning rate, equal sampling, 3 x ``steps`` steps (the same samples per task)."""
    from adapterhub.recipes import load_recipe

    lora = json.dumps(METHODS["lora"])
    over = [*common(steps, batch, caps), f"training.steps={3 * steps}", f"training.eval_every={steps}",
            "training.sampling=equal", "tasks.topic.lr=null", "tasks.sentiment.head={pooling: mean}",
            "tasks.topic.head={pooling: mean}", *[f"tasks.{t}.adapter={lora}" for t in PRIMARY]]
    if lr is not None:
        over.append(f"training.lr={lr}")
    if variant == "joint+shared":
        over.append(f"shared={json.dumps(SHARED)}")
    return load_recipe(C.ROOT / "recipes" / "multitask-minilm.yaml", over)


def run_trainer(recipe, run_dir: Path) -> dict:
    """Train a recipe; per task its best validation and test metrics and its final trainable share."""
    from adapterhub import AdapterModel
    from adapterhub.training import Trainer

    model = AdapterModel.from_pretrained(recipe.base)
    total = sum(p.numel() for p in model.base.parameters())
    tr = Trainer(recipe, model=model, run_dir=run_dir, show_progress=False)
    tr.prepare()
    t0 = time.perf_counter()
    results = tr.train()
    out = {}
    for task, res in results.items():
        trainable = final_parameters(model, task)  # joint+shared: the shared ranks folded in, as stored
        out[task] = {"validation": scalars(res.validation), "test": scalars(res.test), "trainable": trainable,
                     "trainable_pct": 100 * trainable / total}
    out["_seconds"] = time.perf_counter() - t0
    return out


def final_parameters(model, task: str) -> int:
    """Trainable parameters the adapter ends with (AdaLoRA: the allocated ranks only, as saved)."""
    if model.entry(task).method.name != "adalora":
        return model.num_parameters(task)
    units = model.adapter_units(task).values()
    head = sum(p.numel() for p in model.heads[task].parameters())
    return head + sum(u.rank * (u.lora_A.shape[1] + u.lora_B.shape[0] + 1) for u in units)


def run_full(task: str, steps: int, batch: int, lr: float | None, caps: dict) -> dict:
    """Full fine-tuning: the same backbone, head, data, schedule and evaluation points, every weight trainable; the
    test metric is taken at the evaluation with the best validation metric (as the trainer keeps its best state)."""
    from transformers import AutoModel, AutoTokenizer, get_scheduler

    from adapterhub.bases import resolve_base
    from adapterhub.data import collate
    from adapterhub.heads import build_head
    from adapterhub.training.evaluate import _capped
    from adapterhub.training.setup import SCHEDULES
    from adapterhub.training.tasks import prepare_task, score

    recipe = peft_recipe(task, "lora", steps, batch, None, caps)  # the task's data and training settings
    spec, tr, lr = recipe.tasks[task], recipe.training, lr if lr is not None else LR["full"]
    path = resolve_base(recipe.base)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(tr.seed)
    data = prepare_task(spec, tok, tr.seed, recipe.base_dir)
    backbone = AutoModel.from_pretrained(path, use_safetensors=True)
    head = build_head(spec.type, backbone.config.hidden_size, data.labels, **spec.head)
    params = list(backbone.parameters()) + list(head.parameters())
    total = sum(p.numel() for p in backbone.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    sched = get_scheduler(SCHEDULES[tr.schedule], opt, num_warmup_steps=tr.warmup_steps, num_training_steps=steps)
    g = torch.Generator().manual_seed(tr.seed)
    val, test = _capped(data.validation, tr.max_eval_examples, tr.seed), _capped(data.test, tr.max_test_examples,
                                                                                tr.seed)

    def forward(feats):
        b = collate(feats, tok)  # the training loop's collate
        logits = head(backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state,
                      b["attention_mask"])
        return logits, b

    def evaluate(examples):
        backbone.eval(), head.eval()
        rows = []
        with torch.no_grad():
            for s in range(0, len(examples), tr.eval_batch_size):
                feats = examples[s:s + tr.eval_batch_size]
                logits, b = forward(feats)
                rows += data.rows_for_scoring(logits, b["labels"], b["attention_mask"],
                                              float(head.loss(logits, b["labels"])), feats)
        backbone.train(), head.train()
        return scalars(score(data, rows))

    t0, best, order = time.perf_counter(), None, []
    every = max(1, steps // 3)
    backbone.train(), head.train()
    for step in range(1, steps + 1):
        if len(order) < tr.batch_size:
            order += torch.randperm(len(data.train), generator=g).tolist()
        idx, order = order[:tr.batch_size], order[tr.batch_size:]
        logits, b = forward([data.train[i] for i in idx])
        head.loss(logits, b["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm or 1e9)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if step % every == 0 or step == steps:
            v = evaluate(val)
            if best is None or v[PRIMARY[task]] > best[0][PRIMARY[task]]:
                best = (v, evaluate(test))
    trainable = sum(p.numel() for p in params)
    return {task: {"validation": best[0], "test": best[1], "trainable": trainable,
                   "trainable_pct": 100 * trainable / total}, "_seconds": time.perf_counter() - t0}


def scalars(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}


def run_one(job: dict, tmp: Path) -> dict:
    """One trial: ``{"config", "task" (separate only), "lr", "steps", "batch", "caps"}`` -> per task metrics."""
    cfg, lr, steps, batch, caps = job["config"], job["lr"], job["steps"], job["batch"], job["caps"]
    if cfg == "full":
        return run_full(job["task"], steps, batch, lr, caps)
    if cfg in JOINT:
        return run_trainer(joint_recipe(cfg, steps, batch, lr, caps), tmp)
    return run_trainer(peft_recipe(job["task"], cfg, steps, batch, lr, caps), tmp)


def run_jobs(jobs: list[dict], n_procs: int) -> list[dict]:
    """Every job in a child process (``--one``), ``n_procs`` at a time, 1 torch thread each; results in job order."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    out: list = [None] * len(jobs)
    with tempfile.TemporaryDirectory() as tmp:
        running: dict = {}
        todo = list(enumerate(jobs))
        while todo or running:
            while todo and len(running) < n_procs:
                i, job = todo.pop(0)
                res, log = Path(tmp) / f"{i}.json", Path(tmp) / f"{i}.log"
                cmd = [sys.executable, __file__, "--one", json.dumps(job), "--one-out", str(res)]
                with open(log, "wb") as err:  # a file, not a pipe: a child's warnings never fill a buffer and block it
                    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
                running[i] = (proc, res, log, time.perf_counter())
            time.sleep(1)
            for i, (proc, res, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                if proc.returncode != 0:
                    raise SystemExit(f"trial {jobs[i]} failed:\n{log.read_text(errors='replace')[-3000:]}")
                out[i] = json.loads(res.read_text())
                print(f"{label(jobs[i]):<24} lr={jobs[i]['lr'] or 'default'!s:<8} " + "  ".join(
                    f"{t}: val {r['validation'].get(PRIMARY[t], float('nan')):.4f} test "
                    f"{r['test'].get(PRIMARY[t], float('nan')):.4f}" for t, r in out[i].items() if t in PRIMARY)
                    + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def label(job: dict) -> str:
    return job["config"] if job["config"] in JOINT else f"{job['task']}/{job['config']}"


def select(jobs: list[dict], results: list[dict]) -> dict:
    """Per configuration (and task, trained separately) the trial with the best validation primary metric (joint:
    the mean over the tasks)."""
    trials: dict = {}
    for job, res in zip(jobs, results):
        key = job["config"] if job["config"] in JOINT else (job["task"], job["config"])
        tasks = [t for t in res if t in PRIMARY]
        objective = sum(res[t]["validation"].get(PRIMARY[t], 0.0) for t in tasks) / len(tasks)
        trials.setdefault(key, []).append({"lr": job["lr"], "objective": objective, "seconds": res["_seconds"],
                                           "tasks": {t: res[t] for t in tasks}})
    return {key: {"trials": ts, "best": max(ts, key=lambda x: x["objective"])} for key, ts in trials.items()}


def report(chosen: dict, tasks: list[str], configs: list[str]) -> list[list]:
    rows = []
    for task in tasks:
        full = chosen.get((task, "full"), {}).get("best", {}).get("tasks", {}).get(task, {}).get("test", {})
        full_v = full.get(PRIMARY[task])
        for cfg in configs:
            best = chosen.get(cfg if cfg in JOINT else (task, cfg), {}).get("best")
            if not best or task not in best["tasks"]:
                continue
            r = best["tasks"][task]
            v = r["test"].get(PRIMARY[task])
            lr = "default" if best["lr"] is None else f"{best['lr']:g}"
            rows.append([task, cfg, lr, PRIMARY[task], r["validation"].get(PRIMARY[task]), v,
                         r["trainable_pct"], (v - full_v) * 100 if None not in (v, full_v) and cfg != "full" else None])
    return rows


def plot(rows: list[list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r[0] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in [r for r in rows if r[0] == task]:
            ax.scatter(r[6], r[5], s=30)
            ax.annotate(f"{r[1]} (lr {r[2]})", (r[6], r[5]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (% of the base)")
        ax.set_ylabel(f"test {PRIMARY[task]}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sentiment,topic,ner")
    ap.add_argument("--methods", "--configs", dest="configs", default="full,lora,bottleneck,adalora",
                    help="full, a method (lora, bottleneck, adalora, prefix, ia3) or joint / joint+shared (LoRA)")
    ap.add_argument("--steps", type=int, default=600, help="steps per task (joint: 3x, the same samples per task)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-eval", type=int, default=CAPS["max_eval_examples"])
    ap.add_argument("--max-test", type=int, default=CAPS["max_test_examples"])
    ap.add_argument("--sweep", action="store_true", help="choose each configuration's lr on validation (--lrs grid)")
    ap.add_argument("--jobs", type=int, default=1, help="trials in parallel (child processes, 1 thread each)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="results dir (default benchmarks/results)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--one-out", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.one:
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
        with tempfile.TemporaryDirectory() as tmp:
            Path(ns.one_out).write_text(json.dumps(run_one(json.loads(ns.one), Path(tmp))))
        return 0
    steps = 20 if ns.quick else ns.steps
    tasks, configs = ns.tasks.split(","), ns.configs.split(",")
    unknown = [c for c in configs if c not in ("full", *METHODS, *JOINT)] + [t for t in tasks if t not in PRIMARY]
    if unknown:
        raise SystemExit(f"--configs/--tasks: unknown {unknown} (configs: full, {', '.join(METHODS)}, "
                         f"{', '.join(JOINT)}; tasks: {', '.join(PRIMARY)})")
    if any(c in JOINT for c in configs) and sorted(tasks) != sorted(PRIMARY):
        raise SystemExit(f"--configs {ns.configs}: joint configurations train all three tasks; give --tasks "
                         f"{','.join(PRIMARY)}")
    caps = {"max_eval_examples": ns.max_eval, "max_test_examples": ns.max_test}
    base = {"steps": steps, "batch": ns.batch_size, "caps": caps}
    jobs = []
    for cfg in configs:
        lrs = grid(cfg) if ns.sweep else [None]
        for task in ([None] if cfg in JOINT else tasks):
            jobs += [{**base, "config": cfg, "task": task, "lr": lr} for lr in lrs]
    t0 = time.perf_counter()
    results = run_jobs(jobs, ns.jobs)
    chosen = select(jobs, results)
    rows = report(chosen, tasks, configs)
    print(C.table(rows, ["task", "config", "lr", "metric", "validation", "test", "trainable %", "vs full (pts)"]))
    name = "quality" + ("_sweep" if ns.sweep else "") + ("_quick" if ns.quick else "")
    out_dir = Path(ns.out) if ns.out else C.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, out_dir / f"{name}.png")
    C.write_result(name, {"steps_per_task": steps, "batch_size": ns.batch_size, "caps": caps, "sweep": ns.sweep,
                          "grids": {c: grid(c) for c in configs} if ns.sweep else None,
                          "selected": {json.dumps(k) if isinstance(k, tuple) else k: v for k, v in chosen.items()},
                          "table": rows, "wall_s": time.perf_counter() - t0, "env": C.env_info("cpu"),
                          "targets": {"peft_vs_full_points": ">= -1.5 on each task", "trainable_pct": "<= 1"}},
                   ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
