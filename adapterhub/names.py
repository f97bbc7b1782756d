"""Name rules, one copy each: adapter names, Hub repo ids and paths inside Hub repos.

Used by the registry, the store, recipes, the Hub client and server, and base-model specs. Never trust one side
alone: the Hub client and the self-hosted server both check with these.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import AdapterNameError, RepoIdError

# ---------------------------------------------------------------------------------------------------- adapter names
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_LEN = 64


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid adapter name, else raise :class:`AdapterNameError` saying why."""
    if not isinstance(name, str):
        raise AdapterNameError(f"adapter name must be a string, got {type(name).__name__}")
    if not name:
        raise AdapterNameError("adapter name is empty")
    if len(name) > MAX_LEN:
        raise AdapterNameError(f"adapter name is too long: {len(name)} characters; the limit is {MAX_LEN}")
    if any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)):
        raise AdapterNameError(f"adapter name {name!r} contains a path separator")
    if ".." in name:
        raise AdapterNameError(f"adapter name {name!r} contains '..'")
    if not NAME_RE.match(name):
        raise AdapterNameError(f"adapter name {name!r} may only hold letters, digits, '_' and '-', "
                               "starting with a letter or digit")
    return name


# ------------------------------------------------------------------------------------------------------- repo ids
REPO_PART_MAX_LEN = 96
# 1-96 characters: starts with a letter or digit, does not end with '-' or '.' (as on the Hugging Face Hub)
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
# namespaces that would collide with URL routes of the Hub API
RESERVED_NAMESPACES = frozenset({"api", "datasets", "spaces", "models", "buckets", "kernels", "lfs", "resolve"})


def _check_part(part: str, what: str, repo_id: str) -> None:
    if not _REPO_PART_RE.match(part):
        raise RepoIdError(f"bad repo id {repo_id!r}: the {what} {part!r} may only hold letters, digits, '.', '_' "
                          f"and '-', start with a letter or digit, not end with '-' or '.', and be at most "
                          f"{REPO_PART_MAX_LEN} characters")
    if ".." in part or "--" in part:
        raise RepoIdError(f"bad repo id {repo_id!r}: '..' and '--' are not allowed")
    if part.endswith(".git"):
        raise RepoIdError(f"bad repo id {repo_id!r}: a name may not end with '.git'")


def validate_repo_id(repo_id: object, require_namespace: bool = True) -> str:
    """``namespace/name`` (or ``name`` alone when ``require_namespace`` is false). Returns it, else raises
    :class:`~adapterhub.errors.RepoIdError` (a ``HubError``) saying why."""
    if not isinstance(repo_id, str):
        raise RepoIdError(f"repo id must be a string, got {type(repo_id).__name__}")
    if not repo_id:
        raise RepoIdError("repo id is empty")
    if "\\" in repo_id or repo_id.startswith("/") or any(ord(c) < 32 for c in repo_id):
        raise RepoIdError(f"bad repo id {repo_id!r}: use 'namespace/name'")
    parts = repo_id.split("/")
    if len(parts) > 2 or (require_namespace and len(parts) != 2):
        raise RepoIdError(f"bad repo id {repo_id!r}: use 'namespace/name'")
    if len(parts) == 2:
        _check_part(parts[0], "namespace", repo_id)
        if parts[0].lower() in RESERVED_NAMESPACES:
            raise RepoIdError(f"bad repo id {repo_id!r}: namespace {parts[0]!r} is reserved")
    _check_part(parts[-1], "name", repo_id)
    return repo_id


def is_repo_id(value: object, require_namespace: bool = False) -> bool:
    """True when :func:`validate_repo_id` accepts ``value``."""
    try:
        validate_repo_id(value, require_namespace)
    except RepoIdError:
        return False
    return True


def looks_like_repo_id(source: object) -> bool:
    """True for a ``namespace/name`` string that is not an existing local path: what ``load_adapter`` should send
    to the Hub."""
    if not isinstance(source, str) or source.count("/") != 1:
        return False
    if Path(source).expanduser().exists():
        return False
    return is_repo_id(source, require_namespace=True)


def names_a_directory(source: object) -> bool:
    """The one rule for what ``load_adapter`` / ``adapterhub predict`` read from disk: a path object, or a string
    that is absolute, starts with ``.`` or ``~``, or holds a path separator (``./ts``, ``out/ts``, ``/abs/ts``).
    A bare name (``ts``) means the store entry, even when a directory of that name is in the working directory."""
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str):
        return False
    seps = [s for s in ("/", "\\", os.sep, os.altsep) if s]
    return os.path.isabs(source) or source.startswith((".", "~")) or any(s in source for s in seps)


# -------------------------------------------------------------------------------------------------- paths in repos
MAX_PATH_LEN = 1024


def validate_path_in_repo(path: object) -> str:
    """A relative POSIX path inside a repo: no absolute paths, no ``..``/``.``/empty segments, no backslashes,
    no control characters, nothing under ``.git/``. Returns it, else raises :class:`~adapterhub.errors.RepoIdError`."""
    if not isinstance(path, str):
        raise RepoIdError(f"path in repo must be a string, got {type(path).__name__}")
    if not path:
        raise RepoIdError("path in repo is empty")
    if len(path) > MAX_PATH_LEN:
        raise RepoIdError(f"path in repo is too long ({len(path)} > {MAX_PATH_LEN} characters)")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise RepoIdError(f"bad path {path!r}: absolute paths are not allowed")
    if "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise RepoIdError(f"bad path {path!r}: backslashes and control characters are not allowed")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise RepoIdError(f"bad path {path!r}: empty, '.' and '..' segments are not allowed")
    if parts[0] == ".git":
        raise RepoIdError(f"bad path {path!r}: '.git' is reserved")
    return path


__all__ = ["NAME_RE", "MAX_LEN", "validate_name", "RESERVED_NAMESPACES", "REPO_PART_MAX_LEN", "validate_repo_id",
           "is_repo_id", "looks_like_repo_id", "names_a_directory", "MAX_PATH_LEN", "validate_path_in_repo"]
