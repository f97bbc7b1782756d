"""``adapterhub hub serve``: a self-hosted hub.

It speaks the part of the Hugging Face Hub HTTP API that ``huggingface_hub`` 2.x uses for *model* repos, so the
stock client (``HfApi``, ``snapshot_download``, ``hf_hub_download``, ``peft``/``transformers``
``from_pretrained``) works against it through ``HF_ENDPOINT``:

- repos: ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``PUT /api/models/{repo}/settings``,
  ``GET /api/models`` (listing), ``GET /api/whoami-v2``, ``POST /api/validate-yaml``
- read: ``GET /api/models/{repo}[/revision/{rev}]`` (model info), ``GET /api/models/{repo}/tree/{rev}[/{path}]``,
  ``POST /api/models/{repo}/paths-info/{rev}``, ``GET /api/models/{repo}/refs``,
  ``GET /api/models/{repo}/commits/{rev}``, ``HEAD|GET /{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``,
  ``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range`` requests)
- write: ``POST /api/models/{repo}/preupload/{rev}``, ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: inline
  ``file`` entries, ``lfsFile`` entries, ``deletedFile``/``deletedFolder``, ``parentCommit``),
  ``POST /{repo}.git/info/lfs/objects/batch`` (basic transfer) with a one-use upload URL per object and a
  ``verify`` action, branches and tags (``/api/models/{repo}/branch/{name}``, ``/tag/{rev}``)

Revisions: branch names, tag names and full 40-hex commit ids. Not supported: Xet storage (the client must not use
it: set ``HF_HUB_DISABLE_XET=1``, or start the server with ``lfs=False`` / ``--no-lfs`` so every file is sent
inline), pull requests, datasets and spaces, pagination (one page holds everything).

Auth: writing needs ``Authorization: Bearer <token>`` with a token the server knows (``<root>/tokens``: lines of
``<user> <token>``; created with a random token on first start when absent); reading a private repo needs one
too. Every valid token may write every repo: this is a single-tenant hub. Tokens are never logged.

Storage under ``root`` (crash-safe: a commit is visible only once its ref is renamed into place, which is the
last step; a killed client or server leaves at most unreferenced blobs, cleaned by :meth:`HubStorage.gc`)::

    tokens                                   "<user> <token>" lines, mode 0600
    blobs/<sha256[:2]>/<sha256>              file contents, content-addressed (written tmp + fsync + rename)
    tmp/                                     uploads in progress (emptied at start)
    repos/<ns>/<name>/repo.json              {"id", "private", "created"}
    repos/<ns>/<name>/commits/<id>.json      immutable commit manifests: parents, message, {path: blob info}
    repos/<ns>/<name>/refs.json              {"branches": {name: id}, "tags": {name: id}}: replaced atomically
"""
from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..atomic import discard, publish_dir, publish_file, write_bytes_atomic
from ..errors import HubError
from ..names import validate_path_in_repo, validate_repo_id

DEFAULT_HOST = "127.0.0.1"
DEFAULT_BRANCH = "main"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".gguf", ".msgpack", ".npy",
                  ".npz", ".pkl", ".pickle", ".model", ".tflite", ".zip", ".gz", ".tar", ".tgz", ".zst", ".parquet",
                  ".arrow", ".joblib", ".ot", ".tfevents")
LFS_THRESHOLD = 10 * 1024 * 1024     # like the Hub: bigger files go through LFS
MAX_JSON_BODY = 64 * 1024 * 1024
MAX_INLINE_FILE = 1024 * 1024 * 1024  # one base64 line of the commit NDJSON
UPLOAD_TICKET_TTL = 3600
CHUNK = 1 << 16
GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS)
CRASH_ENV = "ADAPTERHUB_HUB_CRASH_POINT"  # test hook: "after-manifest" -> the server process dies mid-commit


