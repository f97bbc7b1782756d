"""Joint vs separate training of the three MiniLM tasks, equal samples per task, measured side by side.

Variants (each a fresh process, so wall time includes start-up and data loading, as a user sees it):
- ``joint``: one process, one base, every batch mixes the three tasks (``sampling: equal``), N steps of batch B.
- ``separate-1proc``: one process, one base, the three tasks one after another, N/3 steps of batch B each.
- ``separate-3runs``: three processes (one recipe per task), N/3 steps of batch B each.
Each task sees the same number of training rows (N*B/3) in every variant, and the same evaluation.
Reported: wall-clock per variant and ratio to joint; peak RSS per process (ru_maxrss); test metrics per task.

    .venv/bin/python benchmarks/joint_vs_separate.py            # N=300, B=48
    .venv/bin/python benchmarks/joint_vs_separate.py --quick    # N=30
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


def run(args: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, return code) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "adapterhub", "train", *args], cwd=C.ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        print(err[-3000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024.0, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="results dir (default benchmarks/results)")
    ns = ap.parse_args()
    steps = 30 if ns.quick else ns.steps
    steps -= steps % 3
    B = ns.batch_size
    raw = yaml.safe_load(RECIPE.read_text())
    tasks = list(raw["tasks"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if ns.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"
    common = [f"training.batch_size={B}", "training.max_eval_examples=300", "training.max_test_examples=1000",
              "output.store=false", "training.log_every=10"]
    out: dict = {"steps_joint": steps, "batch_size": B, "rows_per_task": steps * B // 3, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["ADAPTERHUB_HOME"] = str(tmp / "home")
        # joint
        wall, rss, rc = run([str(RECIPE), *common, f"training.steps={steps}", "training.sampling=equal",
                             f"training.eval_every={steps}", f"output.dir={tmp / 'joint'}"], env)
        out["variants"]["joint"] = {"wall_s": wall, "peak_rss_mib": [rss], "rc": rc,
                                    "results": json.loads((tmp / "joint" / "results.json").read_text()) if rc == 0 else None}
        print(f"joint: {wall:.1f} s, peak RSS {rss:.0f} MiB")
        # separate, one process
        wall, rss, rc = run([str(RECIPE), *common, f"training.steps={steps // 3}", "training.mode=separate",
                             f"training.eval_every={steps // 3}", f"output.dir={tmp / 'sep1'}"], env)
        out["variants"]["separate-1proc"] = {"wall_s": wall, "peak_rss_mib": [rss], "rc": rc,
                                             "results": json.loads((tmp / "sep1" / "results.json").read_text()) if rc == 0 else None}
        print(f"separate (1 process): {wall:.1f} s, peak RSS {rss:.0f} MiB")
        # separate, three runs
        walls, rsss, results = 0.0, [], {}
        for t in tasks:
            one = {**raw, "name": f"only-{t}", "tasks": {t: raw["tasks"][t]}}
            one["training"] = {**raw["training"], "mode": "separate"}
            p = tmp / f"{t}.yaml"
            p.write_text(yaml.safe_dump(one))
            wall, rss, rc = run([str(p), *common, f"training.steps={steps // 3}", f"training.eval_every={steps // 3}",
                                 f"output.dir={tmp / ('sep-' + t)}"], env)
            walls += wall
            rsss.append(rss)
            if rc == 0:
                results.update(json.loads((tmp / f"sep-{t}" / "results.json").read_text()))
            print(f"separate run {t}: {wall:.1f} s, peak RSS {rss:.0f} MiB")
        out["variants"]["separate-3runs"] = {"wall_s": walls, "peak_rss_mib": rsss, "results": results}
    j = out["variants"]["joint"]["wall_s"]
    rows = []
    for name, v in out["variants"].items():
        v["speedup_of_joint"] = v["wall_s"] / j
        rows.append([name, v["wall_s"], v["speedup_of_joint"], max(v["peak_rss_mib"]), sum(v["peak_rss_mib"])])
    print(C.table(rows, ["variant", "wall s", "wall / joint", "peak RSS MiB (max)", "RSS if concurrent (sum)"]))
    primary = {"sentiment": "accuracy", "topic": "accuracy", "ner": "f1"}
    qrows = []
    for t in tasks:
        m = primary.get(t, "accuracy")
        vals = [out["variants"][v]["results"][t]["test"].get(m) if out["variants"][v].get("results") else None
                for v in ("joint", "separate-1proc", "separate-3runs")]
        qrows.append([t, m, *vals, (vals[0] - vals[2]) * 100 if None not in (vals[0], vals[2]) else None])
    print(C.table(qrows, ["task", "metric", "joint", "separate (1 proc)", "separate (3 runs)", "joint - sep (pts)"]))
    out["quality"] = qrows
    out["env"] = C.env_info(ns.device)
    out["targets"] = {"joint_speedup_vs_3runs": ">= 1.3", "joint_minus_separate_points": ">= -1"}
    C.write_result("joint_vs_separate" + ("_quick" if ns.quick else ""), out, ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
