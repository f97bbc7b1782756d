"""``adapterhub compress NAME (--rank R | --energy E) [--recipe RECIPE [--task T]]``: a stored linear adapter
re-factored at a lower rank (truncated SVD of each module's delta-W), stored as a new version of NAME; prints the
ranks, parameters and file sizes before and after and, with ``--recipe``, both versions' test metrics on that
recipe task's test split. Torch and the model are imported inside the handler only."""
from __future__ import annotations

import argparse
import uuid
from typing import Any

from ..errors import AdapterHubError
from .common import human_bytes, open_store, positive_int, print_json, resolve


def _fraction(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {s!r}") from None


def _recipe_task(args: argparse.Namespace, store_name: str):
    """The recipe and the task to score on: ``--task``, else the task stored as ``store_name``, else its only one."""
    from ..recipes import load_recipe

    recipe = load_recipe(args.recipe)
    if args.task is not None:
        if args.task not in recipe.tasks:
            raise AdapterHubError(f"recipe {recipe.name!r} has no task {args.task!r} (tasks: {sorted(recipe.tasks)})")
        return recipe, args.task
    named = [t for t in recipe.tasks if recipe.store_name(t) == store_name]
    tasks = named or list(recipe.tasks)
    if len(tasks) != 1:
        raise AdapterHubError(f"recipe {recipe.name!r} has tasks {sorted(recipe.tasks)}; pick one with --task")
    return recipe, tasks[0]


def _load(args: argparse.Namespace, entry, scratch: str):
    """The full-precision base of the adapter's card (or ``--base``) with the stored adapter as ``scratch``."""
    from ..model import AdapterModel

    spec = args.base or entry.card.get("base_model")
    if not isinstance(spec, str) or not spec:
        raise AdapterHubError(f"the card of {entry.ref} names no base model; pass --base")
    model = AdapterModel.from_pretrained(spec)
    model.load_adapter(entry.path, name=scratch, allow_base_mismatch=args.allow_base_mismatch)
    return model


def cmd_compress(args: argparse.Namespace) -> int:
    from ..files.card import WEIGHTS_FILE
    from ..model.compress import check_request

    check_request(args.rank, args.energy)
    store = open_store(args)
    entry = resolve(store, args.name, args.version)
    recipe, task = _recipe_task(args, entry.name) if args.recipe else (None, None)
    scratch = f"before-{uuid.uuid4().hex[:8]}"  # the stored version, loaded beside the result (named as NAME)
    model = _load(args, entry, scratch)
    try:
        _, report = model.compress(scratch, entry.name, rank=args.rank, energy=args.energy)
    except AdapterHubError as e:
        raise AdapterHubError(str(e).replace(repr(scratch), repr(entry.ref))) from None
    scores: dict[str, Any] = {}
    if recipe is not None:
        from ..training.heldout import score_adapters

        scores = score_adapters(recipe, task, model, [scratch, entry.name])
    summary = {**report.summary(), "source": entry.ref}
    if scores:
        summary.update(task=task, recipe=recipe.name, test_before=scores[scratch], test_after=scores[entry.name])
    metrics = {"test": scores[entry.name], "recipe": recipe.name} if scores else {}
    new = model.store_adapter(entry.name, store=store, metrics=metrics, extra={"compression": summary})
    summary.update(stored=new.ref, path=str(new.path), file_bytes=[(entry.path / WEIGHTS_FILE).stat().st_size,
                                                                    (new.path / WEIGHTS_FILE).stat().st_size])
    if args.json:
        print_json(summary)
    else:
        print("\n".join(_lines(summary)))
    return 0


def _lines(s: dict[str, Any]) -> list[str]:
    how = f"rank={s['rank']}" if s["rank"] is not None else f"energy={s['energy']:g}"
    (r0, r1), (p0, p1), (b0, b1) = s["total_rank"], s["params"], s["file_bytes"]
    lines = [f"stored {s['stored']} (from {s['source']}, {how}): {len(s['ranks'])} modules",
             f"  total rank    {r0} -> {r1}",
             f"  parameters    {p0:,} -> {p1:,} ({p1 / max(p0, 1):.2f}x)",
             f"  weights file  {human_bytes(b0)} -> {human_bytes(b1)} ({b1 / max(b0, 1):.2f}x)",
             f"  energy kept   >= {s['min_energy_kept']:.4f} per module"]
    before, after = s.get("test_before"), s.get("test_after")
    for k, v in (after or {}).items():
        if k != "n" and isinstance(v, (int, float)) and isinstance(before.get(k), (int, float)):
            lines.append(f"  test {k:<12} {before[k]:.4f} -> {v:.4f} ({(v - before[k]) * 100:+.2f} pts, "
                         f"task {s['task']}, {after.get('n')} examples)")
    return lines


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``compress`` to the main parser's sub-commands."""
    s = sub.add_parser(
        "compress", parents=[common], help="store a stored LoRA-style adapter at a lower rank",
        description="Re-factor each module's delta-W of a stored linear adapter by truncated SVD, to --rank R "
                    "(never above a module's current rank) or to the smallest rank keeping --energy E of its "
                    "squared singular values, and store the result as a new version of NAME (a plain LoRA). "
                    "With --recipe, both versions are scored on that recipe task's test split.")
    s.add_argument("name", metavar="NAME", help="adapter name (or NAME@vN)")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--rank", type=positive_int, metavar="R", help="the rank to keep per module")
    how.add_argument("--energy", type=_fraction, metavar="E", help="the share of sum(s_i^2) to keep, e.g. 0.95")
    s.add_argument("--version", dest="version", metavar="V", help="adapter version (default: latest)")
    s.add_argument("--recipe", metavar="RECIPE", help="score before and after on this recipe's task test split")
    s.add_argument("--task", metavar="TASK", help="the recipe task (default: the one stored as NAME, or the only one)")
    s.add_argument("--base", metavar="SPEC", help="base model (default: the card's base_model)")
    s.add_argument("--allow-base-mismatch", action="store_true",
                   help="load an adapter made for other weights of the same architecture")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_compress)
