"""Pickle-free training checkpoints: tensors in safetensors, everything else in JSON. A checkpoint directory is
written under a temp name and renamed into place; ``latest`` is switched by an atomic replace afterwards
(both with :mod:`adapterhub.atomic`), so a run killed at any point leaves either the previous or the new
checkpoint, never half of one."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import TMP_PREFIX, publish_dir, write_text_atomic

LATEST = "latest"


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
