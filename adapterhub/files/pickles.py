"""The pickle rule, one copy: adapterhub never opens, loads or downloads pickle files.

Pickle files are recognised by suffix (:data:`PICKLE_SUFFIXES`). An adapter directory - a local one or one in a
Hub repo, judged by its listing before anything is opened or downloaded - that holds pickle files but no
``adapter_model.safetensors`` is refused by :func:`refuse_pickle_weights`, naming the directory and the pickles.
Base-model downloads skip :data:`PICKLE_PATTERNS`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .card import WEIGHTS_FILE
from ..errors import AdapterFileError

#: torch.save / pickle files: ``adapter_model.bin``, ``pytorch_model.bin``, ``*.pt``, ``*.pkl``, ...
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: the same as glob patterns, for download filters (``ignore_patterns``)
PICKLE_PATTERNS = tuple("*" + s for s in PICKLE_SUFFIXES)


def is_pickle(name: str) -> bool:
    """True when the file name ``name`` has a pickle suffix."""
    return name.lower().endswith(PICKLE_SUFFIXES)


def listing(directory: str | os.PathLike) -> set[str]:
    """Names of the entries of a local directory (empty when it cannot be listed)."""
    try:
        return {p.name for p in Path(directory).iterdir()}
    except OSError:
        return set()


def refuse_pickle_weights(names: Iterable[str], where: str, note: str = "") -> None:
    """Raise :class:`~adapterhub.errors.AdapterFileError` when the file names ``names`` (one adapter directory's
    listing: local, or a Hub repo's) hold pickle files but no ``adapter_model.safetensors``. ``where`` names the
    directory or repo in the message; ``note`` is appended to it."""
    names = set(names)
    if WEIGHTS_FILE in names:
        return
    pickles = sorted(n for n in names if is_pickle(n))
    if pickles:
        raise AdapterFileError(f"{where}: holds only pickle weights ({', '.join(pickles)}); adapterhub never loads "
                               f"pickles - convert it to {WEIGHTS_FILE}{note}")


__all__ = ["PICKLE_SUFFIXES", "PICKLE_PATTERNS", "is_pickle", "listing", "refuse_pickle_weights"]
