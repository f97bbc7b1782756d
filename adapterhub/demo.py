"""The main job (``make demo``): train the three MiniLM tasks jointly on real data, store the adapters, load all
three into one fresh model, and predict a mixed batch (one adapter per row, one pass over the base)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "multitask-minilm.yaml"

# a short run that fits a few minutes on 2 CPU cores (the recipe's own settings are for a full run): rows cut into
# length-sorted micro-batches (no padding to topic's long rows), topic at 64 tokens, and the tasks with short rows
# drawn more often (NER needs the most rows to find entities): per step on average 16 sentiment, 8 topic and 24 NER
# rows
DEMO_SETTINGS = ["training.steps=150", "training.batch_size=48", "training.eval_every=50", "training.warmup_steps=10",
                 "training.sampling=equal", "tasks.sentiment.sampling_weight=2", "tasks.ner.sampling_weight=3",
                 "training.token_budget=1024", "training.max_eval_examples=240", "training.max_test_examples=600",
                 "tasks.topic.max_length=64", "training.lr=3e-3"]

EXAMPLES = [
    ("sentiment", "a warm, funny and beautifully acted film that stays with you"),
    ("topic", "The new graphics card renders 3D scenes faster, but the driver crashes under X windows."),
    ("ner", "Heading to New York with Justin Bieber tomorrow , see you at Madison Square Garden"),
    ("sentiment", "a tedious , overlong mess with nothing to say"),
    ("topic", "The pitcher threw a no-hitter and the team clinched the pennant in the ninth inning."),
    ("ner", "Obama met Merkel in Berlin to talk about Apple and Google"),
    ("topic", "NASA plans another shuttle launch to repair the orbiting telescope next spring."),
    ("sentiment", "the plot is thin but the performances are terrific"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("overrides", nargs="*", help="recipe overrides, e.g. training.steps=100 (added after the "
                    "demo's own short-run settings)")
    ap.add_argument("--recipe", default=str(RECIPE))
    args = ap.parse_args(argv)

    from . import AdapterModel
    from .recipes import load_recipe
    from .training import train_recipe

    recipe = load_recipe(args.recipe, DEMO_SETTINGS + args.overrides)
    print(f"== 1. train {list(recipe.tasks)} jointly on {recipe.base} ({recipe.training.steps} steps)")
    t0 = time.perf_counter()
    results = train_recipe(recipe)
    print(f"   trained in {time.perf_counter() - t0:.0f} s")

    where = "the store" if recipe.output.store else "the run dir"
    print(f"\n== 2. load the trained adapters from {where} into one fresh model")
    model = AdapterModel.from_pretrained(recipe.base)
    for task, r in results.items():
        model.load_adapter(r.adapter["path"], name=task)
        e = model.entry(task)
        version = f"v{r.adapter['version']}" if "version" in r.adapter else "  "
        print(f"   {task:<10} {version}  {e.method.name:<10} {model.num_parameters(task):>8,} params  "
              f"test metrics: { {k: round(v, 4) for k, v in e.metrics.get('test', {}).items() if isinstance(v, float)} }")

    print("\n== 3. one mixed batch: one adapter per row, one pass over the base")
    adapters = [a for a, _ in EXAMPLES]
    texts = [t for _, t in EXAMPLES]
    preds = model.predict(texts, adapters=adapters)
    width = 64
    print(f"   {'adapter':<10} {'text':<{width}} prediction")
    for a, t, p in zip(adapters, texts, preds):
        if isinstance(p, list):
            p = " ".join(f"{w}/{tag}" for w, tag in zip(t.split(), p) if tag != "O") or "(no entities)"
        short = t if len(t) <= width else t[: width - 3] + "..."
        print(f"   {a:<10} {short:<{width}} {p}")
    print("\n== per-task test metrics")
    for task, r in results.items():
        print(f"   {task:<10} " + "  ".join(f"{k}={v:.4f}" for k, v in r.test.items() if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
