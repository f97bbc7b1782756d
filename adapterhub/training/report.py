"""End-of-run report: a per-task table, classification reports, and a PNG of loss/metric curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [("task", "metric", "validation", "test", "best step")]
    for t, r in results.items():
        for k in ("accuracy", "macro_f1", "f1", "precision", "recall", "loss", "perplexity", "exact_match"):
            if k in r["test"] or k in r["validation"]:
                rows.append((t, k, _fmt(r["validation"].get(k)), _fmt(r["test"].get(k)), str(r["best_step"])))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [h for h in history if h.get("split") == "train"]
    val = [h for h in history if h.get("split") == "validation"]
    loss_keys = sorted({k for h in train for k in h if k.startswith("loss/")})
    metric_keys = sorted({k for h in val for k in h if "/" in k and not k.startswith("loss/") and not k.startswith("n/")})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in loss_keys:
        pts = [(h["step"], h[k]) for h in train if k in h]
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], label=k.split("/", 1)[1])
    axes[0].set_title("training loss")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    for k in metric_keys:
        pts = [(h["step"], h[k]) for h in val if k in h]
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
    axes[1].set_title("validation metrics")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dir: Path, results: dict[str, dict[str, Any]], history: list[dict[str, Any]]) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = table(results)
    reports = []
    for t, r in results.items():
        rep = r["test"].get("report")
        if rep:
            reports.append(f"== {t} (test) ==\n{rep}")
    (run_dir / "report.txt").write_text(text + "\n\n" + "\n".join(reports))
    plot_curves(history, run_dir / "curves.png")
    return text
