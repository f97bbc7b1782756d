"""Atomic, durable writes, one copy for the whole package: a file or a directory appears whole or not at all.

The rule: build under a temporary name beside the target (:data:`TMP_PREFIX` ``.tmp-*``; readers ignore such
names, recovery code may delete them), fsync the contents, ``rename`` into place, then fsync the parent directory,
so a crash (even a power loss) leaves the old state or the new one, never half of either.

- files: :func:`write_bytes_atomic`, :func:`write_text_atomic`, or :func:`publish_file` for a temp file written
  some other way (e.g. streamed);
- directories: :func:`atomic_dir` (a context manager), or :func:`make_tmp_dir` + :func:`publish_dir` when the
  publishing step needs its own handling (e.g. "another process finished first");
  ``replace=False`` creates a new directory and raises :class:`~adapterhub.errors.TargetExistsError` if it exists,
  ``replace=True`` swaps an existing one out;
- removal: :func:`discard` moves a path aside (atomically) before deleting it;
- crash leftovers: :func:`sweep_stale` removes the temp entries of writers that died (and puts back a directory
  whose overwrite swap was cut between its two renames); callers sweep a directory before they write in it.

OS errors propagate as :class:`OSError` (they name the paths); callers turn them into their own errors.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .errors import TargetExistsError

TMP_PREFIX = ".tmp-"


def tmp_path(target: str | os.PathLike, tag: str = "", directory: str | os.PathLike | None = None) -> Path:
    """A fresh temporary name for ``target``: ``.tmp-<tag><name>-<pid>-<random>``, beside it (or in ``directory``);
    the pid names the owner, so :func:`sweep_stale` can tell a crash's leftovers from a write in progress."""
    target = Path(target)
    where = Path(directory) if directory is not None else target.parent
    return where / f"{TMP_PREFIX}{tag}{target.name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory; best effort (some platforms and file systems cannot fsync directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and directory under ``root`` (``root`` included)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for f in filenames:
            fsync_path(Path(dirpath) / f)
        fsync_path(dirpath)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def discard(path: str | os.PathLike, trash_dir: str | os.PathLike | None = None) -> None:
    """Remove a file or directory: first renamed aside (to a ``.tmp-trash-*`` name beside it or in ``trash_dir``,
    atomically), then deleted. Raises :class:`OSError` if it cannot be moved; a failed delete leaves only the
    temp name behind."""
    path = Path(path)
    trash = tmp_path(path, "trash-", trash_dir)
    os.rename(path, trash)
    _remove(trash)


# ----------------------------------------------------------------------------------------------------------- files
def publish_file(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """fsync the written temp file ``tmp``, rename it over ``target`` (replacing it), fsync the parent."""
    target = Path(target)
    fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(target.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (replacing it if present). The parent directory must exist."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """:func:`write_bytes_atomic` for text."""
    write_bytes_atomic(path, text.encode(encoding))


# ----------------------------------------------------------------------------------------------------- directories
def make_tmp_dir(target: str | os.PathLike) -> Path:
    """Create (with missing parents) and return an empty temp directory beside ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(target)
    tmp.mkdir()
    return tmp


def publish_dir(tmp: str | os.PathLike, target: str | os.PathLike, *, replace: bool = False) -> None:
    """fsync everything under ``tmp``, rename it to ``target``, fsync the parent.

    ``replace=False``: raises :class:`TargetExistsError` if ``target`` exists (``tmp`` is left for the caller).
    ``replace=True``: an existing ``target`` is renamed aside, ``tmp`` renamed into place, the old one deleted
    (put back if the second rename fails)."""
    tmp, target = Path(tmp), Path(target)
    fsync_tree(tmp)
    if os.path.lexists(target):  # rename(2) would silently replace an *empty* directory
        if not replace:
            raise TargetExistsError(f"{target} already exists")
        old = tmp_path(target, "old-")
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rename(old, target)
            raise
        _remove(old)
    else:
        try:
            os.rename(tmp, target)
        except OSError:
            if os.path.lexists(target):  # someone else got there between the check and the rename
                raise TargetExistsError(f"{target} already exists") from None
            raise
    fsync_path(target.parent)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Build the directory ``target`` atomically.

    Yields an empty temp dir beside ``target``; fill it. On normal exit it is published with :func:`publish_dir`
    (``replace`` as there); on an exception, or if ``target`` exists and ``replace`` is false
    (:class:`TargetExistsError`, also raised before anything is yielded), the temp dir is removed and nothing
    else changes."""
    target = Path(target)
    if not replace and os.path.lexists(target):
        raise TargetExistsError(f"{target} already exists")
    tmp = make_tmp_dir(target)
    try:
        yield tmp
        publish_dir(tmp, target, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------------------------- crash leftovers
def _started(pid: int) -> float | None:
    """When process ``pid`` started (Linux: its /proc entry's ctime), or None when that cannot be told."""
    try:
        return os.stat(f"/proc/{pid}").st_ctime
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists (another user's)
        return True
    return True


def owner(entry: Path) -> int | None:
    """The pid in a temp name made by :func:`tmp_path` (``.tmp-...-<pid>-<12 hex>``), else None."""
    parts = entry.name.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit() and len(parts[2]) == 12 and all(c in "0123456789abcdef"
                                                                               for c in parts[2]):
        return int(parts[1])
    return None


def is_stale(entry: Path) -> bool:
    """A temp entry whose writer is gone: its owner is dead, or it is older than the live process of that pid (a
    reused pid); one with no owner in its name is stale when older than this process."""
    try:
        mtime = entry.lstat().st_mtime
    except OSError:
        return False
    pid = owner(entry)
    if pid is None:
        mine = _started(os.getpid())
        return mine is not None and mtime < mine
    if pid == os.getpid():
        return False
    if not _alive(pid):
        return True
    started = _started(pid)
    return started is not None and mtime < started - 1


def sweep_stale(directory: str | os.PathLike) -> list[Path]:
    """Clean up after writers that died in ``directory``: an overwrite cut between its two renames (the target
    missing, its ``.tmp-old-`` copy left) is rolled back; every other stale ``.tmp-*`` entry is deleted. Returns
    what was removed or restored. Best effort: entries that vanish or cannot be removed are skipped."""
    d = Path(directory)
    try:
        entries = sorted(p for p in d.iterdir() if p.name.startswith(TMP_PREFIX))
    except OSError:
        return []
    done = []
    for p in entries:
        if not is_stale(p):
            continue
        if p.name.startswith(f"{TMP_PREFIX}old-"):
            target = d / p.name[len(TMP_PREFIX) + 4:].rsplit("-", 2)[0]
            if not os.path.lexists(target):
                with contextlib.suppress(OSError):
                    os.rename(p, target)
                    done.append(target)
                    continue
        _remove(p)
        done.append(p)
    return done


__all__ = ["TMP_PREFIX", "TargetExistsError", "tmp_path", "fsync_path", "fsync_tree", "discard", "publish_file",
           "write_bytes_atomic", "write_text_atomic", "make_tmp_dir", "publish_dir", "atomic_dir",
           "owner", "is_stale", "sweep_stale"]
