"""The step loop of one training group. A step draws ``grad_accum`` batches, cuts each into length-sorted
micro-batches (:mod:`.batches`), runs them forward and backward through the DDP-wrapped loss module (gradients
synchronised once, on the last), then steps the optimizer; method hooks and the loss weighting follow each step.
Training-loss records carry the loss weights and the tokens computed; validation rounds keep each task's best
state, print one line per task, and stop a task early when it has not improved for ``early_stopping``
evaluations (it leaves the joint sampler, the others go on); checkpoints at ``save_every``."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from tqdm.auto import tqdm

from .batches import MicroBatch, draw_rows, micro_batches, to_device
from .checkpoint import save_checkpoint
from .evaluate import evaluate, progress_off
from .shared import task_state
from .state import Best, FitState


def fit(session, group, state: FitState) -> float:
    """Train ``group`` from ``state.step`` to its last step (or until every task stopped early); returns the
    seconds it took."""
    tr = session.recipe.training
    eval_every = tr.eval_every or max(1, group.steps // 4)
    bar = tqdm(total=group.steps, initial=state.step, desc=f"train {group.tag}", disable=progress_off(session),
               dynamic_ncols=True)
    t0 = time.perf_counter()
    running: dict[str, list[float]] = {t: [] for t in group.names}
    counted = dict(group.counters)
    group.loss_module.train()
    while state.step < group.steps:
        for t, loss in _optimizer_step(session, group, state.step).items():
            running[t].append(loss)
        state.step += 1
        bar.update(1)
        if state.step % tr.log_every == 0 or state.step == group.steps:
            _log_training(session, group, state.step, running, time.perf_counter() - t0, bar, counted)
            running, counted = {t: [] for t in group.names}, dict(group.counters)
        if state.step % eval_every == 0 or state.step == group.steps:
            if _validate(session, group, state, bar):
                state.step = group.steps  # every task stopped early
        if tr.save_every and state.step % tr.save_every == 0 and state.step < group.steps:
            save_checkpoint(session, group, state)
    bar.close()
    return time.perf_counter() - t0


def _optimizer_step(session, group, step: int) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` draws of length-sorted micro-batches; returns each task's mean loss
    in the step (the mean over the draws of the draw's mean loss)."""
    acc, tr = session.acc, session.recipe.training
    micro: list[MicroBatch] = []
    for _ in range(tr.grad_accum):
        rows = draw_rows(group.streams, group.sampler, tr.batch_size, step)
        micro += micro_batches(session.tasks, rows, tr.token_budget, session.model.tokenizer)
    losses: dict[str, float] = {}
    for i, mb in enumerate(micro):
        for t, v in _backward(session, group, mb, sync=i == len(micro) - 1).items():
            losses[t] = losses.get(t, 0.0) + mb.shares[t] * v / tr.grad_accum
        group.counters["tokens"] += mb.tokens
        group.counters["padded"] += mb.padded
    if tr.max_grad_norm:
        clip_each(acc, group.params, tr.max_grad_norm)
    group.optimizer.step()
    group.scheduler.step()
    for h in group.hooks.values():  # grads still present
        h.after_optimizer_step(step + 1)
    group.weighting.after_step(losses, acc)
    group.optimizer.zero_grad(set_to_none=True)
    return losses


def clip_each(acc, params: dict[str, list], max_norm: float) -> None:
    """Clip the gradient norm of each optimizer group (each task's adapter and head, the shared adapter, the loss
    weighting) on its own: one task's large gradients do not shrink another task's step, so a task trained jointly
    steps as it would alone. Accelerate unscales (mixed precision) once, with the first group."""
    import torch

    for i, ps in enumerate(params.values()):
        if i == 0:
            acc.clip_grad_norm_(ps, max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(ps, max_norm)


def _backward(session, group, mb: MicroBatch, sync: bool) -> dict[str, float]:
    """Forward and backward of one micro-batch (gradients synchronised across processes only when ``sync``);
    returns its per-task mean losses."""
    acc, accum = session.acc, session.recipe.training.grad_accum
    batch = to_device(mb.batch, acc.device)
    shares = {t: s / accum for t, s in mb.shares.items()}
    penalize = {t: 1.0 / accum for t in mb.first}  # a method penalty once per draw, as a draw-sized forward had it
    with contextlib.nullcontext() if sync else acc.no_sync(group.loss_module):
        with acc.autocast():
            total, parts = group.loss_module(batch["input_ids"], batch["attention_mask"], batch["adapters"],
                                             batch["labels"], shares, penalize, group.hooks_by_adapter)
        acc.backward(total)
    return {t: float(v) for t, v in parts.items() if mb.shares.get(t, 0.0) > 0}


def _log_training(session, group, step: int, running: dict[str, list[float]], seconds: float, bar,
                  counted: dict[str, float]) -> None:
    tokens = group.counters["tokens"] - counted["tokens"]
    padded = group.counters["padded"] - counted["padded"]
    rec = {"step": step, "group": group.tag, "split": "train", "time": round(seconds, 3),
           "lr": group.scheduler.get_last_lr()[0], "tokens": int(tokens), "padded_tokens": int(padded),
           "pad_fraction": round(1 - tokens / padded, 4) if padded else 0.0}
    rec.update({f"loss/{t}": sum(v) / len(v) for t, v in running.items() if v})
    if len(group.names) > 1:
        rec.update({f"weight/{t}": round(w, 6) for t, w in group.weighting.weights().items()})
    session.log.write(rec, step)
    bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in rec.items() if k.startswith("loss/")})


def _validate(session, group, state: FitState, bar) -> bool:
    """Evaluate every task of the group that has not stopped, keep each task's best state, stop tasks that have
    not improved for ``early_stopping`` evaluations; True when every task has stopped."""
    step, hooks, early = state.step, group.hooks_by_adapter, session.recipe.training.early_stopping
    results, stopping = {}, []
    for t in [t for t in group.names if t not in group.sampler.stopped]:
        m = results[t] = evaluate(session, t, "validation")
        session.log.write({"step": step, "group": group.tag, "split": "validation", "task": t,
                           **{f"{k}/{t}": v for k, v in m.items() if isinstance(v, (int, float))}}, step)
        score = session.tasks[t].signed_score(m)
        settled = t not in hooks or hooks[t].is_settled(t, step)
        if settled and score > state.best[t].score:
            state.best[t] = Best(score, step, m, task_state(session, t))
            state.bad_evals[t] = 0
        else:
            state.bad_evals[t] = state.bad_evals.get(t, 0) + 1
        if early and state.bad_evals[t] >= early and step < group.steps:
            stopping.append(t)
    for t in stopping:
        group.sampler.stop(t)
    session.model.train()
    if session.acc.is_local_main_process:  # printed when evaluated, progress bars or not
        for line in validation_lines(session, group, step, results, state):
            bar.write(line, file=sys.stderr)
        for t in stopping:
            rest = [n for n in group.names if n not in group.sampler.stopped]
            bar.write(f"early stopping {t} at step {step}: no improvement in {state.bad_evals[t]} evaluations"
                      + (f"; it leaves the sampler, {', '.join(rest)} go on" if rest else ""), file=sys.stderr)
    if session.on_validation is not None:
        session.on_validation(group, state)
    return all(t in group.sampler.stopped for t in group.names)


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
