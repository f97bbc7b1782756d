"""Pickle-free training checkpoints: tensors in safetensors, everything else in JSON. A checkpoint directory is
written under a temp name and renamed into place; ``latest`` is switched by an atomic replace afterwards (both with
:mod:`adapterhub.atomic`), so a run killed at any point leaves either the previous or the new checkpoint, never
half of one.

A checkpoint of a training group (:func:`save_checkpoint`, :func:`load_checkpoint`) holds its adapters' state, each
task's best state so far, the method hooks' state, optimizer and schedule, and per process its RNG, sampler and
stream positions: a resumed run continues exactly where the checkpoint left off."""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import TMP_PREFIX, publish_dir, write_text_atomic
from ..recipes import Recipe, RecipeError
from .state import FitState, scalars

LATEST = "latest"
RESUMABLE_KEYS = ("eval_every", "save_every", "log_every")  # training keys a resumed run may change


def recipe_hash(recipe: Recipe | dict) -> str:
    """What a checkpoint must match to be resumed: the recipe (or its raw mapping) without its output, description
    and cadences."""
    raw = recipe if isinstance(recipe, dict) else recipe.raw
    raw = {k: v for k, v in raw.items() if k not in ("output", "description")}
    raw = json.loads(json.dumps(raw, sort_keys=True, default=str))
    raw["training"] = {k: v for k, v in dict(raw.get("training", {})).items() if k not in RESUMABLE_KEYS}
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_root(session, group) -> Path:
    return session.run_dir / "checkpoints" / group.tag


