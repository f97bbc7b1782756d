"""Quality on MiniLM for the three real tasks: full fine-tuning vs LoRA vs Bottleneck vs AdaLoRA vs prefix tuning
vs IA3, with the share of trainable parameters. Same data, splits, steps, batch size and schedule for every method;
each PEFT method uses its recipe's learning rate, except prefix tuning (1e-2) and IA3 (5e-3), whose few parameters
need larger steps (the usual settings for them); full fine-tuning uses a standard 5e-5 (higher rates diverge).

    .venv/bin/python benchmarks/quality.py                      # all tasks, all methods
    .venv/bin/python benchmarks/quality.py --tasks sentiment --methods lora,full --steps 100
    .venv/bin/python benchmarks/quality.py --quick
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402

from adapterhub.recipes import load_recipe  # noqa: E402

TASK_RECIPES = {"sentiment": "sentiment-lora.yaml", "topic": "topic-lora.yaml", "ner": "ner-bottleneck.yaml"}
METHODS = {
    "lora": {"method": "lora", "r": 4, "alpha": 16, "target_modules": "all-linear"},
    "bottleneck": {"method": "bottleneck", "reduction_factor": 32, "placement": "houlsby"},
    "adalora": {"method": "adalora", "init_r": 6, "target_r": 4, "alpha": 16, "target_modules": "all-linear",
                "tinit": 50, "tfinal": 100, "deltaT": 10},
    "prefix": {"method": "prefix", "num_virtual_tokens": 20},
    "ia3": {"method": "ia3"},
}
LR = {"prefix": 1e-2, "ia3": 5e-3}  # per-method learning rates (others: the recipe's)
PRIMARY = {"sentiment": "accuracy", "topic": "accuracy", "ner": "f1"}


def recipe_for(task: str, method: str, steps: int, device: str):
    over = [f"training.steps={steps}", f"training.eval_every={max(1, steps // 3)}", "output.store=false",
            "training.max_test_examples=2000", "training.max_eval_examples=500"]
    if method in METHODS:
        adapter = dict(METHODS[method])
        if method == "adalora":
            adapter.update(total_step=steps, tinit=min(adapter["tinit"], steps // 5),
                           tfinal=min(adapter["tfinal"], steps // 4))
        over.append(f"tasks.{task}.adapter={json.dumps(adapter)}")  # JSON is YAML: the one override mechanism
        if method in LR:
            over.append(f"training.lr={LR[method]}")
    return load_recipe(C.ROOT / "recipes" / TASK_RECIPES[task], over)


def run_peft(task: str, method: str, steps: int, device: str, run_dir: Path) -> dict:
    from adapterhub import AdapterModel
    from adapterhub.training import Trainer

    recipe = recipe_for(task, method, steps, device)
    model = AdapterModel.from_pretrained(recipe.base)
    total = sum(p.numel() for p in model.base.parameters())
    tr = Trainer(recipe, model=model, run_dir=run_dir, show_progress=False)
    tr.prepare()
    t0 = time.perf_counter()
    res = tr.train()[task]
    trainable = final_parameters(model, task)
    return {"test": C_scalars(res.test), "trainable": trainable, "trainable_pct": 100 * trainable / total,
            "seconds": time.perf_counter() - t0}


def final_parameters(model, task: str) -> int:
    """Trainable parameters the adapter ends with (AdaLoRA: the allocated ranks only, as saved)."""
    if model.entry(task).method.name != "adalora":
        return model.num_parameters(task)
    units = model.adapter_units(task).values()
    head = sum(p.numel() for p in model.heads[task].parameters())
    return head + sum(u.rank * (u.lora_A.shape[1] + u.lora_B.shape[0] + 1) for u in units)


def run_full(task: str, steps: int, device: str, lr: float = 5e-5) -> dict:
    """Full fine-tuning baseline: the same backbone, head, data and schedule, every weight trainable."""
    from transformers import AutoModel, AutoTokenizer, get_scheduler

    from adapterhub.data import collate
    from adapterhub.heads import build_head
    from adapterhub.bases import resolve_base
    from adapterhub.training.tasks import prepare_task, score

    recipe = recipe_for(task, "full", steps, device)
    spec, tr = recipe.tasks[task], recipe.training
    path = resolve_base(recipe.base)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(tr.seed)
    data = prepare_task(spec, tok, tr.seed, recipe.base_dir)
    backbone = AutoModel.from_pretrained(path, use_safetensors=True).to(device)
    head = build_head(spec.type, backbone.config.hidden_size, data.labels, **spec.head).to(device)
    params = list(backbone.parameters()) + list(head.parameters())
    total = sum(p.numel() for p in backbone.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    sched = get_scheduler("linear", opt, num_warmup_steps=tr.warmup_steps, num_training_steps=steps)
    g = torch.Generator().manual_seed(tr.seed)

    def batch(feats):
        b = collate(feats, tok)  # the training loop's collate
        return b["input_ids"].to(device), b["attention_mask"].to(device), b["labels"].to(device)

    t0 = time.perf_counter()
    backbone.train()
    head.train()
    order: list[int] = []
    for step in range(steps):
        if len(order) < tr.batch_size:
            order += torch.randperm(len(data.train), generator=g).tolist()
        idx, order = order[:tr.batch_size], order[tr.batch_size:]
        ids, mask, y = batch([data.train[i] for i in idx])
        logits = head(backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        loss = head.loss(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm or 1e9)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    backbone.eval()
    head.eval()
    rows = []
    test = data.test[: tr.max_test_examples] if tr.max_test_examples else data.test
    with torch.no_grad():
        for s in range(0, len(test), tr.eval_batch_size):
            feats = test[s:s + tr.eval_batch_size]
            ids, mask, y = batch(feats)
            logits = head(backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
            rows += data.rows_for_scoring(logits, y, mask, float(head.loss(logits, y)), feats)
    trainable = sum(p.numel() for p in params)
    return {"test": C_scalars(score(data, rows)), "trainable": trainable, "trainable_pct": 100 * trainable / total,
            "seconds": time.perf_counter() - t0}


def C_scalars(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sentiment,topic,ner")
    ap.add_argument("--methods", default="full,lora,bottleneck,adalora,prefix,ia3")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="results dir (default benchmarks/results)")
    ns = ap.parse_args()
    steps = 20 if ns.quick else ns.steps
    import os
    import tempfile

    if ns.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in ns.tasks.split(","):
            results[task] = {}
            for method in ns.methods.split(","):
                t0 = time.perf_counter()
                r = run_full(task, steps, ns.device) if method == "full" else \
                    run_peft(task, method, steps, ns.device, Path(tmp) / f"{task}-{method}")
                results[task][method] = r
                print(f"{task:<10} {method:<11} {PRIMARY[task]}={r['test'].get(PRIMARY[task], float('nan')):.4f} "
                      f"trainable={r['trainable_pct']:.3f}%  ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for task, per in results.items():
        full = per.get("full", {}).get("test", {}).get(PRIMARY[task])
        for method, r in per.items():
            v = r["test"].get(PRIMARY[task])
            rows.append([task, method, PRIMARY[task], v, r["trainable_pct"],
                         (v - full) * 100 if full is not None and v is not None and method != "full" else None])
    print(C.table(rows, ["task", "method", "metric", "test", "trainable %", "vs full (pts)"]))
    C.write_result("quality" + ("_quick" if ns.quick else ""),
                   {"steps": steps, "results": results, "table": rows, "env": C.env_info(ns.device),
                    "targets": {"peft_vs_full_points": ">= -1.5", "trainable_pct": "<= 1"}}, ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
