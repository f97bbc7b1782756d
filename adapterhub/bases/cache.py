"""The cache of converted base models (``bases_dir()/<name>-<version>/``): each built in a temp dir and published
atomically with :mod:`adapterhub.atomic`; a marker file written into it before publishing means "complete"."""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from ..atomic import discard, make_tmp_dir, publish_dir
from ..errors import BaseSourceError, TargetExistsError

#: Name of the file written last into a converted base directory; its presence means "complete".
COMPLETE_MARKER = ".adapterhub-complete.json"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file() and (path / "config.json").is_file()


def _log(msg: str) -> None:
    print(f"adapterhub: {msg}", file=sys.stderr, flush=True)


def build_atomically(target: Path, build: Callable[[Path], dict], what: str) -> Path:
    """Build into a temp dir next to ``target``, write the marker, then publish the dir atomically.

    If another process published a complete directory first, its copy is used and ours is discarded. A stale
    incomplete ``target`` (no marker: e.g. half-deleted by hand) is moved aside.
    """
    try:
        tmp = make_tmp_dir(target)
    except OSError as exc:
        raise BaseSourceError(f"cannot create the base-model cache in {target.parent}: {exc}") from exc
    try:
        _log(f"converting {what} (GGUF -> fp32 safetensors) into {target} — one-time, takes a while ...")
        t0 = time.perf_counter()
        info = build(tmp)
        info = dict(info or {}, built_at=time.time(), seconds=round(time.perf_counter() - t0, 1))
        (tmp / COMPLETE_MARKER).write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
        return _publish(tmp, target, what, info["seconds"])
    except BaseSourceError:
        raise
    except Exception as exc:
        raise BaseSourceError(f"could not build base {what} into {target}: {type(exc).__name__}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, target: Path, what: str, seconds: float) -> Path:
    for attempt in range(3):
        try:
            publish_dir(tmp, target)  # fsyncs everything (the marker too) before the rename
            _log(f"converted {what} in {seconds:.1f} s -> {target}")
            return target
        except TargetExistsError:
            if is_complete(target):  # another process won the race: use theirs
                _log(f"{what}: another process finished first; using {target}")
                return target
            if attempt == 2:
                raise
            with contextlib.suppress(OSError):  # a stale, incomplete target: move it aside, delete it, retry
                discard(target)
    raise AssertionError("unreachable")  # pragma: no cover
