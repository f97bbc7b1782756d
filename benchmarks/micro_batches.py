"""What a training micro-batch costs on MiniLM: the measurements behind the micro-batch planner's constants
(``adapterhub/training/batches.py``: ``MICRO_BATCH_COST``, ``MIXED_ADAPTER_COST``).

1. Forward + backward of one micro-batch (the multitask recipe's joint training group: LoRA r=4 on sentiment and
   topic, bottleneck on NER) for rows x length in a grid, one adapter; a least-squares fit of
   ``t = fixed + per_token * tokens + per_token_len * tokens * length`` gives the fixed cost in padded tokens
   (``fixed / per_token``).
2. The same micro-batch with rows of two or three adapters (LoRA + LoRA, LoRA + bottleneck, all three) against the
   mean of the same rows' single-adapter micro-batches: the extra cost of mixing, in ms and in padded tokens.
All variants of one comparison run interleaved in one process (``_common.interleaved``), medians reported.

    .venv/bin/python benchmarks/micro_batches.py                 # results/micro_batches.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

GRID = [(n, length) for length in (16, 32, 64, 128) for n in (1, 2, 4, 8, 16, 32) if n * length <= 2048]
MIXES = [("sentiment", "topic"), ("sentiment", "ner"), ("sentiment", "topic", "ner")]
SHAPES = [(4, 40), (8, 40), (16, 64)]


def session(tmp: Path):
    from adapterhub.recipes import load_recipe
    from adapterhub.training import Trainer
    from adapterhub.training.setup import setup_group, start_run

    recipe = load_recipe(C.ROOT / "recipes" / "multitask-minilm.yaml",
                         ["training.max_eval_examples=20", "training.max_test_examples=20", "output.store=false"])
    tr = Trainer(recipe, run_dir=tmp / "run", show_progress=False)
    tr.prepare()
    start_run(tr.session, False)
    return setup_group(tr.session, list(recipe.tasks), "joint")


def step_fn(group, n: int, length: int, tasks: tuple[str, ...]):
    """One forward + backward of an ``n`` x ``length`` micro-batch whose rows are split evenly among ``tasks``
    (consecutive blocks, as the planner groups them)."""
    g = torch.Generator().manual_seed(n * 1000 + length)
    ids = torch.randint(1000, 2000, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    adapters = [tasks[i * len(tasks) // n] for i in range(n)]
    labels = {t: torch.zeros(adapters.count(t), length, dtype=torch.long) if t == "ner"
              else torch.zeros(adapters.count(t), dtype=torch.long) for t in tasks}
    shares = {t: 1.0 for t in tasks}

    def run():
        total, _ = group.loss_module(ids, mask, adapters, labels, shares, {}, {})
        total.backward()
        group.optimizer.zero_grad(set_to_none=True)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ns = ap.parse_args()
    torch.set_num_threads(ns.threads)
    os.environ["ACCELERATE_USE_CPU"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        group = session(Path(tmp))
        fns = {f"{n}x{length}": step_fn(group, n, length, ("sentiment",)) for n, length in GRID}
        grid = C.summarize(C.interleaved(fns, ns.rounds, warmup=1)["wall"])
        a = np.array([[1.0, n * length, n * length * length] for n, length in GRID])
        y = np.array([grid[f"{n}x{length}"]["median_ms"] for n, length in GRID])
        (fixed, per_token, per_tl), *_ = np.linalg.lstsq(a, y, rcond=None)
        print(C.table([[k, v["median_ms"]] for k, v in grid.items()], ["rows x length", "fwd+bwd ms (median)"]))
        print(f"fit: fixed {fixed:.1f} ms, {per_token * 1e3:.0f} us per padded token, {per_tl * 1e3:.3f} us per "
              f"token x length -> a micro-batch costs {fixed / per_token:.0f} padded tokens of fixed work")
        mix_rows = []
        for n, length in SHAPES:
            fns = {t: step_fn(group, n, length, (t,)) for t in ("sentiment", "topic", "ner")}
            fns.update({"+".join(m): step_fn(group, n, length, m) for m in MIXES})
            med = {k: v["median_ms"] for k, v in C.summarize(C.interleaved(fns, ns.rounds, warmup=1)["wall"]).items()}
            for m in MIXES:
                alone = sum(med[t] for t in m) / len(m)
                extra = med["+".join(m)] - alone
                mix_rows.append([f"{n}x{length}", "+".join(m), med["+".join(m)], alone, extra,
                                 extra / per_token / (len(m) - 1)])
        print(C.table(mix_rows, ["micro-batch", "adapters", "mixed ms", "mean alone ms", "extra ms",
                                 "extra per further adapter (padded tokens)"]))
    C.write_result("micro_batches", {"grid_ms": grid, "fit": {"fixed_ms": fixed, "per_token_ms": per_token,
                                                                "per_token_length_ms": per_tl,
                                                                "fixed_in_padded_tokens": fixed / per_token},
                                     "mixing": mix_rows, "env": C.env_info("cpu")}, ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