# ----------------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------------
class HTTPError(Exception):
    """An error answer: status, ``X-Error-Code`` (what huggingface_hub maps to its exception types), message."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _not_found(repo_id: str) -> HTTPError:
    return HTTPError(404, f"Repository {repo_id} not found", "RepoNotFound")


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


class IncompleteBody(Exception):
    """The client went away before sending the whole request body."""


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------
def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def load_tokens(root: Path, create: bool = True) -> dict[str, str]:
    """``<root>/tokens`` as {token: user}; created with one random token for user ``user`` when absent."""
    path = Path(root) / "tokens"
    if not path.exists():
        if not create:
            return {}
        path.parent.mkdir(parents=True, exist_ok=True)
        token = "ahub_" + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# adapterhub hub tokens: one '<user> <token>' per line. Keep this file private.\n")
            f.write(f"user {token}\n")
    tokens: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise HubError(f"{path}: each line must be '<user> <token>'")
        user, token = parts
        tokens[token] = user
    return tokens


# ----------------------------------------------------------------------------------------------------------------
# storage
# ----------------------------------------------------------------------------------------------------------------
class HubStorage:
    """Repos as commits over content-addressed blobs. Thread-safe within one process; one server per root."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.repos = self.root / "repos"
        for d in (self.blobs, self.tmp, self.repos):
            d.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._repos_lock = threading.Lock()
        self.crash_point = os.environ.get(CRASH_ENV) or None

    # -- locking / paths ---------------------------------------------------------------------------------------
    def lock(self, repo_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(repo_id, threading.Lock())

    def repo_dir(self, repo_id: str) -> Path:
        ns, name = repo_id.split("/")
        return self.repos / ns / name

    def blob_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            raise _bad(f"bad sha256 {sha256!r}")
        return self.blobs / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        p = self.blob_path(sha256)
        return p.is_file() and (size is None or p.stat().st_size == size)

    # -- recovery ------------------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Remove what a killed writer left: temp files, half-written uploads, commit manifests no ref reaches
        (a commit whose ref update never happened). Run at server start."""
        removed = {"tmp": 0, "manifests": 0}
        for p in self.tmp.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed["tmp"] += 1
        for p in self.root.rglob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed["tmp"] += 1
        for repo_id in self.list_repo_ids():
            d = self.repo_dir(repo_id)
            reachable = self._reachable(repo_id)
            for m in (d / "commits").glob("*.json"):
                if m.stem not in reachable:
                    m.unlink(missing_ok=True)
                    removed["manifests"] += 1
        return removed

    def gc(self) -> int:
        """Delete blobs no commit of any repo references. Only safe while no upload is in flight."""
        used: set[str] = set()
        for repo_id in self.list_repo_ids():
            for cid in self._reachable(repo_id):
                used.update(e["sha256"] for e in self.manifest(repo_id, cid)["files"].values())
        n = 0
        for p in self.blobs.glob("*/*"):
            if p.name not in used:
                p.unlink(missing_ok=True)
                n += 1
        return n

    def _reachable(self, repo_id: str) -> set[str]:
        refs = self.refs(repo_id)
        todo = list(refs["branches"].values()) + list(refs["tags"].values())
        seen: set[str] = set()
        while todo:
            cid = todo.pop()
            if cid in seen:
                continue
            seen.add(cid)
            with contextlib.suppress(HTTPError):
                todo.extend(self.manifest(repo_id, cid).get("parents", []))
        return seen

    # -- blobs ---------------------------------------------------------------------------------------------------
    def put_blob(self, chunks: Iterable[bytes], expect_sha256: str | None = None,
                 expect_size: int | None = None) -> tuple[str, int]:
        """Stream ``chunks`` into the blob store; returns (sha256, size). Verified against the expectations when
        given; on any failure (including the client going away) nothing is left behind."""
        h = hashlib.sha256()
        size = 0
        tmp = self.tmp / f"blob-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    size += len(chunk)
                    if expect_size is not None and size > expect_size:
                        raise _bad(f"upload is larger than the announced {expect_size} bytes")
                    f.write(chunk)
            sha = h.hexdigest()
            if expect_size is not None and size != expect_size:
                raise _bad(f"upload has {size} bytes, {expect_size} were announced")
            if expect_sha256 is not None and sha != expect_sha256:
                raise _bad(f"upload has sha256 {sha}, {expect_sha256} was announced")
            target = self.blob_path(sha)
            if target.exists():
                tmp.unlink()
            else:
                target.parent.mkdir(exist_ok=True)
                publish_file(tmp, target)  # fsync, rename, fsync the directory
            return sha, size
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    # -- repos ---------------------------------------------------------------------------------------------------
    def list_repo_ids(self) -> list[str]:
        out = []
        for ns in sorted(self.repos.iterdir()) if self.repos.is_dir() else []:
            if not ns.is_dir() or ns.name.startswith("."):
                continue
            for d in sorted(ns.iterdir()):
                if d.is_dir() and not d.name.startswith(".") and (d / "refs.json").is_file():
                    out.append(f"{ns.name}/{d.name}")
        return out

    def repo_meta(self, repo_id: str) -> dict[str, Any] | None:
        p = self.repo_dir(repo_id) / "repo.json"
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None

    def create_repo(self, repo_id: str, private: bool, user: str) -> dict[str, Any]:
        """Created whole or not at all: built under ``tmp/`` then renamed into place."""
        with self._repos_lock:
            target = self.repo_dir(repo_id)
            if target.exists():
                raise HTTPError(409, "You already created this model repo")
            build = self.tmp / f"repo-{uuid.uuid4().hex}"
            (build / "commits").mkdir(parents=True)
            try:
                meta = {"id": repo_id, "private": bool(private), "created": _now()}
                (build / "repo.json").write_bytes(_json_bytes(meta))
                sha, size = self.put_blob([GITATTRIBUTES.encode()])
                files = {".gitattributes": {"sha256": sha, "size": size, "lfs": False,
                                            "oid": git_blob_sha1(GITATTRIBUTES.encode())}}
                cid, manifest = self._new_manifest([], files, "initial commit", "", user)
                (build / "commits" / f"{cid}.json").write_bytes(_json_bytes(manifest))
                (build / "refs.json").write_bytes(_json_bytes({"branches": {DEFAULT_BRANCH: cid}, "tags": {}}))
                target.parent.mkdir(parents=True, exist_ok=True)
                publish_dir(build, target)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
            return meta

    def delete_repo(self, repo_id: str) -> None:
        with self._repos_lock, self.lock(repo_id):
            d = self.repo_dir(repo_id)
            if not (d / "refs.json").is_file():
                raise _not_found(repo_id)
            discard(d, trash_dir=self.tmp)
            with contextlib.suppress(OSError):
                d.parent.rmdir()

    def set_private(self, repo_id: str, private: bool) -> None:
        with self.lock(repo_id):
            meta = self.repo_meta(repo_id)
            if meta is None:
                raise _not_found(repo_id)
            meta["private"] = bool(private)
            write_bytes_atomic(self.repo_dir(repo_id) / "repo.json", _json_bytes(meta))

    # -- refs and commits ----------------------------------------------------------------------------------------
    def refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        try:
            return json.loads((self.repo_dir(repo_id) / "refs.json").read_text())
        except FileNotFoundError:
            raise _not_found(repo_id) from None

    def _write_refs(self, repo_id: str, refs: dict) -> None:
        write_bytes_atomic(self.repo_dir(repo_id) / "refs.json", _json_bytes(refs))

    def manifest(self, repo_id: str, cid: str) -> dict[str, Any]:
        if not COMMIT_RE.match(cid):
            raise HTTPError(404, f"Invalid rev id: {cid}", "RevisionNotFound")
        try:
            return json.loads((self.repo_dir(repo_id) / "commits" / f"{cid}.json").read_text())
        except FileNotFoundError:
            raise HTTPError(404, f"Invalid rev id: {cid}", "RevisionNotFound") from None

    def resolve(self, repo_id: str, rev: str) -> str:
        """Branch, tag or full commit id -> commit id; RevisionNotFound otherwise."""
        refs = self.refs(repo_id)
        if rev in refs["branches"]:
            return refs["branches"][rev]
        if rev in refs["tags"]:
            return refs["tags"][rev]
        if COMMIT_RE.match(rev) and (self.repo_dir(repo_id) / "commits" / f"{rev}.json").is_file():
            return rev
        raise HTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _new_manifest(self, parents: list[str], files: dict, title: str, message: str,
                      user: str) -> tuple[str, dict[str, Any]]:
        body = {"parents": parents, "title": title, "message": message, "author": user, "date": _now(),
                "files": files}
        cid = hashlib.sha1(_json_bytes(body) + secrets.token_bytes(8)).hexdigest()
        return cid, {"id": cid, **body}

    def commit(self, repo_id: str, branch: str, ops: list[dict[str, Any]], title: str, message: str, user: str,
               parent_commit: str | None = None) -> str:
        """Apply ``ops`` (all blobs already stored) on top of ``branch``. The manifest is written first, the ref
        last (atomic rename): a crash in between leaves the branch where it was."""
        with self.lock(repo_id):
            refs = self.refs(repo_id)
            if branch not in refs["branches"]:
                if branch in refs["tags"] or COMMIT_RE.match(branch):
                    raise _bad(f"cannot commit to {branch!r}: commits go to a branch")
                raise HTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = refs["branches"][branch]
            if parent_commit is not None and parent_commit != head:
                raise HTTPError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = dict(self.manifest(repo_id, head)["files"])
            for op in ops:
                kind, path = op["kind"], op["path"]
                if kind == "add":
                    files[path] = op["entry"]
                elif kind == "deleteFile":
                    if path not in files:
                        raise HTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif kind == "deleteFolder":
                    prefix = path.rstrip("/") + "/"
                    gone = [p for p in files if p.startswith(prefix)]
                    if not gone:
                        raise HTTPError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del files[p]
            _check_tree(files)
            cid, manifest = self._new_manifest([head], files, title, message, user)
            mpath = self.repo_dir(repo_id) / "commits" / f"{cid}.json"
            write_bytes_atomic(mpath, _json_bytes(manifest))
            try:
                if self.crash_point == "after-manifest":
                    os._exit(17)  # test hook: a server killed between the manifest and the ref
                refs["branches"][branch] = cid
                self._write_refs(repo_id, refs)
            except BaseException:
                mpath.unlink(missing_ok=True)
                raise
            return cid

    def set_ref(self, repo_id: str, kind: str, name: str, cid: str | None, exist_ok: bool = False) -> None:
        """Create (``cid``) or delete (``None``) a branch (``kind='branches'``) or tag (``'tags'``)."""
        with self.lock(repo_id):
            refs = self.refs(repo_id)
            table = refs[kind]
            what = "Branch" if kind == "branches" else "Tag"
            if cid is None:
                if name not in table:
                    raise HTTPError(404, f"{what} {name} not found", "RevisionNotFound")
                if kind == "branches" and name == DEFAULT_BRANCH:
                    raise HTTPError(403, f"cannot delete the {DEFAULT_BRANCH} branch")
                del table[name]
            else:
                if name in table:
                    raise HTTPError(409, f"{what} {name} already exists")
                if name in refs["branches"] or name in refs["tags"]:
                    raise HTTPError(409, f"a branch or tag named {name} already exists")
                table[name] = cid
            self._write_refs(repo_id, refs)


def _check_tree(files: dict[str, Any]) -> None:
    dirs: set[str] = set()
    for p in files:
        parts = p.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    clash = sorted(set(files) & dirs)
    if clash:
        raise _bad(f"{clash[0]!r} would be both a file and a folder")


# ----------------------------------------------------------------------------------------------------------------
# request bodies
# ----------------------------------------------------------------------------------------------------------------
class _Body:
    """The request body: ``Content-Length`` or chunked; raises :class:`IncompleteBody` on early EOF."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        try:
            self.remaining = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        except ValueError:
            self.remaining = 0
            self.bad_length = True
        if self.remaining < 0:
            self.remaining, self.bad_length = 0, True
        self.chunk_left = 0
        self.done = not self.chunked and self.remaining == 0
        self.buf = b""

    bad_length = False

    def _raw(self, n: int) -> bytes:
        if self.done:
            return b""
        if not self.chunked:
            data = self.rfile.read(min(n, self.remaining))
            if not data:
                raise IncompleteBody()
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        if self.chunk_left == 0:
            line = self.rfile.readline(1024)
            if not line:
                raise IncompleteBody()
            try:
                self.chunk_left = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise IncompleteBody() from None
            if self.chunk_left == 0:
                while True:  # trailers
                    t = self.rfile.readline(65536)
                    if not t:
                        raise IncompleteBody()
                    if t in (b"\r\n", b"\n"):
                        break
                self.done = True
                return b""
        data = self.rfile.read(min(n, self.chunk_left))
        if not data:
            raise IncompleteBody()
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            self.rfile.readline(16)  # CRLF after the chunk
        return data

    def read(self, n: int = CHUNK) -> bytes:
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        while not self.done:
            data = self._raw(n)
            if data:
                return data
        return b""

    def chunks(self) -> Iterator[bytes]:
        while True:
            data = self.read(CHUNK)
            if not data:
                return
            yield data

    def read_all(self, limit: int) -> bytes:
        out = io.BytesIO()
        for c in self.chunks():
            out.write(c)
            if out.tell() > limit:
                raise HTTPError(413, f"request body larger than {limit} bytes")
        return out.getvalue()

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self.buf and not self.done:
            self.buf += self._raw(CHUNK)
            if len(self.buf) > limit:
                raise HTTPError(413, f"a line of the request body is longer than {limit} bytes")
        i = self.buf.find(b"\n")
        if i < 0:
            line, self.buf = self.buf, b""
        else:
            line, self.buf = self.buf[: i + 1], self.buf[i + 1:]
        return line

    def drain(self, limit: int | None = None) -> None:
        n = 0
        for c in self.chunks():
            n += len(c)
            if limit is not None and n > limit:
                return


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: "HubServer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "adapterhub-hub"
    sys_version = ""
    timeout = 600  # seconds of silence before a connection is dropped (a half-open client cannot hold a thread)
    server: _Server

    # -- plumbing ------------------------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    @property
    def hub(self) -> "HubServer":
        return self.server.hub

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        self.hub.log(f"{self.address_string()} {format % args}")

    def log_request(self, code="-", size="-") -> None:
        # never the query string (signed URLs), never an upload ticket, never a header
        path = urlsplit(self.path).path
        path = re.sub(r"/lfs-upload/[^/]+", "/lfs-upload/<ticket>", path)
        self.hub.log(f'{self.address_string()} "{self.command} {path}" {code}')

    def _dispatch(self, method: str) -> None:
        self.body = _Body(self.rfile, self.headers)
        self.base_url = f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"
        try:
            if self.body.bad_length:
                self.close_connection = True
                raise _bad("bad Content-Length header")
            url = urlsplit(self.path)
            segs = [unquote(s) for s in url.path.split("/")[1:]]
            if segs and segs[-1] == "" and len(segs) > 1:
                segs = segs[:-1]
            self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self._route(method, segs)
        except (IncompleteBody, TimeoutError):
            self.close_connection = True
            self.hub.log(f"{self.address_string()} client went away during {self.command} "
                         f"{urlsplit(self.path).path}: request dropped, nothing stored")
        except HTTPError as e:
            self._send_error(e)
        except HubError as e:  # name/path validation
            self._send_error(HTTPError(400, str(e)))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - a bug: answer 500, keep serving
            self.hub.log("".join(traceback.format_exception(type(e), e, e.__traceback__)))
            with contextlib.suppress(Exception):
                self._send_error(HTTPError(500, f"internal error: {type(e).__name__}"))
        finally:
            if not self.body.done:
                self.close_connection = True

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if not self.body.done:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _send_error(self, e: HTTPError) -> None:
        if not self.body.done:  # read what the client is still sending so it sees the answer, not a reset
            with contextlib.suppress(Exception):
                self.body.drain(limit=MAX_JSON_BODY)
        headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode()[:500]}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._json({"error": e.message}, status=e.status, headers=headers)

    # -- auth ----------------------------------------------------------------------------------------------------
    def _user(self) -> str | None:
        """The user of a valid bearer token; ``None`` without one; 401 for a token the server does not know."""
        auth = self.headers.get("Authorization") or ""
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPError(401, "Invalid credentials in Authorization header")
        user = self.hub.check_token(token.strip())
        if user is None:
            raise HTTPError(401, "Invalid credentials in Authorization header")
        return user

    def _need_write(self) -> str:
        user = self._user()
        if user is None:
            raise HTTPError(401, "Invalid credentials in Authorization header: writing needs a token "
                                 "(Authorization: Bearer <token>)")
        return user

    def _readable(self, repo_id: str) -> dict[str, Any]:
        validate_repo_id(repo_id)
        meta = self.hub.storage.repo_meta(repo_id)
        user = self._user()
        if meta is None:
            raise _not_found(repo_id)
        if meta.get("private") and user is None:
            raise HTTPError(401, f"Repository {repo_id} not found (it may be private: pass a token)", "RepoNotFound")
        return meta

    def _writable(self, repo_id: str) -> str:
        validate_repo_id(repo_id)
        user = self._need_write()
        if self.hub.storage.repo_meta(repo_id) is None:
            raise _not_found(repo_id)
        return user

    def _json_body(self) -> Any:
        raw = self.body.read_all(MAX_JSON_BODY)
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _bad(f"request body is not valid JSON ({e})") from None

    # -- routing -------------------------------------------------------------------------------------------------
    def _route(self, method: str, segs: list[str]) -> None:
        if not segs or segs == [""]:
            return self._send(200, b"adapterhub hub\n", "text/plain")
        if segs[0] == "api":
            return self._route_api(method, segs[1:])
        if segs[0] in ("datasets", "spaces"):
            raise HTTPError(404, "this hub only hosts model repos", "RepoNotFound")
        # /{ns}/{name}.git/info/lfs/objects/{batch|verify}
        if len(segs) == 6 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{segs[0]}/{segs[1][:-4]}"
            if method == "POST" and segs[5] == "batch":
                return self._lfs_batch(repo_id)
            if method == "POST" and segs[5] == "verify":
                return self._lfs_verify(repo_id)
        # /{ns}/{name}/resolve/{rev}/{path...}
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
        raise HTTPError(404, f"no route for {method} {urlsplit(self.path).path}")

    def _route_api(self, method: str, s: list[str]) -> None:
        if s == ["whoami-v2"] and method == "GET":
            return self._whoami()
        if s == ["validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if s == ["repos", "create"] and method == "POST":
            return self._create_repo()
        if s == ["repos", "delete"] and method == "DELETE":
            return self._delete_repo()
        if len(s) == 3 and s[:2] == ["adapterhub", "lfs-upload"] and method == "PUT":
            return self._lfs_upload(s[2])
        if s and s[0] in ("datasets", "spaces", "kernels", "buckets"):
            raise HTTPError(404, "this hub only hosts model repos", "RepoNotFound")
        if s == ["models"] and method == "GET":
            return self._list_models()
        if len(s) < 3 or s[0] != "models":
            raise HTTPError(404, f"no route for {method} {urlsplit(self.path).path}")
        repo_id = f"{s[1]}/{s[2]}"
        rest = s[3:]
        if not rest and method == "GET":
            return self._model_info(repo_id, None)
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            return self._model_info(repo_id, rest[1])
        if rest and rest[0] == "tree" and method == "GET":
            rev = rest[1] if len(rest) > 1 else DEFAULT_BRANCH
            return self._tree(repo_id, rev, "/".join(rest[2:]))
        if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
            return self._paths_info(repo_id, rest[1])
        if rest == ["refs"] and method == "GET":
            return self._refs(repo_id)
        if len(rest) == 2 and rest[0] == "commits" and method == "GET":
            return self._commits(repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
            return self._preupload(repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "commit" and method == "POST":
            return self._commit(repo_id, rest[1])
        if len(rest) == 2 and rest[0] == "branch" and method in ("POST", "DELETE"):
            return self._branch(repo_id, rest[1], method)
        if len(rest) == 2 and rest[0] == "tag" and method in ("POST", "DELETE"):
            return self._tag(repo_id, rest[1], method)
        if rest == ["settings"] and method == "PUT":
            return self._settings(repo_id)
        if len(rest) == 2 and rest[0] in ("xet-write-token", "xet-read-token"):
            raise HTTPError(501, "this hub has no Xet storage: set HF_HUB_DISABLE_XET=1 on the client, or start the "
                                 "server with --no-lfs so every file is committed inline")
        raise HTTPError(404, f"no route for {method} {urlsplit(self.path).path}")

    # -- account / misc ------------------------------------------------------------------------------------------
    def _whoami(self) -> None:
        user = self._user()
        if user is None:
            raise HTTPError(401, "Invalid credentials in Authorization header: no token given")
        self._json({"type": "user", "id": user, "name": user, "fullname": user, "orgs": [], "isPro": False,
                    "auth": {"type": "access_token", "accessToken": {"displayName": "adapterhub", "role": "write"}}})

    def _validate_yaml(self) -> None:
        body = self._json_body()
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, str):
            raise _bad("expected {'content': str}")
        meta, err = parse_front_matter(content)
        if err:
            self._json({"errors": [{"message": err}], "warnings": []}, status=400)
            return
        self._json({"errors": [], "warnings": []})

    def _list_models(self) -> None:
        user = self._user()
        search = self.query.get("search") or ""
        author = self.query.get("author")
        out = []
        for repo_id in self.hub.storage.list_repo_ids():
            meta = self.hub.storage.repo_meta(repo_id) or {}
            if meta.get("private") and user is None:
                continue
            if search and search.lower() not in repo_id.lower():
                continue
            if author and repo_id.split("/")[0] != author:
                continue
            head = self.hub.storage.refs(repo_id)["branches"].get(DEFAULT_BRANCH)
            out.append({"id": repo_id, "modelId": repo_id, "private": bool(meta.get("private")), "sha": head,
                        "createdAt": meta.get("created")})
        self._json(out)

    # -- repos ---------------------------------------------------------------------------------------------------
    def _repo_id_from_body(self, body: Any, user: str) -> str:
        if not isinstance(body, dict):
            raise _bad("expected a JSON object")
        if body.get("type") not in (None, "model"):
            raise _bad("this hub only hosts model repos")
        name, org = body.get("name"), body.get("organization")
        if not isinstance(name, str):
            raise _bad("missing repo name")
        return validate_repo_id(f"{org or user}/{name}")

    def _create_repo(self) -> None:
        user = self._need_write()
        body = self._json_body()
        repo_id = self._repo_id_from_body(body, user)
        private = body.get("private")
        if body.get("visibility") is not None:
            private = body["visibility"] != "public"
        try:
            self.hub.storage.create_repo(repo_id, bool(private), user)
        except HTTPError as e:
            if e.status == 409:
                self._json({"error": e.message, "url": f"{self.base_url}/{repo_id}"}, status=409,
                           headers={"X-Error-Message": e.message})
                return
            raise
        self.hub.log(f"created repo {repo_id} (private={bool(private)}) for {user}")
        self._json({"url": f"{self.base_url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        user = self._need_write()
        repo_id = self._repo_id_from_body(self._json_body(), user)
        self.hub.storage.delete_repo(repo_id)
        self.hub.log(f"deleted repo {repo_id} for {user}")
        self._send(200, b"")

    def _settings(self, repo_id: str) -> None:
        self._writable(repo_id)
        body = self._json_body()
        if not isinstance(body, dict):
            raise _bad("expected a JSON object")
        private = body.get("private")
        if body.get("visibility") is not None:
            private = body["visibility"] != "public"
        if private is not None:
            self.hub.storage.set_private(repo_id, bool(private))
        self._json({})

    # -- read API ------------------------------------------------------------------------------------------------
    def _files_at(self, repo_id: str, rev: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        cid = self.hub.storage.resolve(repo_id, rev)
        manifest = self.hub.storage.manifest(repo_id, cid)
        return cid, manifest, manifest["files"]

    def _model_info(self, repo_id: str, rev: str | None) -> None:
        meta = self._readable(repo_id)
        cid, manifest, files = self._files_at(repo_id, rev or DEFAULT_BRANCH)
        siblings = []
        for path in sorted(files):
            e = files[path]
            sib: dict[str, Any] = {"rfilename": path, "size": e["size"], "blobId": e["oid"]}
            if e["lfs"]:
                sib["lfs"] = {"size": e["size"], "sha256": e["sha256"],
                              "pointerSize": len(lfs_pointer(e["sha256"], e["size"]))}
            siblings.append(sib)
        card: dict[str, Any] = {}
        if "README.md" in files and files["README.md"]["size"] < 1_000_000:
            card, _ = parse_front_matter(self.hub.storage.read_blob(files["README.md"]["sha256"]).decode("utf-8",
                                                                                                          "replace"))
            card = card or {}
        ns = repo_id.split("/")[0]
        tags = card.get("tags") if isinstance(card.get("tags"), list) else []
        info = {"_id": repo_id, "id": repo_id, "modelId": repo_id, "author": ns, "sha": cid,
                "private": bool(meta.get("private")), "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                "createdAt": meta.get("created"), "lastModified": manifest["date"], "tags": tags,
                "library_name": card.get("library_name"), "pipeline_tag": card.get("pipeline_tag"),
                "siblings": siblings}
        if card:
            info["cardData"] = card
            if isinstance(card.get("model-index"), list):
                info["model-index"] = card["model-index"]
        self._json(info)

    @staticmethod
    def _file_entry(path: str, e: dict[str, Any], last: dict | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "file", "path": path, "size": e["size"], "oid": e["oid"]}
        if e["lfs"]:
            d["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": len(lfs_pointer(e["sha256"], e["size"]))}
        return d

    @staticmethod
    def _dir_entry(path: str, files: dict[str, Any]) -> dict[str, Any]:
        prefix = path + "/"
        h = hashlib.sha1("".join(f"{p}:{e['oid']};" for p, e in sorted(files.items())
                                 if p.startswith(prefix)).encode()).hexdigest()
        return {"type": "directory", "path": path, "size": 0, "oid": h}

    def _tree(self, repo_id: str, rev: str, path: str) -> None:
        self._readable(repo_id)
        _, _, files = self._files_at(repo_id, rev)
        recursive = str(self.query.get("recursive", "")).lower() in ("1", "true")
        if path:
            validate_path_in_repo(path)
        prefix = path + "/" if path else ""
        under = {p: e for p, e in files.items() if p.startswith(prefix)}
        if path and not under:
            raise HTTPError(404, f"Folder {path} not found at revision {rev}", "EntryNotFound")
        out, dirs = [], set()
        for p in sorted(under):
            rel = p[len(prefix):].split("/")
            if recursive:
                for i in range(1, len(rel)):
                    dirs.add(prefix + "/".join(rel[:i]))
                out.append(self._file_entry(p, under[p]))
            elif len(rel) == 1:
                out.append(self._file_entry(p, under[p]))
            else:
                dirs.add(prefix + rel[0])
        out = [self._dir_entry(d, files) for d in sorted(dirs)] + out
        self._json(out)

    def _paths_info(self, repo_id: str, rev: str) -> None:
        self._readable(repo_id)
        raw = self.body.read_all(MAX_JSON_BODY).decode("utf-8", "replace")
        ctype = self.headers.get("Content-Type") or ""
        if "json" in ctype:
            try:
                paths = json.loads(raw).get("paths", [])
            except (json.JSONDecodeError, AttributeError):
                raise _bad("bad JSON body") from None
        else:
            paths = parse_qs(raw).get("paths", [])
        _, _, files = self._files_at(repo_id, rev)
        dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        out = []
        for p in paths if isinstance(paths, list) else [paths]:
            p = str(p).strip("/")
            if p in files:
                out.append(self._file_entry(p, files[p]))
            elif p in dirs:
                out.append(self._dir_entry(p, files))
        self._json(out)

    def _refs(self, repo_id: str) -> None:
        self._readable(repo_id)
        refs = self.hub.storage.refs(repo_id)
        self._json({
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in sorted(refs["branches"].items())],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in sorted(refs["tags"].items())],
            "converts": [], "pullRequests": []})

    def _commits(self, repo_id: str, rev: str) -> None:
        self._readable(repo_id)
        cid = self.hub.storage.resolve(repo_id, rev)
        out = []
        while cid:
            m = self.hub.storage.manifest(repo_id, cid)
            out.append({"id": cid, "title": m["title"], "message": m["message"], "date": m["date"],
                        "authors": [{"user": m["author"]}]})
            cid = m["parents"][0] if m["parents"] else None
        self._json(out)

    # -- resolve -------------------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        self._readable(repo_id)
        validate_path_in_repo(path)
        cid, _, files = self._files_at(repo_id, rev)
        e = files.get(path)
        if e is None:
            raise HTTPError(404, f"{path} does not exist at revision {rev}", "EntryNotFound")
        blob = self.hub.storage.blob_path(e["sha256"])
        size = e["size"]
        etag = e["sha256"] if e["lfs"] else e["oid"]
        headers = {"X-Repo-Commit": cid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}"}
        if e["lfs"]:
            headers["X-Linked-Etag"] = f'"{e["sha256"]}"'
            headers["X-Linked-Size"] = str(size)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and size > 0:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:  # suffix range
                    start = max(0, size - int(m.group(2)))
                if start > end or start >= size:
                    self._send(416, b"", "application/octet-stream", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(blob, "rb") as f:
            f.seek(start)
            sent = 0
            while sent < length:
                self.hub.hook("resolve-chunk", repo_id=repo_id, path=path, offset=start + sent, size=size)
                data = f.read(min(CHUNK, length - sent))
                if not data:
                    break
                self.wfile.write(data)
                sent += len(data)

    # -- write API -----------------------------------------------------------------------------------------------
    def _branch_for_write(self, repo_id: str, rev: str) -> str:
        if self.query.get("create_pr") in ("1", "true", "True"):
            raise _bad("pull requests are not supported by this hub: commit to a branch")
        refs = self.hub.storage.refs(repo_id)
        if rev not in refs["branches"]:
            if rev in refs["tags"] or COMMIT_RE.match(rev):
                raise _bad(f"cannot commit to {rev!r}: commits go to a branch")
            raise HTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return rev

    def _preupload(self, repo_id: str, rev: str) -> None:
        self._writable(repo_id)
        body = self._json_body()
        branch = self._branch_for_write(repo_id, rev)
        _, _, files = self._files_at(repo_id, branch)
        out = []
        for f in body.get("files", []) if isinstance(body, dict) else []:
            path = validate_path_in_repo(f.get("path"))
            size = int(f.get("size") or 0)
            try:
                sample = base64.b64decode(f.get("sample") or "")
            except ValueError:
                sample = b""
            mode = self.hub.upload_mode(path, size, sample)
            oid = None
            if path in files:
                e = files[path]
                if mode == "lfs":
                    oid = e["sha256"]
                elif not e["lfs"]:
                    oid = e["oid"]
                else:
                    oid = git_blob_sha1(self.hub.storage.read_blob(e["sha256"]))
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json({"files": out, "commitOid": self.hub.storage.resolve(repo_id, branch)})

    def _commit(self, repo_id: str, rev: str) -> None:
        """Stream the NDJSON: inline files go to the blob store as they arrive (content-addressed, so harmless if
        the commit never completes); the repo changes only in :meth:`HubStorage.commit`, after the whole body."""
        user = self._writable(repo_id)
        branch = self._branch_for_write(repo_id, rev)
        storage = self.hub.storage
        header: dict[str, Any] | None = None
        ops: list[dict[str, Any]] = []
        seen: set[str] = set()
        lineno = 0
        while True:
            line = self.body.readline(MAX_INLINE_FILE * 4 // 3 + 4096)
            if not line:
                break
            lineno += 1
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                raise _bad(f"commit payload line {lineno} is not a {{key, value}} JSON object") from None
            if lineno == 1 and key != "header":
                raise _bad("the first line of a commit payload must be the header")
            self.hub.hook("commit-line", repo_id=repo_id, key=key, lineno=lineno)
            if key == "header":
                header = value
                continue
            path = validate_path_in_repo(value.get("path", "").rstrip("/") if key == "deletedFolder"
                                         else value.get("path"))
            if path in seen:
                raise _bad(f"{path!r} appears twice in the commit")
            seen.add(path)
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _bad(f"{path}: unsupported encoding {value.get('encoding')!r}")
                try:
                    content = base64.b64decode(value.get("content", ""), validate=True)
                except ValueError:
                    raise _bad(f"{path}: content is not valid base64") from None
                sha, size = storage.put_blob([content])
                ops.append({"kind": "add", "path": path,
                            "entry": {"sha256": sha, "size": size, "lfs": False, "oid": git_blob_sha1(content)}})
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256":
                    raise _bad(f"{path}: unsupported LFS algo {value.get('algo')!r}")
                oid = str(value.get("oid", ""))
                size = value.get("size")
                if not storage.has_blob(oid, None if size is None else int(size)):
                    raise _bad(f"{path}: LFS object sha256:{oid} was not uploaded (upload it through the LFS batch "
                               f"endpoint first)")
                size = storage.blob_path(oid).stat().st_size
                ops.append({"kind": "add", "path": path,
                            "entry": {"sha256": oid, "size": size, "lfs": True,
                                      "oid": git_blob_sha1(lfs_pointer(oid, size))}})
            elif key == "deletedFile":
                ops.append({"kind": "deleteFile", "path": path})
            elif key == "deletedFolder":
                ops.append({"kind": "deleteFolder", "path": path})
            else:
                raise _bad(f"commit payload line {lineno}: unknown key {key!r}")
        if header is None:
            raise _bad("commit payload has no header")
        title = str(header.get("summary") or "").strip() or "Upload files"
        cid = storage.commit(repo_id, branch, ops, title, str(header.get("description") or ""), user,
                             parent_commit=header.get("parentCommit"))
        self.hub.log(f"commit {cid[:10]} on {repo_id}@{branch} by {user}: {len(ops)} operation(s)")
        self._json({"success": True, "commitOid": cid, "commitUrl": f"{self.base_url}/{repo_id}/commit/{cid}",
                    "hookOutput": ""})

    def _branch(self, repo_id: str, branch: str, method: str) -> None:
        self._writable(repo_id)
        if not BRANCH_RE.match(branch) or ".." in branch or COMMIT_RE.match(branch):
            raise _bad(f"bad branch name {branch!r}")
        if method == "DELETE":
            self.body.drain()
            self.hub.storage.set_ref(repo_id, "branches", branch, None)
        else:
            body = self._json_body()
            start = body.get("startingPoint") if isinstance(body, dict) else None
            cid = self.hub.storage.resolve(repo_id, start or DEFAULT_BRANCH)
            self.hub.storage.set_ref(repo_id, "branches", branch, cid)
        self._json({})

    def _tag(self, repo_id: str, name: str, method: str) -> None:
        self._writable(repo_id)
        if method == "DELETE":
            self.body.drain()
            self.hub.storage.set_ref(repo_id, "tags", name, None)
        else:
            body = self._json_body()
            tag = body.get("tag") if isinstance(body, dict) else None
            if not isinstance(tag, str) or not BRANCH_RE.match(tag) or ".." in tag or COMMIT_RE.match(tag):
                raise _bad(f"bad tag name {tag!r}")
            cid = self.hub.storage.resolve(repo_id, name)
            self.hub.storage.set_ref(repo_id, "tags", tag, cid)
        self._json({})

    # -- LFS -----------------------------------------------------------------------------------------------------
    def _lfs_batch(self, repo_id: str) -> None:
        self._writable(repo_id)
        body = self._json_body()
        if not isinstance(body, dict) or body.get("operation") != "upload":
            raise _bad("only the 'upload' operation is supported; download files through /resolve/")
        if body.get("hash_algo", "sha256") != "sha256":
            raise _bad("only sha256 is supported")
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj.get("oid", "")), obj.get("size")
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                objects.append({"oid": oid, "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "bad oid or size"}})
                continue
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not self.hub.storage.has_blob(oid, size):
                ticket = self.hub.new_ticket(repo_id, oid, size)
                entry["actions"] = {
                    "upload": {"href": f"{self.base_url}/api/adapterhub/lfs-upload/{ticket}", "expires_in":
                               UPLOAD_TICKET_TTL},
                    "verify": {"href": f"{self.base_url}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   "application/vnd.git-lfs+json")

    def _lfs_upload(self, ticket: str) -> None:
        t = self.hub.take_ticket(ticket)
        if t is None:
            raise HTTPError(403, "unknown or expired upload URL")
        repo_id, oid, size = t

        def chunks() -> Iterator[bytes]:
            got = 0
            for c in self.body.chunks():
                self.hub.hook("lfs-chunk", repo_id=repo_id, oid=oid, offset=got, size=size)
                got += len(c)
                yield c

        self.hub.storage.put_blob(chunks(), expect_sha256=oid, expect_size=size)
        self._send(200, b"")

    def _lfs_verify(self, repo_id: str) -> None:
        self._writable(repo_id)
        body = self._json_body()
        oid, size = str(body.get("oid", "")), body.get("size")
        if not re.fullmatch(r"[0-9a-f]{64}", oid) or not self.hub.storage.has_blob(oid, size):
            raise HTTPError(404, f"LFS object sha256:{oid} not found", "EntryNotFound")
        self._json({})


def parse_front_matter(content: str) -> tuple[dict[str, Any] | None, str | None]:
    """The YAML metadata block of a README (``---`` ... ``---`` at the top): (dict or None, error or None)."""
    import yaml

    m = re.match(r"^\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", content, re.S)
    if not m:
        return None, None
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        return None, f"invalid YAML metadata: {e}"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return None, "YAML metadata must be a mapping"
    return data, None


# ----------------------------------------------------------------------------------------------------------------
# the server object
# ----------------------------------------------------------------------------------------------------------------
class HubServer:
    """A self-hosted hub on ``host:port`` (``port=0``: a free one) serving the repos under ``root``.

    ``tokens``: {token: user}; default: read (or create) ``<root>/tokens``. ``lfs=False``: answer every preupload
    with ``"regular"`` so even clients that would use Xet send files inline. ``log``: where request lines go
    (default: nowhere when ``quiet``, else stderr). ``hooks``: {name: callable(**info)}, called at
    ``"lfs-chunk"``, ``"commit-line"`` and ``"resolve-chunk"`` (tests use them to stall a transfer).
    """

    def __init__(self, root: str | os.PathLike, host: str = DEFAULT_HOST, port: int = 0,
                 tokens: dict[str, str] | None = None, lfs: bool = True, quiet: bool = True,
                 log: Callable[[str], None] | None = None, recover: bool = True):
        self.storage = HubStorage(root)
        self._lockfile = _lock_root(self.storage.root)
        if recover:
            self.storage.recover()
        self.tokens = dict(tokens) if tokens is not None else load_tokens(self.storage.root)
        self.lfs = lfs
        self._log = log if log is not None else (None if quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
        self.hooks: dict[str, Callable[..., None]] = {}
        self._tickets: dict[str, tuple[str, str, int, float]] = {}
        self._tickets_lock = threading.Lock()
        self.httpd = _Server((host, port), _Handler)
        self.httpd.hub = self
        self._thread: threading.Thread | None = None

    # -- info ----------------------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def hook(self, name: str, **info) -> None:
        fn = self.hooks.get(name)
        if fn is not None:
            fn(**info)

    # -- auth ----------------------------------------------------------------------------------------------------
    def check_token(self, token: str) -> str | None:
        found = None
        for known, user in self.tokens.items():  # constant-time compare against every token
            if hmac.compare_digest(known.encode(), token.encode()):
                found = user
        return found

    def new_ticket(self, repo_id: str, oid: str, size: int) -> str:
        ticket = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._tickets_lock:
            for k in [k for k, v in self._tickets.items() if v[3] < now]:
                del self._tickets[k]
            self._tickets[ticket] = (repo_id, oid, size, now + UPLOAD_TICKET_TTL)
        return ticket

    def take_ticket(self, ticket: str) -> tuple[str, str, int] | None:
        with self._tickets_lock:
            t = self._tickets.pop(ticket, None)
        if t is None or t[3] < time.monotonic():
            return None
        return t[0], t[1], t[2]

    def upload_mode(self, path: str, size: int, sample: bytes) -> str:
        if not self.lfs or size == 0:
            return "regular"
        if path.lower().endswith(LFS_EXTENSIONS) or size > LFS_THRESHOLD or b"\0" in sample:
            return "lfs"
        return "regular"

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        """Serve in a background (daemon) thread; returns self."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="adapterhub-hub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        self.httpd.shutdown() if self._thread is not None else None
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._lockfile is not None:
            with contextlib.suppress(OSError):
                self._lockfile.close()
            self._lockfile = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _lock_root(root: Path):
    """Refuse a second server on the same root (its in-process locks would not see ours)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    f = open(root / ".lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise HubError(f"another hub server is already serving {root}") from None
    return f


def serve(root: str | os.PathLike, host: str = DEFAULT_HOST, port: int = 8765, lfs: bool = True,
          tokens: dict[str, str] | None = None, quiet: bool = False,
          ready: Callable[[HubServer], None] | None = None) -> None:
    """Run a hub in the foreground until interrupted (``adapterhub hub serve``)."""
    server = HubServer(root, host=host, port=port, tokens=tokens, lfs=lfs, quiet=quiet)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = ["HubServer", "HubStorage", "serve", "load_tokens", "is_loopback", "parse_front_matter", "DEFAULT_HOST",
           "git_blob_sha1", "lfs_pointer"]
