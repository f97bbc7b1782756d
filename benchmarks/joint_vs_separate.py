"""Joint vs separate training of the three MiniLM tasks, equal samples per task, measured side by side.

Variants (each a fresh process, so wall time includes start-up and data loading, as a user sees it):
- ``separate``: one process, one base, the three tasks one after another, N/3 steps of batch B each;
- ``joint``: one process, one base, every batch mixes the three tasks (``sampling: equal``), N steps of batch B, cut
  into length-sorted micro-batches of at most ``--token-budget`` padded tokens;
- ``joint-padded``: the same without micro-batches (each batch padded to its longest row: the old behaviour);
- ``joint+shared``: joint, plus a shared LoRA (r=8) beneath each task's adapter, folded into each on store (NER as
  LoRA r=4 here: a shared adapter folds only into low-rank adapters);
- ``separate-3runs`` (``--three-runs``): three processes, one recipe per task.
Each task sees the same number of training rows (N*B/3) in every variant, the same evaluation and test examples.
Reported per variant: wall and CPU seconds (the children's user+sys: comparable on a shared box where wall time is
not), ratio to separate, training tokens/s (real tokens over the training loop's seconds), padding fraction (padded
positions that were not tokens), peak RSS; per task the test metric. Targets (CPU): joint <= 1.05x the separate
time, each task's test metric within 1 point.

    .venv/bin/python benchmarks/joint_vs_separate.py --steps 150 --batch-size 24     # CPU-sized
    .venv/bin/python benchmarks/joint_vs_separate.py --quick                         # N=30
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import yaml  # noqa: E402

RECIPE = C.ROOT / "recipes" / "multitask-minilm.yaml"
SHARED = "shared={method: lora, r: 8, alpha: 16, target_modules: all-linear}"
#: a shared adapter folds only into low-rank task adapters: joint+shared trains NER as LoRA r=4 (the recipe: bottleneck)
NER_LORA = "tasks.ner.adapter={method: lora, r: 4, alpha: 16, target_modules: all-linear}"


def run(args: list[str], env: dict) -> dict:
    """Wall and CPU seconds, peak RSS (MiB) and return code of one ``adapterhub train`` child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "adapterhub", "train", *args], cwd=C.ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")  # drained while it runs (a full pipe would block it)
    _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        print(err[-3000:], file=sys.stderr)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024.0, "rc": rc}


def throughput(run_dir: Path) -> dict:
    """Training tokens, padded positions and loop seconds from the run's metrics (summed over its groups)."""
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    train = [r for r in recs if r.get("split") == "train"]
    tokens = sum(r.get("tokens", 0) for r in train)
    padded = sum(r.get("padded_tokens", 0) for r in train)
    seconds = sum(max(r["time"] for r in train if r["group"] == g) for g in {r["group"] for r in train})
    return {"train_tokens": tokens, "padded_positions": padded, "train_loop_s": seconds,
            "tokens_per_s": tokens / seconds if seconds else None,
            "pad_fraction": 1 - tokens / padded if padded else None}


def variant(name: str, args: list[str], out_dir: Path, env: dict) -> dict:
    v = run([*args, f"output.dir={out_dir}"], env)
    if v["rc"] == 0:
        v["results"] = json.loads((out_dir / "results.json").read_text())
        v.update(throughput(out_dir))
    print(f"{name}: {v['wall_s']:.1f} s wall, {v['cpu_s']:.1f} s CPU, peak RSS {v['peak_rss_mib']:.0f} MiB, "
          f"{v.get('tokens_per_s') or 0:.0f} tokens/s, padding {100 * (v.get('pad_fraction') or 0):.1f}%", flush=True)
    return v


