"""Merged inference (``model.merge(name)``: the LoRA delta folded into the base weights) vs the base model vs
the same adapter unmerged (uniform route), on MiniLM (encoder forward, batch 32 x seq 64) and on the tiny Llama
decode step of ``mixed_batch.py``. LoRA r=8 on all linear layers, B randomised.

Three models side by side, interleaved in one process: a pristine copy of the base (no wrappers), the adapter
model with the adapter merged, and a copy with the adapter unmerged. Also checks that merged == unmerged outputs.
Skips (exit 0, nothing written) when ``AdapterModel`` has no ``merge``.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import torch

from adapterhub import AdapterModel, LoRA


def run(scenario: str, args) -> dict:
    import mixed_batch as MB

    device = args.device
    model, pristine, kind = MB.build(scenario, device, torch.float32)
    if kind == "decoder":
        model.add_adapter("x", LoRA(r=8, target_modules="all-linear"), task="causal-lm")
    else:
        model.add_adapter("x", LoRA(r=8, target_modules="all-linear"), labels=["neg", "pos"])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.adapter_parameters("x", include_head=False):
            if p.shape[-1] == 8:  # lora_B [out, r]
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    unmerged = copy.deepcopy(model)
    model.merge("x")
    merged = model
    owner = {id(merged.base): merged, id(unmerged.base): unmerged}  # base module -> the AdapterModel routing it
    batch, seq = (32, 64)
    vocab = model.base.config.vocab_size
    gen = torch.Generator().manual_seed(2)
    names = ["x"] * batch
    if kind == "encoder":
        ids = torch.randint(5, min(vocab, 30000), (batch, seq), generator=gen).to(device)
        mask = torch.ones_like(ids)

        def call(m, routed_names):
            if routed_names is None:
                return m(input_ids=ids, attention_mask=mask).last_hidden_state
            with owner[id(m)].routed(routed_names):
                return m(input_ids=ids, attention_mask=mask).last_hidden_state

        after = None
        workload = f"encoder forward, batch {batch} x seq {seq}"
    else:
        pre = torch.randint(3, vocab, (batch, seq), generator=gen).to(device)
        tok = torch.randint(3, vocab, (batch, 1), generator=gen).to(device)
        mask = torch.ones(batch, seq + 1, dtype=torch.long, device=device)
        caches = {}
        with torch.no_grad():
            caches["base"] = pristine(input_ids=pre, use_cache=True).past_key_values
            caches["merged"] = copy.deepcopy(caches["base"])
            caches["unmerged"] = copy.deepcopy(caches["base"])
        key_of = {id(pristine): "base", id(merged.base): "merged", id(unmerged.base): "unmerged"}

        def call(m, routed_names):
            c = caches[key_of[id(m)]]
            if routed_names is None:
                return m(input_ids=tok, attention_mask=mask, past_key_values=c, use_cache=True).logits
            with owner[id(m)].routed(routed_names):
                return m(input_ids=tok, attention_mask=mask, past_key_values=c, use_cache=True).logits

        def after(_n):
            for c in caches.values():
                if c.get_seq_length() > seq:
                    c.crop(seq - c.get_seq_length())

        workload = f"decode step (1 new token, KV cache {seq}), batch {batch}"
    def base_fn():
        return call(pristine, None)

    fns = {"base model (no adapter, unwrapped)": base_fn,
           "merged (merge('x'), route 'x')": lambda: call(merged.base, names),
           "unmerged (route 'x')": lambda: call(unmerged.base, names)}
    with torch.no_grad():
        o_m = fns["merged (merge('x'), route 'x')"]().float()
        if after:
            after("")
        o_u = fns["unmerged (route 'x')"]().float()
        if after:
            after("")
        o_b = base_fn().float()
        if after:
            after("")
        check = {"merged_vs_unmerged_max_abs": (o_m - o_u).abs().max().item(),
                 "adapter_delta_max_abs": (o_u - o_b).abs().max().item()}
        times = C.interleaved(fns, rounds=args.rounds, warmup=2, device=device, after=after)
    clocks = ["wall"] + (["cpu"] if device == "cpu" else [])
    out = {"scenario": scenario, "workload": workload, "check": check, "medians_ms": {}, "ratios": {}, "stats": {}}
    print(f"\n== merged: {scenario}, {workload}, LoRA r=8 all-linear, {device}, {torch.get_num_threads()} thread(s), "
          f"{args.rounds} rounds ==")
    for c in clocks:
        st = C.summarize(times[c])
        med = {n: s["median_ms"] for n, s in st.items()}
        b = med["base model (no adapter, unwrapped)"]
        out["stats"][c] = st
        out["medians_ms"][c] = med
        out["ratios"][c] = {"merged/base": med["merged (merge('x'), route 'x')"] / b,
                            "unmerged/base": med["unmerged (route 'x')"] / b,
                            "merged/unmerged": med["merged (merge('x'), route 'x')"] / med["unmerged (route 'x')"]}
        print(f"-- {c} time --")
        print(C.table([[n, s["median_ms"], s["p10_ms"], s["p90_ms"], med[n] / b] for n, s in st.items()],
                      ["variant", "median ms", "p10 ms", "p90 ms", "x base"]))
    print("check:", check)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", nargs="+", default=["minilm", "tiny-llama"], choices=["minilm", "tiny-llama"])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default="")
    ap.add_argument("--out-dir", default="")
    args = ap.parse_args(argv)
    if not hasattr(AdapterModel, "merge"):
        print("AdapterModel has no merge(): merged benchmark skipped")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds = min(args.rounds, 7)
    results = [run(s, args) for s in args.scenario]
    C.write_result(args.name or ("merged_quick" if args.quick else "merged"),
                   {"env": C.env_info(args.device), "quick": args.quick, "results": results}, args.out_dir or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
