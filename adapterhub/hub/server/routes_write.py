"""Write routes: create / delete repos, settings, preupload, commits, branches and tags. Writing needs a ``write``
token whose user owns the repo's namespace (:mod:`.tokens`)."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...names import validate_path_in_repo, validate_repo_id
from .bodies import ndjson_lines, read_json, want_int, want_list, want_object, want_private, want_str
from .context import (base_url, check_write, error_json, hub, may_read, param, require_principal,
                      writable_repo)
from .errors import BadRequest, Conflict, TooLarge, repo_not_found
from .limits import LFS_THRESHOLD
from .payload import CommitPayload, max_line_bytes
from .storage import DEFAULT_BRANCH, LFS_EXTENSIONS, FileEntry, git_blob_sha1, validate_ref_name
from .tokens import Principal


def _repo_id_from_body(body: dict[str, Any], who: Principal) -> str:
    if body.get("type") not in (None, "model"):
        raise BadRequest("this hub only hosts model repos")
    name = want_str(body, "name", "request body", required=True)
    org = want_str(body, "organization", "request body")
    return validate_repo_id(f"{org or who.user}/{name}")


async def _json_object(request: Request) -> dict[str, Any]:
    return want_object(await read_json(request, hub(request).limits.max_json_bytes), "request body")


async def create_repo(request: Request) -> Response:
    who = require_principal(request)
    body = await _json_object(request)
    repo_id = _repo_id_from_body(body, who)
    check_write(who, repo_id.split("/")[0])
    private = bool(want_private(body, "request body"))
    storage = hub(request).storage
    try:
        repo = await run_in_threadpool(storage.create_repo, repo_id, private, who.user)
    except Conflict as e:
        existing = storage.repo(repo_id)
        return error_json(409, e.message, extra={"url": f"{base_url(request)}/{existing.id if existing else repo_id}"})
    hub(request).log(f"created repo {repo.id} (private={repo.private}) for {who.user}")
    return JSONResponse({"url": f"{base_url(request)}/{repo.id}", "name": repo.id, "id": repo.id})


async def delete_repo(request: Request) -> Response:
    who = require_principal(request)
    repo_id = _repo_id_from_body(await _json_object(request), who)
    storage = hub(request).storage
    repo = storage.repo(repo_id)
    if repo is None or not may_read(who, repo):
        raise repo_not_found(repo_id)
    check_write(who, repo.namespace)
    await run_in_threadpool(storage.delete_repo, repo)
    hub(request).log(f"deleted repo {repo.id} for {who.user}")
    return Response(b"")


async def settings(request: Request) -> Response:
    repo, _ = writable_repo(request)
    private = want_private(await _json_object(request), "request body")
    if private is not None:
        await run_in_threadpool(hub(request).storage.set_private, repo, private)
    return JSONResponse({})


def _no_pull_requests(request: Request) -> None:
    if request.query_params.get("create_pr", "").lower() in ("1", "true"):
        raise BadRequest("pull requests are not supported by this hub: commit to a branch")


def upload_mode(lfs: bool, path: str, size: int, sample: bytes) -> str:
    if not lfs or size == 0:
        return "regular"
    if path.lower().endswith(LFS_EXTENSIONS) or size > LFS_THRESHOLD or b"\0" in sample:
        return "lfs"
    return "regular"


def _remote_oid(mode: str, size: int, e: FileEntry | None, request: Request) -> str | None:
    """What the client compares with its file to skip an unchanged upload."""
    if e is None:
        return None
    if mode == "lfs":
        return e.sha256
    if not e.lfs:
        return e.oid
    if e.size != size or size > LFS_THRESHOLD:
        return None  # cannot be the same file; never read a big blob for this
    return git_blob_sha1(hub(request).storage.read_blob(e.sha256))


async def preupload(request: Request) -> Response:
    repo, _ = writable_repo(request)
    body = await _json_object(request)
    _no_pull_requests(request)
    ctx = hub(request)
    branch = ctx.storage.branch_for_write(repo, param(request, "rev"))
    cid = ctx.storage.resolve(repo, branch)
    files = ctx.storage.files(repo, cid)
    inline_limit = ctx.limits.inline_limit(ctx.lfs)
    out = []
    for i, f in enumerate(want_list(body, "files", "request body")):
        where = f"request body: files[{i}]"
        f = want_object(f, where)
        path = validate_path_in_repo(want_str(f, "path", where, required=True))
        size = want_int(f, "size", where, default=0)
        try:
            sample = base64.b64decode(want_str(f, "sample", where, default=""))
        except (binascii.Error, ValueError):
            sample = b""
        mode = upload_mode(ctx.lfs, path, size, sample)
        if mode == "regular" and size > inline_limit:
            raise TooLarge(f"{path}: {size} bytes is over this hub's inline limit of {inline_limit} bytes "
                           f"(and LFS is off on this hub)")
        out.append({"path": path, "uploadMode": mode, "shouldIgnore": False,
                    "oid": _remote_oid(mode, size, files.get(path), request)})
    return JSONResponse({"files": out, "commitOid": cid})


async def commit(request: Request) -> Response:
    repo, who = writable_repo(request)
    _no_pull_requests(request)
    ctx = hub(request)
    branch = ctx.storage.branch_for_write(repo, param(request, "rev"))
    inline_limit = ctx.limits.inline_limit(ctx.lfs)
    payload = CommitPayload(ctx.storage, repo, inline_limit, ctx.storage.room(repo), ctx.limits.max_commit_lines)
    async for line in ndjson_lines(request, max_line_bytes(inline_limit)):
        await run_in_threadpool(payload.feed, line)  # JSON, base64 and the blob's fsync: off the event loop
    header, ops = payload.result()
    cid = await run_in_threadpool(ctx.storage.commit, repo, branch, ops, header["summary"], header["description"],
                                  who.user, header["parentCommit"])
    ctx.log(f"commit {cid[:10]} on {repo.id}@{branch} by {who.user}: {len(ops)} operation(s)")
    return JSONResponse({"success": True, "commitOid": cid, "commitUrl": f"{base_url(request)}/{repo.id}/commit/{cid}",
                         "hookOutput": ""})


async def branch(request: Request) -> Response:
    repo, _ = writable_repo(request)
    storage = hub(request).storage
    name = param(request, "branch")
    if request.method == "DELETE":
        await run_in_threadpool(storage.set_ref, repo, "branch", name, None)
        return JSONResponse({})
    body = await _json_object(request)
    validate_ref_name(name, "branch")
    start = want_str(body, "startingPoint", "request body") or DEFAULT_BRANCH
    await run_in_threadpool(storage.set_ref, repo, "branch", name, storage.resolve(repo, start))
    return JSONResponse({})


async def tag(request: Request) -> Response:
    repo, _ = writable_repo(request)
    storage = hub(request).storage
    rev = param(request, "rev")
    if request.method == "DELETE":
        await run_in_threadpool(storage.set_ref, repo, "tag", rev, None)
        return JSONResponse({})
    body = await _json_object(request)
    name = validate_ref_name(want_str(body, "tag", "request body", required=True), "tag")
    await run_in_threadpool(storage.set_ref, repo, "tag", name, storage.resolve(repo, rev))
    return JSONResponse({})


_M = "/api/models/{ns}/{name}"
ROUTES = [
    Route("/api/repos/create", create_repo, methods=["POST"]),
    Route("/api/repos/delete", delete_repo, methods=["DELETE"]),
    Route(_M + "/settings", settings, methods=["PUT"]),
    Route(_M + "/preupload/{rev}", preupload, methods=["POST"]),
    Route(_M + "/commit/{rev}", commit, methods=["POST"]),
    Route(_M + "/branch/{branch}", branch, methods=["POST", "DELETE"]),
    Route(_M + "/tag/{rev}", tag, methods=["POST", "DELETE"]),
]

__all__ = ["ROUTES", "upload_mode"]
