"""Content-addressed blob files: ``<root>/blobs/<sha256[:2]>/<sha256>``, mode 0600 in 0700 directories.

A blob is streamed into ``<root>/tmp/`` while its sha256 is computed, checked against what was announced, then
published with :func:`adapterhub.atomic.publish_file` (fsync, rename, fsync the directory): a reader sees a whole
blob or none, and a crash leaves at most a temp file, removed by :meth:`BlobStore.clean_tmp` at the next start.
Blobs are immutable; :meth:`BlobStore.remove_unreferenced` (``adapterhub hub gc``) deletes those no commit uses.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterable

from ...atomic import TMP_PREFIX, publish_file
from .errors import BadRequest, TooLarge

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) mode 0700; an existing one is set to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o777) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and SHA256_RE.match(value) is not None


class BlobWriter:
    """One blob being streamed in: :meth:`write` pieces, then :meth:`finish` (or :meth:`abort`; a ``with`` block
    aborts on error). ``expect_sha256`` / ``expect_size`` are verified; ``limit`` caps the size (413 past it)."""

    def __init__(self, store: "BlobStore", expect_sha256: str | None = None, expect_size: int | None = None,
                 limit: int | None = None):
        self.store = store
        self.expect_sha256 = expect_sha256
        self.expect_size = expect_size
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()
        self.tmp = store.tmp / f"blob-{uuid.uuid4().hex}"
        self._file = os.fdopen(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.expect_size is not None and self.size > self.expect_size:
            raise BadRequest(f"upload is larger than the announced {self.expect_size} bytes")
        if self.limit is not None and self.size > self.limit:
            raise TooLarge(f"file larger than this hub's limit of {self.limit} bytes")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> tuple[str, int]:
        """Verify and publish; returns (sha256, size). The temp file is gone either way."""
        try:
            self._file.close()
            sha = self._hash.hexdigest()
            if self.expect_size is not None and self.size != self.expect_size:
                raise BadRequest(f"upload has {self.size} bytes, {self.expect_size} were announced")
            if self.expect_sha256 is not None and sha != self.expect_sha256:
                raise BadRequest(f"upload has sha256 {sha}, {self.expect_sha256} was announced")
            target = self.store.path(sha)
            if target.exists():
                self.tmp.unlink()
            else:
                make_private_dir(target.parent)
                publish_file(self.tmp, target)
            return sha, self.size
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class BlobStore:
    def __init__(self, root: Path):
        self.dir = root / "blobs"
        self.tmp = root / "tmp"
        make_private_dir(self.dir)
        make_private_dir(self.tmp)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise BadRequest(f"bad sha256 {sha256!r}")
        return self.dir / sha256[:2] / sha256

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def has(self, sha256: str, size: int | None = None) -> bool:
        found = self.size(sha256)
        return found is not None and (size is None or found == size)

    def writer(self, **kwargs) -> BlobWriter:
        return BlobWriter(self, **kwargs)

    def put(self, chunks: Iterable[bytes], **kwargs) -> tuple[str, int]:
        """Store ``chunks`` as one blob; returns (sha256, size)."""
        with self.writer(**kwargs) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.finish()

    def read(self, sha256: str, limit: int | None = None) -> bytes:
        with open(self.path(sha256), "rb") as f:
            return f.read() if limit is None else f.read(limit)

    def all(self) -> Iterable[Path]:
        for sub in self.dir.iterdir():
            if sub.is_dir():
                yield from (p for p in sub.iterdir() if is_sha256(p.name))

    def remove_unreferenced(self, used: set[str]) -> int:
        n = 0
        for p in list(self.all()):
            if p.name not in used:
                p.unlink(missing_ok=True)
                n += 1
        return n

    def clean_tmp(self) -> int:
        """Remove what killed uploads left: everything in ``tmp/``, temp names among the blobs. Fix modes."""
        n = 0
        for p in self.tmp.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
        for sub in self.dir.iterdir():
            if not sub.is_dir():
                continue
            make_private_dir(sub)
            for p in sub.iterdir():
                if p.name.startswith(TMP_PREFIX):
                    p.unlink(missing_ok=True)
                    n += 1
                elif (p.stat().st_mode & 0o777) != FILE_MODE:
                    os.chmod(p, FILE_MODE)
        return n


__all__ = ["BlobStore", "BlobWriter", "is_sha256", "make_private_dir", "SHA256_RE"]
