"""Reading and writing adapter directories (PEFT layout + our head and card files). Only safetensors are
ever read; a directory holding only pickle weights is refused without being opened."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load, save_file

from ..atomic import atomic_dir, sweep_stale
from .card import (CARD_FILE, CONFIG_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, WEIGHTS_FILE, AdapterCard,
                   read_json)
from ..errors import AdapterFileError
from ..names import validate_name
from .pickles import listing, refuse_pickle_weights

KEY_PREFIX = "base_model.model."  # peft's key prefix of a module's tensors in adapter_model.safetensors
PREFIX = KEY_PREFIX  # its former name
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE)  # hashed in the card


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, d: dict[str, Any], sort_keys: bool = True) -> None:
    """``sort_keys=False``: the top level sorted, nested mappings in their own order (peft's rank/alpha patterns:
    the first matching key wins, so their order is part of their meaning)."""
    if not sort_keys:
        d = dict(sorted(d.items()))
    path.write_text(json.dumps(d, indent=2, sort_keys=sort_keys) + "\n")


def read_safetensors(path: Path, what: str, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read once. ``sha256``: the digest the card records; a file whose bytes
    differ is refused before any tensor is built. Non-finite values (NaN, Inf) are refused too."""
    if not path.is_file():
        if path.name == WEIGHTS_FILE:
            refuse_pickle_only(path.parent)
        raise AdapterFileError(f"{path.parent}: missing {path.name} ({what})")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AdapterFileError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise AdapterFileError(f"{path}: sha256 {got[:16]}..., the card says {str(sha256)[:16]}...: corrupted or "
                                   "tampered file, refused")
    try:
        out = safetensors_load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AdapterFileError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    floats = [t for t in out.values() if t.is_floating_point() and t.numel()]
    # one reduction per tensor, one check per file (NaN and Inf survive a float32 sum; adapter weights never sum
    # to 3e38), and the slow per-tensor search only when something is wrong
    if floats and not bool(torch.isfinite(torch.stack([t.sum(dtype=torch.float32) for t in floats]).sum())):
        for k, t in out.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise AdapterFileError(f"{path}: tensor {k!r} holds NaN or Inf values ({what}), refused")
    return out


def card_sha256(card: AdapterCard, fname: str, where: str) -> str:
    """The sha256 the card records for ``fname`` (refused when it records none)."""
    files = card.files if isinstance(card.files, dict) else {}
    sha = files.get(fname)
    if not isinstance(sha, str) or len(sha) != 64:
        raise AdapterFileError(f"{where}: the card has no sha256 for {fname}")
    return sha


def refuse_pickle_only(directory: Path) -> None:
    """Raise if ``directory`` holds pickle weights but no ``adapter_model.safetensors``. Checked first on load, so
    such a directory is named for what it is (not for a missing card) and its pickles are never opened."""
    refuse_pickle_weights(listing(directory), str(directory))


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    try:
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path),
                  metadata={"format": "pt"})
    except (SafetensorError, OSError) as e:  # disk full, read-only: safetensors does not name the file
        raise AdapterFileError(f"could not write {path}: {e}") from None


def split_module_keys(state: dict[str, torch.Tensor], suffixes: set[str]) -> dict[str, dict[str, torch.Tensor]]:
    """``base_model.model.<path>.<suffix>`` -> {path: {suffix: tensor}}; unknown key shapes raise."""
    per_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state.items():
        if not key.startswith(KEY_PREFIX):
            raise AdapterFileError(f"{WEIGHTS_FILE}: key {key!r} does not start with {KEY_PREFIX!r}")
        rest = key[len(KEY_PREFIX):]
        for suf in sorted(suffixes, key=len, reverse=True):
            if rest.endswith("." + suf):
                per_module.setdefault(rest[: -len(suf) - 1], {})[suf] = t
                break
        else:
            raise AdapterFileError(f"{WEIGHTS_FILE}: unexpected tensor {key!r}")
    return per_module


def write_dir_atomically(directory: str | os.PathLike, overwrite: bool, write: Callable[[Path], None],
                         kind_files: tuple[str, ...] = (CARD_FILE, CONFIG_FILE), kind: str = "adapter") -> Path:
    """Run ``write`` on a fresh temp dir beside ``directory``, then publish it there atomically
    (:func:`adapterhub.atomic.atomic_dir`). An existing non-empty ``directory`` is replaced only with ``overwrite``
    and only when it is a directory of this kind (holds one of ``kind_files``): never a user's other directory, the
    working directory or one of its parents. I/O failures name the directory."""
    target = Path(directory).expanduser().resolve()
    check_replaceable(target, overwrite, kind_files, kind)
    sweep_stale(target.parent)
    try:
        with atomic_dir(target, replace=True) as tmp:
            write(tmp)
    except (OSError, SafetensorError) as e:
        raise AdapterFileError(f"could not write {target}: {getattr(e, 'strerror', None) or e}") from None
    return target


def check_replaceable(target: Path, overwrite: bool, kind_files: tuple[str, ...], kind: str) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise AdapterFileError(f"{target} exists and is not a directory; refusing to replace it")
    if not any(target.iterdir()):
        return
    if not overwrite:
        raise AdapterFileError(f"{target} exists and is not empty; pass overwrite=True to replace it")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents or target == Path.home().resolve():
        raise AdapterFileError(f"{target} is the working directory, one of its parents or the home directory; "
                               "refusing to replace it (overwrite replaces only an earlier save)")
    if not any((target / f).is_file() for f in kind_files):
        raise AdapterFileError(f"{target} is not an {kind} directory (it holds none of {list(kind_files)}); "
                               "overwrite=True replaces only an earlier save, refusing to delete it")


def verify_adapter_dir(directory: Path, where: str | None = None) -> AdapterCard:
    """Check an adapter directory against its card: every adapter file is present, listed in the card's ``files``
    and has that sha256; the name is valid; weights are safetensors. Returns the card."""
    d = Path(directory)
    where = where or str(d)
    refuse_pickle_weights(listing(d), where)
    card = AdapterCard.read(d)
    validate_name(card.name)
    if not isinstance(card.files, dict):
        raise AdapterFileError(f"{where}: the card's 'files' is not a mapping")
    for fname in card.files:
        if not isinstance(fname, str) or "/" in fname or "\\" in fname or fname in ("", ".", ".."):
            raise AdapterFileError(f"{where}: the card lists a bad file name {fname!r}")
    for fname in ADAPTER_FILES:
        if fname not in card.files:
            raise AdapterFileError(f"{where}: the card has no sha256 for {fname}")
        path = d / fname
        if not path.is_file():
            raise AdapterFileError(f"{where}: missing {fname}")
        got = sha256_file(path)
        if got != card.files[fname]:
            raise AdapterFileError(f"{where}: {fname} has sha256 {got[:16]}..., the card says "
                                   f"{str(card.files[fname])[:16]}...: corrupted or tampered file, refused")
    return card


__all__ = ["ADAPTER_FILES", "verify_adapter_dir", "CARD_FILE", "CONFIG_FILE", "HEAD_CONFIG_FILE", "HEAD_WEIGHTS_FILE", "WEIGHTS_FILE", "KEY_PREFIX",
           "read_json", "write_json", "write_dir_atomically", "read_safetensors", "refuse_pickle_only", "write_safetensors", "sha256_file",
           "split_module_keys"]