def three_runs(raw: dict, common: list[str], steps: int, tmp: Path, env: dict) -> dict:
    total: dict = {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mib": [], "results": {}}
    for t in raw["tasks"]:
        one = {**raw, "name": f"only-{t}", "tasks": {t: raw["tasks"][t]}}
        one["training"] = {**raw["training"], "mode": "separate"}
        p = tmp / f"{t}.yaml"
        p.write_text(yaml.safe_dump(one))
        v = variant(f"separate run {t}", [str(p), *common, f"training.steps={steps // 3}",
                                          f"training.eval_every={steps // 3}"], tmp / f"sep-{t}", env)
        total["wall_s"] += v["wall_s"]
        total["cpu_s"] += v["cpu_s"]
        total["peak_rss_mib"].append(v["peak_rss_mib"])
        total["results"].update(v.get("results") or {})
    total["peak_rss_mib"] = max(total["peak_rss_mib"])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--token-budget", type=int, default=1024)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--three-runs", action="store_true", help="also three separate processes")
    ap.add_argument("--variants", default="separate,joint,joint-padded,joint+shared")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each CPU child (OMP_NUM_THREADS; on a "
                    "shared box 1 thread swings least, see README)")
    ap.add_argument("--out", default=None, help="results dir (default benchmarks/results)")
    ap.add_argument("overrides", nargs="*", help="recipe overrides for every variant")
    ns = ap.parse_args()
    steps = 30 if ns.quick else ns.steps
    steps -= steps % 3
    B = ns.batch_size
    raw = yaml.safe_load(RECIPE.read_text())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if ns.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"
        env["OMP_NUM_THREADS"] = str(ns.threads)
    common = [f"training.batch_size={B}", "training.max_eval_examples=300", "training.max_test_examples=1000",
              "output.store=false", "training.log_every=10", f"training.token_budget={ns.token_budget}",
              "training.early_stopping=null", *ns.overrides]
    joint = [str(RECIPE), *common, f"training.steps={steps}", "training.sampling=equal", f"training.eval_every={steps}"]
    specs = {"separate": [str(RECIPE), *common, f"training.steps={steps // 3}", "training.mode=separate",
                          f"training.eval_every={steps // 3}"],
             "joint": joint, "joint-padded": joint + ["training.token_budget=null"], "joint+shared": joint + [SHARED, NER_LORA]}
    out: dict = {"steps_joint": steps, "batch_size": B, "rows_per_task": steps * B // 3,
                 "token_budget": ns.token_budget, "overrides": ns.overrides, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["ADAPTERHUB_HOME"] = str(tmp / "home")
        for name in ns.variants.split(","):
            out["variants"][name] = variant(name, specs[name], tmp / name.replace("+", "-"), env)
        if ns.three_runs:
            out["variants"]["separate-3runs"] = three_runs(raw, common, steps, tmp, env)
    report(out, list(raw["tasks"]))
    out["env"] = C.env_info(ns.device)
    out["env"]["load_average"] = os.getloadavg()
    out["env"]["omp_num_threads"] = env.get("OMP_NUM_THREADS")  # what the children ran with
    out["targets"] = {"cpu": "joint wall and CPU <= 1.05x separate; per-task test metric within 1 point",
                      "gpu": "joint >= 1.3x faster than separate"}
    C.write_result("joint_vs_separate" + ("_quick" if ns.quick else ""), out, ns.out)
    return 0


def report(out: dict, tasks: list[str]) -> None:
    ref = out["variants"].get("separate") or next(iter(out["variants"].values()))
    rows = []
    for name, v in out["variants"].items():
        v["wall_vs_separate"], v["cpu_vs_separate"] = v["wall_s"] / ref["wall_s"], v["cpu_s"] / ref["cpu_s"]
        pad = v.get("pad_fraction")
        rows.append([name, v["wall_s"], v["cpu_s"], v["wall_vs_separate"], v["cpu_vs_separate"],
                     v.get("tokens_per_s"), None if pad is None else 100 * pad, v["peak_rss_mib"]])
    print(C.table(rows, ["variant", "wall s", "CPU s", "wall / sep", "CPU / sep", "train tokens/s", "padding %",
                         "peak RSS MiB"]))
    primary = {"sentiment": "accuracy", "topic": "accuracy", "ner": "f1"}
    names = list(out["variants"])
    qrows = []
    for t in tasks:
        m = primary.get(t, "accuracy")
        vals = [(out["variants"][v].get("results") or {}).get(t, {}).get("test", {}).get(m) for v in names]
        sep = vals[names.index("separate")] if "separate" in names else None
        qrows.append([t, m, *vals, *[(x - sep) * 100 if None not in (x, sep) else None for x in vals]])
    print(C.table(qrows, ["task", "metric", *names, *[f"{v} - sep (pts)" for v in names]]))
    out["quality"] = qrows


if __name__ == "__main__":
    sys.exit(main())
