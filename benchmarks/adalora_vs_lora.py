"""AdaLoRA vs LoRA on the real MiniLM tasks at the same final parameter count, and a cross-task shared rank
budget vs per-task budgets at the same total, side by side in one run.

    .venv/bin/python benchmarks/adalora_vs_lora.py            # 600 steps per task, 600 joint steps
    .venv/bin/python benchmarks/adalora_vs_lora.py --quick
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import quality as Q  # noqa: E402

import torch  # noqa: E402

from adapterhub.recipes import load_recipe  # noqa: E402


def joint_adalora(steps: int, budget: str, tmp: Path, device: str) -> dict:
    from adapterhub import AdapterModel
    from adapterhub.training import Trainer

    import json

    ada = {**Q.METHODS["adalora"], "total_step": steps, "tinit": min(50, steps // 5), "tfinal": min(100, steps // 4)}
    recipe = load_recipe(C.ROOT / "recipes" / "multitask-minilm.yaml",
                         [f"training.steps={steps}", f"training.eval_every={max(1, steps // 3)}", "output.store=false",
                          "training.sampling=equal", "training.max_test_examples=2000",
                          f"training.adalora_budget={budget}"]
                         + [f"tasks.{t}.adapter={json.dumps(ada)}" for t in ("sentiment", "topic", "ner")])
    model = AdapterModel.from_pretrained(recipe.base)
    tr = Trainer(recipe, model=model, run_dir=tmp / f"joint-{budget}", show_progress=False)
    tr.prepare()
    res = tr.train()
    rep = tr.method_hooks["adalora"].report
    return {"test": {t: Q.C_scalars(r.test) for t, r in res.items()},
            "per_task": rep["per_task"], "total_rank": sum(v["total_rank"] for v in rep["per_task"].values()),
            "params": {t: Q.final_parameters(model, t) for t in res}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--tasks", default="sentiment,topic,ner")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    ns = ap.parse_args()
    steps = 30 if ns.quick else ns.steps
    if ns.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    out: dict = {"steps": steps, "single": {}, "joint": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for task in ns.tasks.split(","):
            for m in ("lora", "adalora"):
                t0 = time.perf_counter()
                r = Q.run_peft(task, m, steps, ns.device, tmp / f"{task}-{m}")
                out["single"].setdefault(task, {})[m] = r
                print(f"{task:<10} {m:<8} {Q.PRIMARY[task]}={r['test'].get(Q.PRIMARY[task], float('nan')):.4f} "
                      f"params={r['trainable']:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for budget in ("per_task", "shared"):
            t0 = time.perf_counter()
            out["joint"][budget] = joint_adalora(steps, budget, tmp, ns.device)
            print(f"joint AdaLoRA, {budget} budget: total rank {out['joint'][budget]['total_rank']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for task, per in out["single"].items():
        k = Q.PRIMARY[task]
        rows.append([task, k, per["lora"]["test"].get(k), per["lora"]["trainable"], per["adalora"]["test"].get(k),
                     per["adalora"]["trainable"]])
    print(C.table(rows, ["task", "metric", "LoRA", "LoRA params", "AdaLoRA", "AdaLoRA params (final)"]))
    jrows = []
    for task in out["joint"]["per_task"]["test"]:
        k = Q.PRIMARY[task]
        jrows.append([task, k, out["joint"]["per_task"]["test"][task].get(k),
                      out["joint"]["per_task"]["per_task"][task]["total_rank"],
                      out["joint"]["shared"]["test"][task].get(k), out["joint"]["shared"]["per_task"][task]["total_rank"],
                      out["joint"]["shared"]["per_task"][task]["share"]])
    print(C.table(jrows, ["task", "metric", "per-task budget", "rank", "shared budget", "rank", "share"]))
    out["table_single"], out["table_joint"] = rows, jrows
    out["env"] = C.env_info(ns.device)
    C.write_result("adalora_vs_lora" + ("_quick" if ns.quick else ""), out, ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
