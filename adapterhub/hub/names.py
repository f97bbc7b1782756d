"""Repo id and in-repo path rules, shared by the client and the server (never trust either side alone)."""
from __future__ import annotations

import re

from .errors import HubError

_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# namespaces that would collide with URL routes of the Hub API
RESERVED_NAMESPACES = frozenset({"api", "datasets", "spaces", "models", "buckets", "kernels", "lfs", "resolve"})
MAX_PATH_LEN = 1024


def _check_part(part: str, what: str, repo_id: str) -> None:
    if not _PART_RE.match(part):
        raise HubError(f"bad repo id {repo_id!r}: the {what} {part!r} may only hold letters, digits, '.', '_' and "
                       "'-', start with a letter or digit, and be at most 96 characters")
    if ".." in part or "--" in part:
        raise HubError(f"bad repo id {repo_id!r}: '..' and '--' are not allowed")
    if part.endswith(".git"):
        raise HubError(f"bad repo id {repo_id!r}: a name may not end with '.git'")


def validate_repo_id(repo_id: object, require_namespace: bool = True) -> str:
    """``namespace/name`` (``name`` alone when ``require_namespace`` is false). Raises :class:`HubError`."""
    if not isinstance(repo_id, str):
        raise HubError(f"repo id must be a string, got {type(repo_id).__name__}")
    if not repo_id:
        raise HubError("repo id is empty")
    if "\\" in repo_id or repo_id.startswith("/") or any(ord(c) < 32 for c in repo_id):
        raise HubError(f"bad repo id {repo_id!r}: use 'namespace/name'")
    parts = repo_id.split("/")
    if len(parts) > 2 or (require_namespace and len(parts) != 2):
        raise HubError(f"bad repo id {repo_id!r}: use 'namespace/name'")
    if len(parts) == 2:
        _check_part(parts[0], "namespace", repo_id)
        if parts[0].lower() in RESERVED_NAMESPACES:
            raise HubError(f"bad repo id {repo_id!r}: namespace {parts[0]!r} is reserved")
    _check_part(parts[-1], "name", repo_id)
    return repo_id


def validate_path_in_repo(path: object) -> str:
    """A relative POSIX path inside a repo: no absolute paths, no ``..``/``.``/empty segments, no backslashes,
    no control characters, nothing under ``.git/``. Raises :class:`HubError`."""
    if not isinstance(path, str):
        raise HubError(f"path in repo must be a string, got {type(path).__name__}")
    if not path:
        raise HubError("path in repo is empty")
    if len(path) > MAX_PATH_LEN:
        raise HubError(f"path in repo is too long ({len(path)} > {MAX_PATH_LEN} characters)")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise HubError(f"bad path {path!r}: absolute paths are not allowed")
    if "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise HubError(f"bad path {path!r}: backslashes and control characters are not allowed")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise HubError(f"bad path {path!r}: empty, '.' and '..' segments are not allowed")
    if parts[0] == ".git":
        raise HubError(f"bad path {path!r}: '.git' is reserved")
    return path