def save_checkpoint(session, group, state: FitState) -> None:
    """Every process writes its RNG and stream state; the main process the shared state; then it is published."""
    acc, root = session.acc, checkpoint_root(session, group)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TMP_PREFIX}step-{state.step:08d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    rank = acc.process_index
    rng_t, rng_m = rng_state()
    save_tensors(tmp / f"rng-rank{rank}.safetensors", rng_t)
    write_json(tmp / f"rank{rank}.json", {"rng": rng_m, "sampler": group.sampler.state_dict(),
                                          "streams": {t: s.state_dict() for t, s in group.streams.items()}})
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_tensors(tmp / "adapters.safetensors", _shared_tensors(session, group, state))
        opt_t, opt_m = optimizer_to_files(_inner(group.optimizer, "optimizer"))
        save_tensors(tmp / "optimizer.safetensors", opt_t or {"_empty": torch.zeros(1)})
        write_json(tmp / "state.json", {
            "step": state.step, "recipe_hash": recipe_hash(session.recipe), "world_size": acc.num_processes,
            "optimizer": opt_m, "scheduler": _inner(group.scheduler, "scheduler").state_dict(),
            "bad_evals": state.bad_evals, "tasks": group.names,
            "best": {t: {"score": b.score, "step": b.step, "metrics": scalars(b.metrics),
                         "has_state": b.state is not None} for t, b in state.best.items()},
            "history_len": len(session.log.history),
            "hooks": {m: h.state_json() for m, h in group.hooks.items()}})
        publish(tmp, root, state.step)
    acc.wait_for_everyone()


def _shared_tensors(session, group, state: FitState) -> dict[str, torch.Tensor]:
    out = {}
    for t in group.names:
        out.update({f"{t}/{k}": v for k, v in session.model.adapter_state(t).items()})
        if state.best[t].state is not None:
            out.update({f"_best/{t}/{k}": v for k, v in state.best[t].state.items()})
    for m, h in group.hooks.items():
        out.update({f"_hooks/{m}/{k}": v for k, v in h.state_tensors().items()})
    return out


def load_checkpoint(session, group, state: FitState) -> bool:
    """Restore the group's latest checkpoint into the model, ``group`` and ``state``; False when there is none
    (the run starts at step 0). Log records written after the checkpoint are dropped."""
    acc, root = session.acc, checkpoint_root(session, group)
    path = latest(root)
    if path is None:
        if acc.is_main_process:
            print(f"resume: no checkpoint under {root}; starting from step 0")
        session.log.rewind(group.tag, 0)
        return False
    meta = json.loads((path / "state.json").read_text())
    if meta["recipe_hash"] != recipe_hash(session.recipe):
        raise RecipeError(f"resume: checkpoint {path} was written by another recipe "
                          f"(hash {meta['recipe_hash']} != {recipe_hash(session.recipe)})")
    if meta["world_size"] != acc.num_processes:
        raise RecipeError(f"resume: checkpoint {path} was written with {meta['world_size']} processes, "
                          f"this run has {acc.num_processes}")
    _load_shared(session, group, state, path, meta)
    rs = json.loads((path / f"rank{acc.process_index}.json").read_text())
    group.sampler.load_state_dict(rs["sampler"])
    for t, s in group.streams.items():
        s.load_state_dict(rs["streams"][t])
    set_rng_state(load_tensors(path / f"rng-rank{acc.process_index}.safetensors"), rs["rng"])
    state.step, state.bad_evals = int(meta["step"]), int(meta["bad_evals"])
    session.log.rewind(group.tag, state.step)
    if acc.is_main_process:
        print(f"resume: continuing from {path.name} (step {meta['step']})")
    return True


def _load_shared(session, group, state: FitState, path: Path, meta: dict[str, Any]) -> None:
    tensors = load_tensors(path / "adapters.safetensors")

    def under(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    for t in group.names:
        session.model.load_adapter_state(t, under(f"{t}/"))
        b = meta["best"][t]
        best = state.best[t]
        best.score, best.step, best.metrics = b["score"], b["step"], b["metrics"]
        best.state = under(f"_best/{t}/") if b["has_state"] else None
    for m, h in group.hooks.items():
        h.load_state_tensors(under(f"_hooks/{m}/"))
        h.load_state_json(meta["hooks"][m])
    optimizer_from_files(_inner(group.optimizer, "optimizer"), load_tensors(path / "optimizer.safetensors"),
                         meta["optimizer"])
    _inner(group.scheduler, "scheduler").load_state_dict(meta["scheduler"])


def _inner(wrapped, attr: str):
    """The optimizer / scheduler inside Accelerate's wrapper."""
    return getattr(wrapped, attr, wrapped)


def optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, meta_state = {}, {}
    for pid, st in sd["state"].items():
        meta_state[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
                meta_state[str(pid)][k] = "__tensor__"
            else:
                meta_state[str(pid)][k] = v
    return tensors, {"state": meta_state, "param_groups": sd["param_groups"]}


def optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"state.{pid}.{k}"] if v == "__tensor__" else v) for k, v in st.items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return {"torch": torch.get_rng_state()}, {"python": _py_rng_to_json(random.getstate())}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    random.setstate(_py_rng_from_json(meta["python"]))


def _py_rng_to_json(s):
    return [s[0], list(s[1]), s[2]]


def _py_rng_from_json(s):
    return (s[0], tuple(s[1]), s[2])


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def publish(tmp_dir: Path, ckpt_root: Path, step: int, keep: int = 2) -> Path:
    """Rename a fully written temp checkpoint into place, point ``latest`` at it, prune old ones."""
    final = ckpt_root / f"step-{step:08d}"
    publish_dir(tmp_dir, final, replace=True)
    write_text_atomic(ckpt_root / LATEST, final.name)
    done = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for junk in ckpt_root.glob(TMP_PREFIX + "*"):  # left by a killed run
        if junk != tmp_dir:
            shutil.rmtree(junk, ignore_errors=True) if junk.is_dir() else junk.unlink(missing_ok=True)
    return final


def latest(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / LATEST
    if not pointer.is_file():
        return None
    p = ckpt_root / pointer.read_text().strip()
    return p if p.is_dir() else None
