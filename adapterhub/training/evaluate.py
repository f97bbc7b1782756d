"""Evaluation of one task on one split: each process scores a shard, the per-example results are gathered, so
every process gets the metrics of the whole split. Causal-LM test scoring adds exact match of greedy generations."""
from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import collate
from ..heads import CAUSAL_LM
from .batches import to_device
from .shared import shared_keys
from .tasks import score

EXACT_MATCH_EXAMPLES = 64  # held-out prompts generated for causal-LM exact match


@torch.no_grad()
def evaluate(session, task: str, split: str = "validation", full: bool = False,
             adapter: str | None = None) -> dict[str, Any]:
    """Metrics of ``task`` on ``split`` (``full``: the test evaluation, with test-only metrics) through adapter
    ``adapter`` (default: the task's own). Leaves the model in eval mode."""
    adapter = adapter or task
    from accelerate.utils import gather_object

    acc, model, data = session.acc, session.model, getattr(session.tasks[task], split)
    tr = session.recipe.training
    data = _capped(data, tr.max_test_examples if full else tr.max_eval_examples, tr.seed)
    # this process's shard, by length: each batch is padded to its own longest row (scores do not depend on order)
    mine = sorted(range(acc.process_index, len(data), acc.num_processes), key=lambda i: len(data[i]["input_ids"]))
    model.eval()
    rows = []
    bs, shared = tr.eval_batch_size, shared_keys(session)
    for s in tqdm(range(0, len(mine), bs), desc=f"eval {task}/{split}", leave=False,
                  disable=True if len(mine) <= bs else progress_off(session)):
        feats = [data[i] for i in mine[s:s + bs]]
        batch = to_device(collate(feats, model.tokenizer, tasks=[task] * len(feats)), acc.device)
        with acc.autocast():
            out = model(batch["input_ids"], batch["attention_mask"], adapters=adapter,
                        labels={adapter: batch["labels"][task]}, shared=shared)
        rows += session.tasks[task].rows_for_scoring(out.logits[adapter], batch["labels"][task],
                                                     batch["attention_mask"], float(out.losses[adapter]), feats)
    rows = gather_object(rows) if acc.num_processes > 1 else rows
    metrics = score(session.tasks[task], rows)
    if full and session.tasks[task].type == CAUSAL_LM and data:
        metrics["exact_match"] = exact_match_rate(session, adapter, data[:EXACT_MATCH_EXAMPLES])
    return metrics


def progress_off(session) -> bool | None:
    """tqdm's ``disable``: off when the run shows no progress, else on a terminal only (``None``): a redirected log
    gets the validation lines, not carriage-return redraws."""
    return True if not session.show_progress else None


def _capped(data: list, cap: int | None, seed: int) -> list:
    """At most ``cap`` examples: a seeded random subset in original order, never a prefix (source files are often
    ordered by label)."""
    if not cap or cap >= len(data):
        return data
    g = torch.Generator().manual_seed(seed)
    return [data[i] for i in sorted(torch.randperm(len(data), generator=g)[:cap].tolist())]


@torch.no_grad()
def exact_match_rate(session, task: str, feats: list[dict]) -> float:
    """Greedy generation from each held-out prompt vs its reference completion (same on every process)."""
    from ..data import exact_match

    model, device = session.model, session.acc.device
    tok = model.tokenizer
    prompts = [[i for i, l in zip(f["input_ids"], f["labels"]) if l == -100] for f in feats]
    refs_ids = [[i for i, l in zip(f["input_ids"], f["labels"]) if l != -100] for f in feats]
    refs = tok.batch_decode(refs_ids, skip_special_tokens=True)
    n_new = max(len(r) for r in refs_ids)
    preds = []
    bs, pad = session.recipe.training.eval_batch_size, tok.pad_token_id
    for s in range(0, len(prompts), bs):
        chunk = prompts[s:s + bs]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with model.routed(task, len(chunk), shared=shared_keys(session)):
            out = model.base.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new, do_sample=False,
                                      pad_token_id=pad)
        preds += tok.batch_decode(out[:, width:], skip_special_tokens=True)
    return exact_match(preds, refs)
