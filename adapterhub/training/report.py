"""End-of-run report: a per-task table, where each adapter was written, classification reports, ``results.json``
and a PNG of loss/metric curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.metrics import TASK_METRICS, TEST_ONLY_METRICS

#: every metric a task may report, in the report's order
METRIC_ORDER = tuple(dict.fromkeys(k for names in (*TASK_METRICS.values(), *TEST_ONLY_METRICS.values())
                                   for k in names))
#: counts of what ``max_length`` cut off, shown when not zero
CUT_COUNTS = ("words_not_scored", "truncated")


def table(results: dict[str, Any]) -> str:
    """The per-task metrics table (``results``: task -> :class:`~adapterhub.training.finish.TaskResult`): each task's
    primary metric first (marked ``*``: the one that picked the best step), then its other metrics, then what
    ``max_length`` cut off."""
    rows = [("task", "metric", "validation", "test", "best step")]
    for t, r in results.items():
        order = [r.primary] * bool(r.primary) + [k for k in METRIC_ORDER if k != r.primary]
        for k in order:
            if k in r.test or k in r.validation:
                name = f"{k}*" if k == r.primary else k
                rows.append((t, name, _fmt(r.validation.get(k)), _fmt(r.test.get(k)), str(r.best_step)))
        for k in CUT_COUNTS:
            if r.test.get(k) or r.validation.get(k):
                rows.append((t, k, _fmt(r.validation.get(k)), _fmt(r.test.get(k)), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def adapter_lines(results: dict[str, Any]) -> list[str]:
    """Where each task's adapter was written (store entry, or run-dir copy)."""
    out = []
    for t, r in results.items():
        a = r.adapter or {}
        where = f"store {a['store']} v{a['version']} ({a['path']})" if "store" in a else a.get("path", "not written")
        out.append(f"{t}: {where}")
    return out


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


def write_report(run_dir: Path, results: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """``results.json`` (every result, with where its adapter went), ``report.txt`` and ``curves.png``; returns the
    table."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps({t: r.to_dict() for t, r in results.items()}, indent=1,
                                                     default=str))
    text = table(results) + "\n(* primary metric)"
    reports = []
    for t, r in results.items():
        rep = r.test.get("report")
        if rep:
            reports.append(f"== {t} (test) ==\n{rep}")
    adapters = "adapters:\n" + "".join(f"  {line}\n" for line in adapter_lines(results))
    (run_dir / "report.txt").write_text(text + "\n\n" + adapters + "\n" + "\n".join(reports))
    plot_curves(history, run_dir / "curves.png")
    return text
