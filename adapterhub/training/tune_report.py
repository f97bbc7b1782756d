"""What a search leaves: ``trials.json``, a results table (``trials.txt``, also printed), ``trials.png`` (each trial's
objective, and its intermediate values per validation round: where pruned trials stopped), and the best trial's
adapters in the store."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "params": dict(t.params), "intermediate": {int(k): v for k, v in t.intermediate_values.items()},
                     "best_steps": t.user_attrs.get("best_steps"), "validation": t.user_attrs.get("validation")})
    return rows


def table(rows: list[dict[str, Any]], best: int | None) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    head = ["trial", "state", "objective", *keys, "last step"]
    body = []
    for r in rows:
        value = r["value"] if r["value"] is not None else (list(r["intermediate"].values()) or [None])[-1]
        mark = "*" if r["trial"] == best else ""
        body.append([f"{r['trial']}{mark}", r["state"], _fmt(value), *(_fmt(r["params"].get(k)) for k in keys),
                     str(max(r["intermediate"], default="-"))])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(* best trial; objective: mean best primary validation metric, larger is better)"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}"
    return str(v)


def write_trials(study, root: Path) -> str:
    """``trials.json``, ``trials.txt`` and ``trials.png`` in ``root``; returns the table."""
    rows = trial_rows(study)
    complete = [r for r in rows if r["state"] == "complete"]
    best = study.best_trial.number if complete else None
    (root / "trials.json").write_text(json.dumps({"best_trial": best, "trials": rows}, indent=1, default=str))
    text = table(rows, best)
    (root / "trials.txt").write_text(text + "\n")
    plot_trials(rows, best, root / "trials.png")
    return text


def plot_trials(rows: list[dict[str, Any]], best: int | None, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        value = r["value"] if r["value"] is not None else (list(r["intermediate"].values()) or [math.nan])[-1]
        style = {"complete": ("o", "tab:blue"), "pruned": ("x", "tab:red")}.get(r["state"], ("s", "grey"))
        ax.scatter([r["trial"]], [value], marker=style[0], color="tab:green" if r["trial"] == best else style[1])
        pts = sorted(r["intermediate"].items())
        if pts:
            bx.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linestyle="--" if r["state"] == "pruned"
                    else "-", label=f"trial {r['trial']} ({r['state']})")
    ax.set_title("objective per trial (x: pruned, green: best)")
    ax.set_xlabel("trial")
    bx.set_title("objective at each validation round")
    bx.set_xlabel("step")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_adapters(recipe, best_dir: Path, store=None) -> dict[str, Any]:
    """The best trial's adapters: into the store as the recipe names them (``output.store``), else where they are
    (its run dir). Returns {task: where}."""
    results = json.loads((best_dir / "results.json").read_text())
    out = {}
    for task in results:
        src = best_dir / "adapters" / task
        if recipe.output.store:
            from ..store import Store

            entry = (store or Store()).put(src, recipe.store_name(task))
            out[task] = {"store": entry.name, "version": entry.version, "path": str(entry.path)}
        else:
            out[task] = {"path": str(src)}
    return out
