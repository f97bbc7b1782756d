"""The commit payload (NDJSON, one ``{"key", "value"}`` object per line: a ``header``, then ``file`` (inline,
base64), ``lfsFile``, ``deletedFile`` and ``deletedFolder`` lines), checked line by line as it arrives.

Inline files go to the blob store as they arrive (content-addressed: harmless if the commit never completes), within
the inline size limit and the repo's remaining quota; nothing changes in the repo before the whole payload is read
and :meth:`~.storage.HubStorage.commit` runs.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

from ...names import validate_path_in_repo
from .bodies import parse_json, want_int, want_object, want_str
from .errors import BadRequest, QuotaExceeded, TooLarge
from .limits import format_size
from .storage import COMMIT_RE, FileEntry, HubStorage, Op, Repo, git_blob_sha1, lfs_pointer


def max_line_bytes(inline_limit: int) -> int:
    """The longest payload line: one inline file in base64, plus its JSON around it."""
    return inline_limit * 4 // 3 + 64 * 1024


class CommitPayload:
    def __init__(self, storage: HubStorage, repo: Repo, inline_limit: int, room: int, max_lines: int):
        self.storage = storage
        self.repo = repo
        self.inline_limit = inline_limit
        self.room = room
        self.max_lines = max_lines
        self.header: dict[str, Any] | None = None
        self.ops: list[Op] = []
        self.seen: set[str] = set()
        self.lineno = 0
        self.inline_bytes = 0

    def feed(self, line: bytes) -> None:
        self.lineno += 1
        if not line.strip():
            return
        if self.lineno > self.max_lines:
            raise TooLarge(f"a commit may hold at most {self.max_lines} operations")
        where = f"commit payload line {self.lineno}"
        item = want_object(parse_json(line, where), where)
        key = want_str(item, "key", where, required=True)
        if key == "header":
            if self.header is not None:
                raise BadRequest(f"{where}: a second header")
            self.header = self._header(want_object(item.get("value"), f"{where}: the header"))
            return
        if self.header is None:
            raise BadRequest("the first line of a commit payload must be the header")
        value = want_object(item.get("value"), f"{where}: the value")
        handler = {"file": self._file, "lfsFile": self._lfs_file, "deletedFile": self._deletion,
                   "deletedFolder": self._deletion}.get(key)
        if handler is None:
            raise BadRequest(f"{where}: unknown key {key!r}")
        path = want_str(value, "path", where, required=True)
        path = validate_path_in_repo(path.rstrip("/") if key == "deletedFolder" else path)
        if path in self.seen:
            raise BadRequest(f"{path!r} appears twice in the commit")
        self.seen.add(path)
        self.ops.append(handler(key, path, value, where))

    @staticmethod
    def _header(value: dict[str, Any]) -> dict[str, Any]:
        where = "commit header"
        parent = want_str(value, "parentCommit", where)
        if parent is not None and not COMMIT_RE.match(parent):
            raise BadRequest(f"{where}: 'parentCommit' must be a full commit id")
        summary = want_str(value, "summary", where, default="").strip() or "Upload files"
        return {"summary": summary, "description": want_str(value, "description", where, default=""),
                "parentCommit": parent}

    def _file(self, key: str, path: str, value: dict[str, Any], where: str) -> Op:
        encoding = want_str(value, "encoding", where, default="base64")
        if encoding != "base64":
            raise BadRequest(f"{path}: unsupported encoding {encoding!r}")
        try:
            content = base64.b64decode(want_str(value, "content", where, default=""), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{path}: content is not valid base64") from None
        if len(content) > self.inline_limit:
            raise TooLarge(f"{path}: {len(content)} bytes inline is over this hub's inline limit of "
                           f"{self.inline_limit} bytes (send it through LFS)")
        self.inline_bytes += len(content)
        if self.inline_bytes > self.room:
            raise QuotaExceeded(f"{path}: the commit's files would exceed the repo's remaining quota "
                                f"({format_size(self.room)})")
        sha, size = self.storage.put_blob([content])
        return Op("add", path, FileEntry(sha, size, False, git_blob_sha1(content)))

    def _lfs_file(self, key: str, path: str, value: dict[str, Any], where: str) -> Op:
        algo = want_str(value, "algo", where, default="sha256")
        if algo != "sha256":
            raise BadRequest(f"{path}: unsupported LFS algo {algo!r}")
        oid = want_str(value, "oid", where, required=True)
        size = want_int(value, "size", where)
        actual = self.storage.object_size(self.repo, oid)
        if actual is None or (size is not None and size != actual):
            raise BadRequest(f"{path}: LFS object sha256:{oid} was not uploaded (upload it through the LFS batch "
                             f"endpoint first)")
        return Op("add", path, FileEntry(oid, actual, True, git_blob_sha1(lfs_pointer(oid, actual))))

    @staticmethod
    def _deletion(key: str, path: str, value: dict[str, Any], where: str) -> Op:
        return Op("deleteFile" if key == "deletedFile" else "deleteFolder", path)

    def result(self) -> tuple[dict[str, Any], list[Op]]:
        if self.header is None:
            raise BadRequest("commit payload has no header")
        return self.header, self.ops


__all__ = ["CommitPayload", "max_line_bytes"]
