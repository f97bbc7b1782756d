"""The training loop: separate or joint, under Accelerate, through the model's per-row routing."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..heads import CAUSAL_LM
from ..recipes import Recipe, RecipeError
from . import checkpoint as ckpt
from .sampling import ExampleStream, TaskSampler
from .tasks import TaskData, prepare_task


EXACT_MATCH_EXAMPLES = 64  # held-out prompts generated for causal-LM exact match


class _LossModule(nn.Module):
    """What DDP wraps: one routed forward, returns (total, per-task losses) as plain tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, adapters, labels, weights, hooks=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, adapters=adapters, labels=labels)
        total = sum(weights[n] * l for n, l in out.losses.items())
        for n in out.losses:  # method penalties (e.g. AdaLoRA's orthogonal regulariser), inside the DDP forward
            h = (hooks or {}).get(n)
            extra = h.penalty(n) if h is not None else None
            if extra is not None:
                total = total + extra
        return total, {n: l.detach() for n, l in out.losses.items()}


def recipe_hash(recipe: Recipe) -> str:
    raw = {k: v for k, v in recipe.raw.items() if k not in ("output", "description")}
    raw = json.loads(json.dumps(raw, sort_keys=True, default=str))
    tr = dict(raw.get("training", {}))
    for k in ("eval_every", "save_every", "log_every"):  # may change on resume
        tr.pop(k, None)
    raw["training"] = tr
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


