"""The hub's domain storage: repos, refs, commits, quotas and upload tickets in ``hub.db`` (:mod:`.db`), file
contents as content-addressed blobs (:mod:`.blobs`). It knows nothing of HTTP: it raises :mod:`.errors`.

Layout under ``root`` (directories 0700, files 0600)::

    hub.db                      SQLite (WAL): repos, refs, commits and their trees, quotas, tickets, token hashes
    blobs/<sha256[:2]>/<sha256> file contents (written tmp + fsync + rename)
    tmp/                        uploads in progress (emptied at start)
    orgs                        optional: '<org> <user> ...' lines (see :mod:`.tokens`)

Crash safety: blobs are published before the transaction that references them; a commit (its tree, the storage
use, the branch move) is one SQLite transaction. A crash at any point leaves the branch at its previous commit or
its new one, and at most unreferenced blobs (``adapterhub hub gc``) or temp files (removed at start).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable, NamedTuple

from ...names import validate_repo_id
from .blobs import BlobStore, is_sha256, make_private_dir
from .db import DB_NAME, Database
from .errors import (BadRequest, Conflict, EntryNotFound, Forbidden, ParentMismatch, QuotaExceeded, repo_not_found,
                     revision_not_found)
from .legacy import check_legacy_root, import_legacy_root
from .limits import Limits, format_size
from .tokens import TokenStore

DEFAULT_BRANCH = "main"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
UPLOAD_TICKET_TTL = 3600
MAX_HISTORY = 10_000
LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".gguf", ".msgpack", ".npy",
                  ".npz", ".pkl", ".pickle", ".model", ".tflite", ".zip", ".gz", ".tar", ".tgz", ".zst", ".parquet",
                  ".arrow", ".joblib", ".ot", ".tfevents")
GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS).encode()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FileEntry(NamedTuple):
    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob sha1 (of the LFS pointer for LFS files)


@dataclasses.dataclass(frozen=True)
class Repo:
    key: str  # lower-cased id
    id: str  # as created
    private: bool
    created: str

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]


@dataclasses.dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str


@dataclasses.dataclass(frozen=True)
class Op:
    """One change of a commit: ``add`` (with ``entry``), ``deleteFile`` or ``deleteFolder``."""

    kind: str
    path: str
    entry: FileEntry | None = None


def validate_ref_name(name: object, what: str = "branch") -> str:
    if not isinstance(name, str) or not REF_NAME_RE.match(name) or ".." in name or COMMIT_RE.match(name) \
            or name.endswith((".", "/", ".lock")) or "//" in name:
        raise BadRequest(f"bad {what} name {name!r}")
    return name


def _check_tree(files: dict[str, FileEntry]) -> None:
    dirs = {p[:i] for p in files for i in range(len(p)) if p[i] == "/"}
    clash = sorted(set(files) & dirs)
    if clash:
        raise BadRequest(f"{clash[0]!r} would be both a file and a folder")


def _apply(files: dict[str, FileEntry], ops: Iterable[Op]) -> dict[str, FileEntry]:
    files = dict(files)
    for op in ops:
        if op.kind == "add":
            files[op.path] = op.entry  # type: ignore[assignment]
        elif op.kind == "deleteFile":
            if files.pop(op.path, None) is None:
                raise EntryNotFound(f"A file with this name doesn't exist: {op.path}")
        elif op.kind == "deleteFolder":
            gone = [p for p in files if p.startswith(op.path.rstrip("/") + "/")]
            if not gone:
                raise EntryNotFound(f"A folder with this name doesn't exist: {op.path}")
            for p in gone:
                del files[p]
        else:
            raise BadRequest(f"unknown operation {op.kind!r}")
    _check_tree(files)
    return files


class HubStorage:
    """Repos as commits over content-addressed blobs, shared safely by threads and processes on one root."""

    def __init__(self, root: str | Path, limits: Limits | None = None):
        self.root = Path(root).expanduser().resolve()
        make_private_dir(self.root)
        self.limits = limits or Limits()
        self.blobs = BlobStore(self.root)
        self.tmp = self.blobs.tmp
        check_legacy_root(self.root)
        self.db = Database(self.root / DB_NAME)
        self.tokens = TokenStore(self.db)
        import_legacy_root(self)

    # -- blobs ---------------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blobs.path(sha256)

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        return is_sha256(sha256) and self.blobs.has(sha256, size)

    def put_blob(self, chunks: Iterable[bytes], **kwargs) -> tuple[str, int]:
        return self.blobs.put(chunks, **kwargs)

    def read_blob(self, sha256: str, limit: int | None = None) -> bytes:
        return self.blobs.read(sha256, limit)

    # -- repos ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _repo(row: sqlite3.Row | None) -> Repo | None:
        return Repo(row["key"], row["id"], bool(row["private"]), row["created"]) if row else None

    def repo(self, repo_id: str) -> Repo | None:
        """The repo, looked up case-insensitively; None when missing."""
        return self._repo(self.db.one("SELECT * FROM repos WHERE key = ?", (repo_id.lower(),)))

    def list_repos(self) -> list[Repo]:
        return [self._repo(r) for r in self.db.query("SELECT * FROM repos ORDER BY key")]  # type: ignore[misc]

    def create_repo(self, repo_id: str, private: bool, user: str) -> Repo:
        validate_repo_id(repo_id)
        sha, size = self.blobs.put([GITATTRIBUTES])
        files = {".gitattributes": FileEntry(sha, size, False, git_blob_sha1(GITATTRIBUTES))}
        repo = Repo(repo_id.lower(), repo_id, bool(private), now())
        with self.db.write() as cx:
            if cx.execute("SELECT 1 FROM repos WHERE key = ?", (repo.key,)).fetchone():
                raise Conflict("You already created this model repo")
            cx.execute("INSERT INTO repos(key, id, private, created) VALUES (?, ?, ?, ?)",
                       (repo.key, repo.id, int(repo.private), repo.created))
            cid = self._insert_commit(cx, repo.key, None, files, "initial commit", "", user)
            cx.execute("INSERT INTO refs(repo, name, kind, commit_id) VALUES (?, ?, 'branch', ?)",
                       (repo.key, DEFAULT_BRANCH, cid))
        return repo

    def delete_repo(self, repo: Repo) -> None:
        with self.db.write() as cx:
            if cx.execute("DELETE FROM repos WHERE key = ?", (repo.key,)).rowcount == 0:
                raise repo_not_found(repo.id)
            cx.execute("DELETE FROM upload_tickets WHERE repo = ?", (repo.key,))

    def set_private(self, repo: Repo, private: bool) -> None:
        with self.db.write() as cx:
            if cx.execute("UPDATE repos SET private = ? WHERE key = ?", (int(private), repo.key)).rowcount == 0:
                raise repo_not_found(repo.id)

    # -- reading revisions ---------------------------------------------------------------------------------------
    def refs(self, repo: Repo) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {"branches": {}, "tags": {}}
        for r in self.db.query("SELECT name, kind, commit_id FROM refs WHERE repo = ? ORDER BY name", (repo.key,)):
            out["branches" if r["kind"] == "branch" else "tags"][r["name"]] = r["commit_id"]
        return out

    def resolve(self, repo: Repo, rev: str) -> str:
        """Branch, tag or full commit id -> commit id; RevisionNotFound otherwise."""
        row = self.db.one("SELECT commit_id FROM refs WHERE repo = ? AND name = ?", (repo.key, rev))
        if row:
            return row["commit_id"]
        if COMMIT_RE.match(rev) and self.db.one("SELECT 1 FROM commits WHERE repo = ? AND id = ?", (repo.key, rev)):
            return rev
        raise revision_not_found(rev)

    def commit_info(self, repo: Repo, cid: str) -> Commit:
        row = self.db.one("SELECT id, parent, title, message, author, date FROM commits WHERE repo = ? AND id = ?",
                          (repo.key, cid))
        if row is None:
            raise revision_not_found(cid)
        return Commit(**dict(row))

    def files(self, repo: Repo, cid: str) -> dict[str, FileEntry]:
        return self._files(self.db.connect(), repo.key, cid)

    @staticmethod
    def _files(cx: sqlite3.Connection, key: str, cid: str) -> dict[str, FileEntry]:
        rows = cx.execute("SELECT path, sha256, size, lfs, oid FROM commit_files WHERE repo = ? AND commit_id = ?",
                          (key, cid)).fetchall()
        return {r["path"]: FileEntry(r["sha256"], r["size"], bool(r["lfs"]), r["oid"]) for r in rows}

    def history(self, repo: Repo, cid: str) -> list[Commit]:
        rows = self.db.query(
            "WITH RECURSIVE h(id, depth) AS (SELECT ?, 0 UNION ALL SELECT c.parent, h.depth + 1 FROM commits c "
            "JOIN h ON c.repo = ? AND c.id = h.id WHERE c.parent IS NOT NULL AND h.depth < ?) "
            "SELECT c.id, c.parent, c.title, c.message, c.author, c.date FROM h JOIN commits c "
            "ON c.repo = ? AND c.id = h.id ORDER BY h.depth", (cid, repo.key, MAX_HISTORY, repo.key))
        return [Commit(**dict(r)) for r in rows]

    # -- writing -------------------------------------------------------------------------------------------------
    def branch_for_write(self, repo: Repo, rev: str) -> str:
        row = self.db.one("SELECT kind FROM refs WHERE repo = ? AND name = ?", (repo.key, rev))
        if row is not None and row["kind"] == "branch":
            return rev
        if row is not None or COMMIT_RE.match(rev):
            raise BadRequest(f"cannot commit to {rev!r}: commits go to a branch")
        raise revision_not_found(rev)

    def commit(self, repo: Repo, branch: str, ops: list[Op], title: str, message: str, user: str,
               parent_commit: str | None = None) -> str:
        """Apply ``ops`` (their blobs already stored) on top of ``branch``, in one transaction."""
        with self.db.write() as cx:
            head = self._branch_head(cx, repo, branch)
            if parent_commit is not None and parent_commit != head:
                raise ParentMismatch(f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = _apply(self._files(cx, repo.key, head), ops)
            cid = self._insert_commit(cx, repo.key, head, files, title, message, user)
            self._check_quota(cx, repo)
            self._move_ref(cx, repo.key, branch, cid)
        return cid

    def _branch_head(self, cx: sqlite3.Connection, repo: Repo, branch: str) -> str:
        row = cx.execute("SELECT kind, commit_id FROM refs WHERE repo = ? AND name = ?", (repo.key, branch)).fetchone()
        if row is not None and row["kind"] == "branch":
            return row["commit_id"]
        if not cx.execute("SELECT 1 FROM repos WHERE key = ?", (repo.key,)).fetchone():
            raise repo_not_found(repo.id)
        if row is not None or COMMIT_RE.match(branch):
            raise BadRequest(f"cannot commit to {branch!r}: commits go to a branch")
        raise revision_not_found(branch)

    def _insert_commit(self, cx: sqlite3.Connection, key: str, parent: str | None, files: dict[str, FileEntry],
                       title: str, message: str, user: str) -> str:
        date = now()
        body = json.dumps([key, parent, title, message, user, date, sorted(files.items())]).encode()
        cid = hashlib.sha1(body + secrets.token_bytes(8)).hexdigest()
        cx.execute("INSERT INTO commits(repo, id, parent, title, message, author, date) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (key, cid, parent, title, message, user, date))
        cx.executemany("INSERT INTO commit_files(repo, commit_id, path, sha256, size, lfs, oid) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(key, cid, p, e.sha256, e.size, int(e.lfs), e.oid) for p, e in files.items()])
        cx.executemany("INSERT OR IGNORE INTO repo_blobs(repo, sha256, size) VALUES (?, ?, ?)",
                       {(key, e.sha256, e.size) for e in files.values()})
        return cid

    @staticmethod
    def _move_ref(cx: sqlite3.Connection, key: str, branch: str, cid: str) -> None:
        cx.execute("UPDATE refs SET commit_id = ? WHERE repo = ? AND name = ?", (cid, key, branch))

    def set_ref(self, repo: Repo, kind: str, name: str, cid: str | None) -> None:
        """Create (``cid``) or delete (``None``) a branch (``kind='branch'``) or tag (``'tag'``)."""
        what = "Branch" if kind == "branch" else "Tag"
        with self.db.write() as cx:
            row = cx.execute("SELECT kind FROM refs WHERE repo = ? AND name = ?", (repo.key, name)).fetchone()
            if cid is None:
                if row is None or row["kind"] != kind:
                    raise revision_not_found(name) if row is None else BadRequest(f"{name} is not a {kind}")
                if kind == "branch" and name == DEFAULT_BRANCH:
                    raise Forbidden(f"cannot delete the {DEFAULT_BRANCH} branch")
                cx.execute("DELETE FROM refs WHERE repo = ? AND name = ?", (repo.key, name))
                return
            validate_ref_name(name, kind)
            if row is not None:
                raise Conflict(f"{what} {name} already exists" if row["kind"] == kind
                               else f"a branch or tag named {name} already exists")
            cx.execute("INSERT INTO refs(repo, name, kind, commit_id) VALUES (?, ?, ?, ?)", (repo.key, name, kind, cid))

    # -- quotas --------------------------------------------------------------------------------------------------
    def quota(self, repo: Repo) -> int:
        row = self.db.one("SELECT max_bytes FROM quotas WHERE repo = ?", (repo.key,))
        return row["max_bytes"] if row else self.limits.max_repo_bytes

    def usage(self, repo: Repo, cx: sqlite3.Connection | None = None) -> int:
        cx = cx or self.db.connect()
        return cx.execute("SELECT COALESCE(SUM(size), 0) FROM repo_blobs WHERE repo = ?", (repo.key,)).fetchone()[0]

    def room(self, repo: Repo) -> int:
        """Bytes the repo may still take."""
        return max(0, self.quota(repo) - self.usage(repo))

    def _check_quota(self, cx: sqlite3.Connection, repo: Repo) -> None:
        used, limit = self.usage(repo, cx), self.quota(repo)
        if used > limit:
            raise QuotaExceeded(f"{repo.id} would hold {format_size(used)}, over its quota of {format_size(limit)}")

    def set_quota(self, repo_id: str, max_bytes: int | None) -> None:
        validate_repo_id(repo_id)
        with self.db.write() as cx:
            if max_bytes is None:
                cx.execute("DELETE FROM quotas WHERE repo = ?", (repo_id.lower(),))
            else:
                cx.execute("INSERT OR REPLACE INTO quotas(repo, max_bytes) VALUES (?, ?)", (repo_id.lower(), max_bytes))

    def quotas(self) -> dict[str, int]:
        return {r["repo"]: r["max_bytes"] for r in self.db.query("SELECT repo, max_bytes FROM quotas ORDER BY repo")}

    # -- LFS upload tickets --------------------------------------------------------------------------------------
    def new_ticket(self, repo: Repo, oid: str, size: int) -> str:
        ticket = secrets.token_urlsafe(24)
        with self.db.write() as cx:
            cx.execute("DELETE FROM upload_tickets WHERE expires < ?", (time.time(),))
            cx.execute("INSERT INTO upload_tickets(ticket_hash, repo, oid, size, expires) VALUES (?, ?, ?, ?, ?)",
                       (hashlib.sha256(ticket.encode()).hexdigest(), repo.key, oid, size,
                        time.time() + UPLOAD_TICKET_TTL))
        return ticket

    def take_ticket(self, ticket: str) -> tuple[str, str, int] | None:
        """(repo key, oid, size) of a valid ticket, which is used up; None for an unknown or expired one."""
        with self.db.write() as cx:
            row = cx.execute("DELETE FROM upload_tickets WHERE ticket_hash = ? RETURNING repo, oid, size, expires",
                             (hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest(),)).fetchone()
        if row is None or row["expires"] < time.time():
            return None
        return row["repo"], row["oid"], row["size"]

    def record_upload(self, repo_key: str, sha256: str) -> None:
        """An LFS object was sent (and verified) for this repo: from now on it may commit it."""
        with self.db.write() as cx:
            cx.execute("INSERT OR IGNORE INTO lfs_uploads(repo, sha256) SELECT key, ? FROM repos WHERE key = ?",
                       (sha256, repo_key))

    def object_size(self, repo: Repo, sha256: str) -> int | None:
        """Size of an LFS object this repo may use (it references it, or it was sent to it); None otherwise. Blobs
        are shared on disk, but a repo never learns of, or links to, another repo's objects without their bytes."""
        if not is_sha256(sha256) or not self.db.one(
                "SELECT 1 FROM repo_blobs WHERE repo = ? AND sha256 = ? UNION ALL "
                "SELECT 1 FROM lfs_uploads WHERE repo = ? AND sha256 = ? LIMIT 1",
                (repo.key, sha256, repo.key, sha256)):
            return None
        return self.blobs.size(sha256)

    # -- maintenance ---------------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """At start: remove what killed uploads left, expired tickets. The database recovers by itself."""
        removed = {"tmp": self.blobs.clean_tmp()}
        with self.db.write() as cx:
            removed["tickets"] = cx.execute("DELETE FROM upload_tickets WHERE expires < ?", (time.time(),)).rowcount
        return removed

    def gc(self) -> int:
        """Delete blobs no stored commit references. Only safe while no upload is in flight."""
        used = {r[0] for r in self.db.query("SELECT DISTINCT sha256 FROM commit_files")}
        removed = self.blobs.remove_unreferenced(used)
        with self.db.write() as cx:
            cx.execute("DELETE FROM lfs_uploads WHERE sha256 NOT IN (SELECT sha256 FROM commit_files)")
        return removed

    def close(self) -> None:
        self.db.close()


__all__ = ["HubStorage", "Repo", "Commit", "FileEntry", "Op", "DEFAULT_BRANCH", "COMMIT_RE", "LFS_EXTENSIONS",
           "GITATTRIBUTES", "git_blob_sha1", "lfs_pointer", "validate_ref_name", "now", "UPLOAD_TICKET_TTL"]
