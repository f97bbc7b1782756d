"""Finishing. :func:`finish_group`: each task's best state restored, the method hooks finished, the test split
scored, a per-process weights digest (DDP ranks must agree). :func:`publish`: each adapter written ONCE, with its
metrics in its card, into the local store (``output.store``) or else into ``<run_dir>/adapters/<task>``; then the
report, which says where each adapter went."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from typing import Any

from .evaluate import evaluate
from .shared import fold_into_tasks, load_task_state
from .state import FitState, scalars


@dataclasses.dataclass
class TaskResult:
    """What training one task produced: the metrics of its best checkpoint, and (after :func:`publish`) where its
    adapter was written."""

    task: str
    best_step: int
    steps: int
    train_seconds: float
    validation: dict[str, Any]  # scalar metrics of the best validation evaluation
    test: dict[str, Any]        # test metrics of the best state (with a text ``report`` where there is one)
    adapter: dict[str, Any] | None = None  # {"store": name, "version": v, "path": p} or {"path": run dir copy}
    primary: str = ""           # the metric that picked the best step

    def card_metrics(self, recipe_name: str) -> dict[str, Any]:
        """The ``metrics`` of the adapter's card."""
        return {"validation": scalars(self.validation), "test": scalars(self.test), "best_step": self.best_step,
                "steps": self.steps, "recipe": recipe_name, "primary": self.primary}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def finish_group(session, group, state: FitState, seconds: float) -> dict[str, TaskResult]:
    """Restore each task's best state, finish the method hooks (their report files on the main process), fold the
    shared adapter (at each task's best step) into each task's adapter, test."""
    acc, model = session.acc, session.model
    for t in group.names:
        if state.best[t].state is not None:
            load_task_state(session, t, state.best[t].state, shared=False)
    for h in group.hooks.values():
        h.finish()
        if acc.is_main_process:
            h.write_report(session.run_dir, group.tag)
    fold_into_tasks(session, group.names, state.best)
    results = {}
    for t in group.names:
        best = state.best[t]
        results[t] = TaskResult(task=t, best_step=best.step, steps=group.steps, train_seconds=round(seconds, 2),
                                validation=scalars(best.metrics), test=evaluate(session, t, "test", full=True),
                                primary=session.tasks[t].primary)
    write_digest(session, group)
    acc.wait_for_everyone()
    model.eval()
    return results


def write_digest(session, group) -> None:
    """Each process records a hash of its final adapter weights: under DDP they must agree."""
    h = hashlib.sha256()
    for t in group.names:
        for k, v in sorted(session.model.adapter_state(t).items()):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
    path = session.run_dir / f"weights-{group.tag}-rank{session.acc.process_index}.sha256"
    path.write_text(h.hexdigest() + "\n")


def publish(session, results: dict[str, TaskResult], store=None) -> str:
    """Main process only: write every adapter once (store or run dir), then the report; returns the report table."""
    from .report import write_report

    for t, r in results.items():
        r.adapter = write_adapter(session, t, r, store)
    out = session.run_dir
    text = write_report(out, results, session.log.history)
    print("\n" + text)
    print(f"report: {out / 'report.txt'}  curves: {out / 'curves.png'}", file=sys.stderr)
    return text


def write_adapter(session, task: str, result: TaskResult, store=None) -> dict[str, Any]:
    """Write ``task``'s adapter with its metrics: into the store when the recipe says ``output.store`` (as
    ``store_prefix + task``), else into ``<run_dir>/adapters/<task>``. Returns where it went."""
    recipe, model = session.recipe, session.model
    spec = recipe.tasks[task]
    extra = {"datasets": [spec.data.label], "max_length": spec.max_length}  # predict cuts where training did
    card = {"metrics": result.card_metrics(recipe.name), "extra": extra}
    if recipe.base_quantize is not None:  # trained QLoRA-style; it loads on the full-precision base too
        extra["trained_on_base_quantized"] = recipe.base_quantize
    if recipe.output.store:
        from ..store import Store

        entry = model.store_adapter(task, store=store or Store(), store_name=recipe.store_name(task), **card)
        print(f"stored {entry.name} v{entry.version} -> {entry.path}")
        return {"store": entry.name, "version": entry.version, "path": str(entry.path)}
    path = model.save_adapter(task, session.run_dir / "adapters" / task, overwrite=True, **card)
    print(f"saved {task} -> {path}")
    return {"path": str(path)}