class Trainer:
    def __init__(self, recipe: Recipe, model=None, accelerator=None, run_dir: Path | None = None,
                 show_progress: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.recipe = recipe
        tr = recipe.training
        self.run_dir = Path(run_dir or recipe.run_dir)
        logging = ["tensorboard"] if _has_tensorboard() else []
        self.acc = accelerator or Accelerator(
            mixed_precision=tr.mixed_precision, gradient_accumulation_steps=tr.grad_accum,
            log_with=logging or None, project_dir=str(self.run_dir),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.show_progress = show_progress and self.acc.is_local_main_process
        if model is None:
            from ..model import AdapterModel

            model = AdapterModel.from_pretrained(recipe.base)
        self.model = model
        self.tasks: dict[str, TaskData] = {}
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load and encode all data and create adapters; every check happens here, before training."""
        r = self.recipe
        tok, base = self.model.tokenizer, self.model.base
        vocab = getattr(getattr(base, "config", None), "vocab_size", None)
        if tok is not None and vocab is not None and len(tok) > vocab:
            raise RecipeError(f"base: the tokenizer has {len(tok)} tokens but the base {r.base!r} embeds only "
                              f"{vocab}: tokenizer and base do not match")
        for name, spec in r.tasks.items():
            if spec.type == CAUSAL_LM and self.model.lm_head is None:
                raise RecipeError(f"tasks.{name}.type: causal-lm needs a causal-LM base; {r.base!r} has no LM head")
            self.tasks[name] = prepare_task(spec, self.model.tokenizer, r.training.seed, r.base_dir)
        for name, spec in r.tasks.items():
            if name in self.model.adapters:
                raise RecipeError(f"tasks.{name}: the model already holds an adapter named {name!r}")
        torch.manual_seed(r.training.seed)  # adapter and head initialisation is part of the seeded run
        for name, spec in r.tasks.items():
            self.model.add_adapter(name, spec.method_config, task=spec.type, labels=self.tasks[name].labels,
                                   **spec.head)

    # ------------------------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> dict[str, Any]:
        if not self.tasks:
            self.prepare()
        acc = self.acc
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "recipe.json").write_text(json.dumps(self.recipe.raw, indent=1, default=str))
        acc.wait_for_everyone()
        if acc.log_with:
            acc.init_trackers("adapterhub", config={"recipe": self.recipe.name})
        mode = self.recipe.training.mode
        groups = [list(self.tasks)] if mode == "joint" else [[t] for t in self.tasks]
        results = {}
        for gi, names in enumerate(groups):
            results.update(self._train_group(names, tag="joint" if mode == "joint" else names[0], resume=resume))
        return results

    def finish(self) -> None:
        """Close trackers and the process group (call once, after the last collective)."""
        self.acc.end_training()

    def _steps_for(self, names: list[str]) -> int:
        tr = self.recipe.training
        if tr.steps is not None:
            return int(tr.steps)
        n = sum(len(self.tasks[t].train) for t in names)
        per_step = tr.batch_size * tr.grad_accum * self.acc.num_processes
        return max(1, math.ceil(tr.epochs * n / per_step))

    def _train_group(self, names: list[str], tag: str, resume: bool) -> dict[str, Any]:
        from transformers import get_scheduler

        acc, tr, model = self.acc, self.recipe.training, self.model
        steps = self._steps_for(names)
        groups = []
        for t in names:
            lr = self.recipe.tasks[t].lr or tr.lr
            groups.append({"params": model.adapter_parameters(t), "lr": lr, "weight_decay": tr.weight_decay,
                           "name": t})
        for t in model.adapters:  # only this group's adapters train
            for p in model.adapter_parameters(t):
                p.requires_grad_(t in names)
        opt = torch.optim.AdamW(groups, lr=tr.lr)
        sched_name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[tr.schedule]
        sched = get_scheduler(sched_name, opt, num_warmup_steps=tr.warmup_steps, num_training_steps=steps)
        loss_mod = _LossModule(model)
        loss_mod, opt, sched = acc.prepare(loss_mod, opt, sched)
        weights = {t: float(self.recipe.tasks[t].loss_weight) for t in names}
        self.method_hooks = self._method_hooks(names)
        by_adapter = {n: h for h in self.method_hooks.values() for n in h.names}
        rank_seed = tr.seed * 1000 + acc.process_index
        streams = {t: ExampleStream(len(self.tasks[t].train), rank_seed + i) for i, t in enumerate(names)}
        sampler = TaskSampler({t: len(self.tasks[t].train) for t in names}, tr.sampling, tr.temperature,
                              rank_seed, tr.progressive)
        torch.manual_seed(rank_seed)
        best: dict[str, dict[str, Any]] = {t: {"score": -math.inf, "step": 0, "state": None, "metrics": {}} for t in names}
        bad_evals = 0
        start = 0
        ckpt_root = self.run_dir / "checkpoints" / tag
        log_path = self.run_dir / "metrics.jsonl"
        if resume:
            start, bad_evals = self._load_checkpoint(ckpt_root, names, opt, sched, streams, sampler, best)
        eval_every = tr.eval_every or max(1, steps // 4)
        save_every = tr.save_every
        bar = tqdm(total=steps, initial=start, desc=f"train {tag}", disable=not self.show_progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        step = start
        running: dict[str, list[float]] = {t: [] for t in names}
        loss_mod.train()
        while step < steps:
            for _ in range(tr.grad_accum):
                batch = self._joint_batch(names, streams, sampler, step) if len(names) > 1 else \
                    self._single_batch(names[0], streams[names[0]])
                with acc.accumulate(loss_mod):
                    with acc.autocast():
                        total, parts = loss_mod(batch["input_ids"], batch["attention_mask"], batch["adapters"],
                                                batch["labels"], weights, by_adapter)
                    acc.backward(total)
                    if acc.sync_gradients and tr.max_grad_norm:
                        acc.clip_grad_norm_([p for g in groups for p in g["params"]], tr.max_grad_norm)
                    opt.step()
                    sched.step()
                    if acc.sync_gradients:  # real optimizer steps only; grads still present
                        for h in self.method_hooks.values():
                            h.after_optimizer_step(step + 1)
                    opt.zero_grad(set_to_none=True)
                for t, l in parts.items():
                    running[t].append(float(l))
            step += 1
            bar.update(1)
            if step % tr.log_every == 0 or step == steps:
                rec = {"step": step, "group": tag, "split": "train", "time": round(time.perf_counter() - t0, 3),
                       "lr": sched.get_last_lr()[0]}
                rec.update({f"loss/{t}": sum(v) / len(v) for t, v in running.items() if v})
                running = {t: [] for t in names}
                self._log(rec, log_path, step)
                bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in rec.items() if k.startswith("loss/")})
            if step % eval_every == 0 or step == steps:
                improved = False
                for t in names:
                    m = self.evaluate(t, "validation")
                    self._log({"step": step, "group": tag, "split": "validation", "task": t,
                               **{f"{k}/{t}": v for k, v in m.items() if isinstance(v, (int, float))}}, log_path, step)
                    score = m[self.tasks[t].primary]
                    if self.tasks[t].primary == "loss":
                        score = -score
                    settled = t not in by_adapter or by_adapter[t].is_settled(t, step)
                    if settled and score > best[t]["score"]:
                        improved = True
                        best[t] = {"score": score, "step": step, "metrics": m,
                                   "state": {k: v.detach().clone() for k, v in self._adapter_state(t).items()}}
                bad_evals = 0 if improved else bad_evals + 1
                model.train()
                if tr.early_stopping and bad_evals >= tr.early_stopping:
                    if self.show_progress:
                        bar.write(f"early stopping at step {step}: no improvement in {bad_evals} evaluations")
                    step = steps
            if save_every and step % save_every == 0 and step < steps:
                self._save_checkpoint(ckpt_root, step, names, opt, sched, streams, sampler, best, bad_evals)
        bar.close()
        elapsed = time.perf_counter() - t0
        # restore each task's best adapter, test it
        results = {}
        for t in names:
            if best[t]["state"] is not None:
                self._set_adapter_state(t, best[t]["state"])
        for h in self.method_hooks.values():
            h.finish()
            if acc.is_main_process:
                h.write_report(self.run_dir, tag)
        for t in names:
            test = self.evaluate(t, "test", full=True)
            results[t] = {"best_step": best[t]["step"], "validation": _scalars(best[t]["metrics"]),
                          "test": test, "train_seconds": round(elapsed, 2), "steps": steps}
            self.model.entry(t).extra["datasets"] = [self.recipe.tasks[t].data.label]
            self.model.entry(t).metrics = {"validation": _scalars(best[t]["metrics"]), "test": _scalars(test),
                                           "best_step": best[t]["step"], "steps": steps, "recipe": self.recipe.name}
        self._write_digest(names, tag)
        acc.wait_for_everyone()
        model.eval()
        return results

    def _method_hooks(self, names: list[str]) -> dict:
        """{method name: its training hooks for this group's adapters of that method}."""
        from ..methods import methods

        out = {}
        for mname, method in methods().items():
            mine = [t for t in names if self.model.entry(t).method is method]
            options = self.recipe.training.method_options(method)
            hooks = method.training_hooks(self.model, mine, options) if mine else None
            if hooks is not None:
                out[mname] = hooks
        return out

    def _write_digest(self, names: list[str], tag: str) -> None:
        """Each process records a hash of its final adapter weights: under DDP they must agree."""
        h = hashlib.sha256()
        for t in names:
            for k, v in sorted(self._adapter_state(t).items()):
                h.update(k.encode())
                h.update(v.detach().float().cpu().numpy().tobytes())
        path = self.run_dir / f"weights-{tag}-rank{self.acc.process_index}.sha256"
        path.write_text(h.hexdigest() + "\n")

    # ------------------------------------------------------------------------------------------------
    def _single_batch(self, t: str, stream: ExampleStream) -> dict[str, Any]:
        idx = stream.take(self.recipe.training.batch_size)
        return self._collate([(t, self.tasks[t].train[i]) for i in idx])

    def _joint_batch(self, names, streams, sampler, step) -> dict[str, Any]:
        rows = sampler.draw(self.recipe.training.batch_size, step)
        counts = {t: rows.count(t) for t in names}
        items = []
        for t in names:  # rows grouped by task: each adapter's labels are in row order
            if counts[t]:
                items += [(t, self.tasks[t].train[i]) for i in streams[t].take(counts[t])]
        return self._collate(items)

    def _collate(self, items: list[tuple[str, dict]]) -> dict[str, Any]:
        tok = self.model.tokenizer
        pad = tok.pad({"input_ids": [f["input_ids"] for _, f in items],
                       "attention_mask": [f["attention_mask"] for _, f in items]}, return_tensors="pt")
        ids, mask = pad["input_ids"], pad["attention_mask"]
        T = ids.shape[1]
        left = tok.padding_side == "left"
        labels: dict[str, list] = {}
        for t, f in items:
            lab = f["labels"]
            if isinstance(lab, int):
                labels.setdefault(t, []).append(lab)
            else:
                padn = T - len(lab)
                labels.setdefault(t, []).append(([-100] * padn + list(lab)) if left else (list(lab) + [-100] * padn))
        dev = self.acc.device
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "adapters": [t for t, _ in items],
                "labels": {t: torch.tensor(v, device=dev) for t, v in labels.items()}}

    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, t: str, split: str = "validation", full: bool = False) -> dict[str, Any]:
        """Metrics of task ``t`` on a split; each process scores a shard, results are gathered."""
        from accelerate.utils import gather_object

        from .tasks import score

        acc, model = self.acc, self.model
        data = getattr(self.tasks[t], split)
        tr = self.recipe.training
        cap = tr.max_test_examples if full else tr.max_eval_examples
        if cap and cap < len(data):
            # a seeded random subset, never a prefix: source files are often ordered by label
            g = torch.Generator().manual_seed(self.recipe.training.seed)
            data = [data[i] for i in sorted(torch.randperm(len(data), generator=g)[:cap].tolist())]
        mine = list(range(acc.process_index, len(data), acc.num_processes))
        model.eval()
        rows = []
        bs = self.recipe.training.eval_batch_size
        for s in tqdm(range(0, len(mine), bs), desc=f"eval {t}/{split}", leave=False,
                      disable=not self.show_progress or len(mine) <= bs):
            idx = mine[s:s + bs]
            batch = self._collate([(t, data[i]) for i in idx])
            with acc.autocast():
                out = model(batch["input_ids"], batch["attention_mask"], adapters=t, labels=batch["labels"])
            rows += self.tasks[t].rows_for_scoring(out.logits[t], batch["labels"][t], batch["attention_mask"],
                                                   float(out.losses[t]), [data[i] for i in idx])
        rows = gather_object(rows) if acc.num_processes > 1 else rows
        metrics = score(self.tasks[t], rows)
        if full and self.tasks[t].type == CAUSAL_LM and data:
            metrics["exact_match"] = self._exact_match(t, data[:EXACT_MATCH_EXAMPLES])
        return metrics

    @torch.no_grad()
    def _exact_match(self, t: str, feats: list[dict]) -> float:
        """Greedy generation from each held-out prompt vs its reference completion (same on every process)."""
        from .. import routing
        from ..data import exact_match

        tok, model = self.model.tokenizer, self.model
        prompts = [[i for i, l in zip(f["input_ids"], f["labels"]) if l == -100] for f in feats]
        refs_ids = [[i for i, l in zip(f["input_ids"], f["labels"]) if l != -100] for f in feats]
        refs = tok.batch_decode(refs_ids, skip_special_tokens=True)
        n_new = max(len(r) for r in refs_ids)
        preds = []
        bs = self.recipe.training.eval_batch_size
        for s in range(0, len(prompts), bs):
            chunk = prompts[s:s + bs]
            width = max(len(p) for p in chunk)
            pad = tok.pad_token_id
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=self.acc.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=self.acc.device)
            with routing.routed([t] * len(chunk)):
                out = model.base.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new, do_sample=False,
                                          pad_token_id=pad)
            preds += tok.batch_decode(out[:, width:], skip_special_tokens=True)
        return exact_match(preds, refs)

    def _adapter_state(self, t: str) -> dict[str, torch.Tensor]:
        m = self.model
        out = {f"unit.{path}.{k}": v for path, unit in m._units(t).items() for k, v in unit.state_dict().items()}
        out.update({f"head.{k}": v for k, v in m.heads[t].state_dict().items()})
        return out

    def _set_adapter_state(self, t: str, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in self._adapter_state(t).items():
                v.copy_(state[k])

    def _log(self, rec: dict[str, Any], path: Path, step: int) -> None:
        self.history.append(rec)
        if self.acc.is_main_process:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if self.acc.log_with:
                self.acc.log({k: v for k, v in rec.items() if isinstance(v, (int, float)) and k != "step"}, step=step)

    # ------------------------------------------------------------------------------------------------
    def _save_checkpoint(self, root: Path, step, names, opt, sched, streams, sampler, best, bad_evals) -> None:
        acc = self.acc
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-step-{step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        rank = acc.process_index
        rng_t, rng_m = ckpt.rng_state()
        ckpt.save_tensors(tmp / f"rng-rank{rank}.safetensors", rng_t)
        ckpt.write_json(tmp / f"rank{rank}.json", {
            "rng": rng_m, "sampler": sampler.state_dict(), "streams": {t: s.state_dict() for t, s in streams.items()}})
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {}
            for t in names:
                state.update({f"{t}/{k}": v for k, v in self._adapter_state(t).items()})
                if best[t]["state"] is not None:
                    state.update({f"_best/{t}/{k}": v for k, v in best[t]["state"].items()})
            for mname, h in self.method_hooks.items():
                state.update({f"_hooks/{mname}/{k}": v for k, v in h.state_tensors().items()})
            ckpt.save_tensors(tmp / "adapters.safetensors", state)
            opt_t, opt_m = ckpt.optimizer_to_files(opt.optimizer if hasattr(opt, "optimizer") else opt)
            ckpt.save_tensors(tmp / "optimizer.safetensors", opt_t or {"_empty": torch.zeros(1)})
            ckpt.write_json(tmp / "state.json", {
                "step": step, "recipe_hash": recipe_hash(self.recipe), "world_size": acc.num_processes,
                "optimizer": opt_m, "scheduler": sched.state_dict() if not hasattr(sched, "scheduler") else sched.scheduler.state_dict(),
                "bad_evals": bad_evals, "tasks": names,
                "best": {t: {"score": best[t]["score"], "step": best[t]["step"], "metrics": _scalars(best[t]["metrics"]),
                             "has_state": best[t]["state"] is not None} for t in names},
                "history_len": len(self.history),
                "hooks": {mname: h.state_json() for mname, h in self.method_hooks.items()}})
            ckpt.publish(tmp, root, step)
        acc.wait_for_everyone()

    def _load_checkpoint(self, root: Path, names, opt, sched, streams, sampler, best) -> tuple[int, int]:
        acc = self.acc
        path = ckpt.latest(root)
        if path is None:
            if acc.is_main_process:
                print(f"resume: no checkpoint under {root}; starting from step 0")
            return 0, 0
        meta = json.loads((path / "state.json").read_text())
        if meta["recipe_hash"] != recipe_hash(self.recipe):
            raise RecipeError(f"resume: checkpoint {path} was written by another recipe "
                              f"(hash {meta['recipe_hash']} != {recipe_hash(self.recipe)})")
        if meta["world_size"] != acc.num_processes:
            raise RecipeError(f"resume: checkpoint {path} was written with {meta['world_size']} processes, "
                              f"this run has {acc.num_processes}")
        tensors = ckpt.load_tensors(path / "adapters.safetensors")
        for t in names:
            self._set_adapter_state(t, {k[len(t) + 1:]: v for k, v in tensors.items() if k.startswith(t + "/")})
            b = meta["best"][t]
            best[t].update(score=b["score"], step=b["step"], metrics=b["metrics"])
            if b["has_state"]:
                pre = f"_best/{t}/"
                best[t]["state"] = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        for mname, h in self.method_hooks.items():
            pre = f"_hooks/{mname}/"
            h.load_state_tensors({k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)})
            h.load_state_json(meta["hooks"][mname])
        inner_opt = opt.optimizer if hasattr(opt, "optimizer") else opt
        ckpt.optimizer_from_files(inner_opt, ckpt.load_tensors(path / "optimizer.safetensors"), meta["optimizer"])
        (sched.scheduler if hasattr(sched, "scheduler") else sched).load_state_dict(meta["scheduler"])
        rank = acc.process_index
        rs = json.loads((path / f"rank{rank}.json").read_text())
        sampler.load_state_dict(rs["sampler"])
        for t, s in streams.items():
            s.load_state_dict(rs["streams"][t])
        ckpt.set_rng_state(ckpt.load_tensors(path / f"rng-rank{rank}.safetensors"), rs["rng"])
        # drop log lines written after the checkpoint
        log_path = self.run_dir / "metrics.jsonl"
        if acc.is_main_process and log_path.exists():
            keep = [l for l in log_path.read_text().splitlines() if l and json.loads(l).get("step", 0) <= meta["step"]]
            log_path.write_text("".join(x + "\n" for x in keep))
        self.history = [json.loads(l) for l in log_path.read_text().splitlines()] if log_path.exists() else []
        acc.wait_for_everyone()
        if acc.is_main_process:
            print(f"resume: continuing from {path.name} (step {meta['step']})")
        return int(meta["step"]), int(meta["bad_evals"])


def _scalars(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if isinstance(v, (int, float, str)) and k != "report"}


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401

        return True
    except ImportError:
        return False
