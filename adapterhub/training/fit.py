"""The step loop of one training group: accumulated micro-batches through the DDP-wrapped loss module, method hooks
after real optimizer steps, training-loss records, validation rounds (best state per task, early stopping, one
progress line each) and checkpoints."""
from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm

from .batches import draw_batch, to_device
from .checkpoint import save_checkpoint
from .evaluate import evaluate, progress_off
from .state import Best, FitState


def fit(session, group, state: FitState) -> float:
    """Train ``group`` from ``state.step`` to its last step (or early stop); returns the seconds it took."""
    tr = session.recipe.training
    eval_every = tr.eval_every or max(1, group.steps // 4)
    bar = tqdm(total=group.steps, initial=state.step, desc=f"train {group.tag}", disable=progress_off(session),
               dynamic_ncols=True)
    t0 = time.perf_counter()
    running: dict[str, list[float]] = {t: [] for t in group.names}
    group.loss_module.train()
    while state.step < group.steps:
        for _ in range(tr.grad_accum):
            for t, loss in _micro_step(session, group, state.step).items():
                running[t].append(float(loss))
        state.step += 1
        bar.update(1)
        if state.step % tr.log_every == 0 or state.step == group.steps:
            _log_training(session, group, state.step, running, time.perf_counter() - t0, bar)
            running = {t: [] for t in group.names}
        if state.step % eval_every == 0 or state.step == group.steps:
            if _validate(session, group, state, bar):
                state.step = group.steps  # early stop
        if tr.save_every and state.step % tr.save_every == 0 and state.step < group.steps:
            save_checkpoint(session, group, state)
    bar.close()
    return time.perf_counter() - t0


def _micro_step(session, group, step: int) -> dict[str, Any]:
    """One forward/backward; the optimizer steps when Accelerate's accumulation says so. Returns per-task losses."""
    acc, tr = session.acc, session.recipe.training
    batch = draw_batch(session.tasks, group.streams, group.sampler, tr.batch_size, step, session.model.tokenizer)
    batch = to_device(batch, acc.device)
    with acc.accumulate(group.loss_module):
        with acc.autocast():
            total, parts = group.loss_module(batch["input_ids"], batch["attention_mask"], batch["adapters"],
                                             batch["labels"], group.weights, group.hooks_by_adapter)
        acc.backward(total)
        if acc.sync_gradients and tr.max_grad_norm:
            acc.clip_grad_norm_(group.params, tr.max_grad_norm)
        group.optimizer.step()
        group.scheduler.step()
        if acc.sync_gradients:  # real optimizer steps only; grads still present
            for h in group.hooks.values():
                h.after_optimizer_step(step + 1)
        group.optimizer.zero_grad(set_to_none=True)
    return parts


def _log_training(session, group, step: int, running: dict[str, list[float]], seconds: float, bar) -> None:
    rec = {"step": step, "group": group.tag, "split": "train", "time": round(seconds, 3),
           "lr": group.scheduler.get_last_lr()[0]}
    rec.update({f"loss/{t}": sum(v) / len(v) for t, v in running.items() if v})
    session.log.write(rec, step)
    bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in rec.items() if k.startswith("loss/")})


def _validate(session, group, state: FitState, bar) -> bool:
    """Evaluate every task of the group, keep each task's best state; True when training should stop early."""
    model, step, hooks = session.model, state.step, group.hooks_by_adapter
    improved, results = False, {}
    for t in group.names:
        m = results[t] = evaluate(session, t, "validation")
        session.log.write({"step": step, "group": group.tag, "split": "validation", "task": t,
                           **{f"{k}/{t}": v for k, v in m.items() if isinstance(v, (int, float))}}, step)
        score = session.tasks[t].signed_score(m)
        settled = t not in hooks or hooks[t].is_settled(t, step)
        if settled and score > state.best[t].score:
            improved = True
            state.best[t] = Best(score, step, m, {k: v.detach().clone() for k, v in model.adapter_state(t).items()})
    state.bad_evals = 0 if improved else state.bad_evals + 1
    model.train()
    early = session.recipe.training.early_stopping
    if session.acc.is_local_main_process:  # printed when evaluated, progress bars or not
        for line in validation_lines(session, group, step, results, state):
            bar.write(line, file=sys.stderr)
        if early and state.bad_evals >= early:
            bar.write(f"early stopping at step {step}: no improvement in {state.bad_evals} evaluations",
                      file=sys.stderr)
    return bool(early and state.bad_evals >= early)


def validation_lines(session, group, step: int, results: dict[str, dict[str, Any]], state: FitState) -> list[str]:
    """One line per task: ``validation step 20/60 [joint] sent: accuracy=0.8125* macro_f1=0.8095``, every scalar
    metric of the task; ``*`` marks its primary metric when this evaluation is its best so far; words or examples
    that ``max_length`` cut off are counted."""
    lines = []
    for t, m in results.items():
        task = session.tasks[t]
        primary, best_now = task.primary, state.best[t].step == step
        vals = [f"{k}={m[k]:.4f}{'*' if k == primary and best_now else ''}" for k in task.metrics if k in m]
        if m.get("words_not_scored"):
            vals.append(f"({m['words_not_scored']} words past max_length not scored)")
        elif m.get("truncated"):
            vals.append(f"({m['truncated']} examples truncated at max_length)")
        lines.append(f"validation step {step}/{group.steps} [{group.tag}] {t}: " + " ".join(vals))
    return lines
