"""Read routes: account, listing, model info, tree, paths-info, refs, commits, file downloads (``/resolve/``, with
``Range`` through Starlette's ``FileResponse``). Private repos answer 404 to whoever may not read them."""
from __future__ import annotations

import hashlib
import os
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ...names import validate_path_in_repo
from .bodies import parse_json, read_body, read_json, want_object
from .context import hub, may_read, param, principal, readable_repo
from .errors import BadRequest, EntryNotFound, NotFound, NotSupported, Unauthorized
from .storage import DEFAULT_BRANCH, FileEntry, Repo, lfs_pointer
from .yaml_safe import parse_front_matter

MODEL_REPOS_ONLY = "this hub only hosts model repos"


class BlobResponse(FileResponse):
    """A blob download (``Range`` and ``HEAD`` as Starlette does them), read in 256 KiB pieces: a slow reader holds
    at most one piece (256 connections: 64 MiB); 1 MiB pieces cost ~20% less CPU per 1 MB download."""

    chunk_size = 256 * 1024


async def root(request: Request) -> Response:
    return PlainTextResponse("adapterhub hub\n")


async def whoami(request: Request) -> Response:
    who = principal(request)
    if who is None:
        raise Unauthorized("Invalid credentials in Authorization header: no token given")
    return JSONResponse({"type": "user", "id": who.user, "name": who.user, "fullname": who.user, "isPro": False,
                         "orgs": [{"type": "org", "name": o, "id": o} for o in who.orgs],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "adapterhub", "role": who.scope}}})


async def validate_yaml(request: Request) -> Response:
    body = want_object(await read_json(request, hub(request).limits.max_json_bytes), "request body")
    content = body.get("content")
    if not isinstance(content, str):
        raise BadRequest("expected {'content': str}")
    _, err = await run_in_threadpool(parse_front_matter, content, hub(request).limits.max_card_bytes)
    if err:
        return JSONResponse({"errors": [{"message": err}], "warnings": []}, status_code=400)
    return JSONResponse({"errors": [], "warnings": []})


async def list_models(request: Request) -> Response:
    who = principal(request)
    storage = hub(request).storage
    search = (request.query_params.get("search") or "").lower()
    author = (request.query_params.get("author") or "").lower()
    out = []
    for repo in storage.list_repos():
        if not may_read(who, repo) or search not in repo.key or (author and repo.namespace.lower() != author):
            continue
        head = storage.refs(repo)["branches"].get(DEFAULT_BRANCH)
        out.append({"id": repo.id, "modelId": repo.id, "private": repo.private, "sha": head,
                    "createdAt": repo.created})
    return JSONResponse(out)


def _card_fields(card: dict[str, Any]) -> dict[str, Any]:
    tags = card.get("tags")
    text = {k: card[k] if isinstance(card.get(k), str) else None for k in ("library_name", "pipeline_tag")}
    out = {"tags": [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [], **text}
    if card:
        out["cardData"] = card
        if isinstance(card.get("model-index"), list):
            out["model-index"] = card["model-index"]
    return out


async def model_info(request: Request) -> Response:
    repo = readable_repo(request)
    storage = hub(request).storage
    rev = param(request, "rev") if "rev" in request.path_params else DEFAULT_BRANCH
    cid = storage.resolve(repo, rev)
    commit, files = storage.commit_info(repo, cid), storage.files(repo, cid)
    siblings = []
    for path in sorted(files):
        e = files[path]
        sib: dict[str, Any] = {"rfilename": path, "size": e.size, "blobId": e.oid}
        if e.lfs:
            sib["lfs"] = {"size": e.size, "sha256": e.sha256, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
        siblings.append(sib)
    card: dict[str, Any] = {}
    if "README.md" in files:
        card = await run_in_threadpool(hub(request).cards.get, storage, files["README.md"].sha256)
    return JSONResponse({"_id": repo.id, "id": repo.id, "modelId": repo.id, "author": repo.namespace, "sha": cid,
                         "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                         "createdAt": repo.created, "lastModified": commit.date, **_card_fields(card),
                         "siblings": siblings})


def file_entry(path: str, e: FileEntry) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "file", "path": path, "size": e.size, "oid": e.oid}
    if e.lfs:
        d["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
    return d


def dir_entry(path: str, files: dict[str, FileEntry]) -> dict[str, Any]:
    prefix = path + "/"
    h = hashlib.sha1("".join(f"{p}:{e.oid};" for p, e in sorted(files.items()) if p.startswith(prefix)).encode())
    return {"type": "directory", "path": path, "size": 0, "oid": h.hexdigest()}


def _files_at(request: Request) -> tuple[Repo, str, dict[str, FileEntry]]:
    repo = readable_repo(request)
    storage = hub(request).storage
    cid = storage.resolve(repo, param(request, "rev"))
    return repo, cid, storage.files(repo, cid)


async def tree(request: Request) -> Response:
    _, _, files = _files_at(request)
    path = param(request, "path").strip("/") if "path" in request.path_params else ""
    if path:
        validate_path_in_repo(path)
    recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
    prefix = path + "/" if path else ""
    under = {p: e for p, e in files.items() if p.startswith(prefix)}
    if path and not under:
        raise EntryNotFound(f"Folder {path} not found at revision {param(request, 'rev')}")
    out, dirs = [], set()
    for p in sorted(under):
        rel = p[len(prefix):].split("/")
        if recursive:
            dirs.update(prefix + "/".join(rel[:i]) for i in range(1, len(rel)))
        if recursive or len(rel) == 1:
            out.append(file_entry(p, under[p]))
        else:
            dirs.add(prefix + rel[0])
    return JSONResponse([dir_entry(d, files) for d in sorted(dirs)] + out)


async def paths_info(request: Request) -> Response:
    raw = await read_body(request, hub(request).limits.max_json_bytes)
    _, _, files = _files_at(request)
    if "json" in request.headers.get("content-type", ""):
        paths = want_object(parse_json(raw), "request body").get("paths", [])
    else:
        paths = parse_qs(raw.decode("utf-8", "replace")).get("paths", [])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadRequest("'paths' must be a list of strings")
    dirs = {p[:i] for p in files for i in range(len(p)) if p[i] == "/"}
    out = []
    for p in (p.strip("/") for p in paths):
        if p in files:
            out.append(file_entry(p, files[p]))
        elif p in dirs:
            out.append(dir_entry(p, files))
    return JSONResponse(out)


async def refs(request: Request) -> Response:
    table = hub(request).storage.refs(readable_repo(request))

    def listing(kind: str, prefix: str) -> list[dict[str, str]]:
        return [{"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": c} for n, c in sorted(table[kind].items())]

    return JSONResponse({"branches": listing("branches", "heads"), "tags": listing("tags", "tags"), "converts": [],
                         "pullRequests": []})


async def commits(request: Request) -> Response:
    repo = readable_repo(request)
    storage = hub(request).storage
    history = storage.history(repo, storage.resolve(repo, param(request, "rev")))
    return JSONResponse([{"id": c.id, "title": c.title, "message": c.message, "date": c.date,
                          "authors": [{"user": c.author}]} for c in history])


async def resolve(request: Request) -> Response:
    path = validate_path_in_repo(param(request, "path"))
    _, cid, files = _files_at(request)
    e = files.get(path)
    if e is None:
        raise EntryNotFound(f"{path} does not exist at revision {param(request, 'rev')}")
    headers = {"X-Repo-Commit": cid, "ETag": f'"{e.sha256 if e.lfs else e.oid}"',
               "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}"}
    if e.lfs:
        headers.update({"X-Linked-Etag": f'"{e.sha256}"', "X-Linked-Size": str(e.size)})
    blob = hub(request).storage.blob_path(e.sha256)
    return BlobResponse(blob, headers=headers, media_type="application/octet-stream", stat_result=os.stat(blob))


async def not_model_repo(request: Request) -> Response:
    raise NotFound(MODEL_REPOS_ONLY)


async def xet_token(request: Request) -> Response:
    raise NotSupported("this hub has no Xet storage: set HF_HUB_DISABLE_XET=1 on the client, or start the server "
                       "with --no-lfs so every file is committed inline")


_M = "/api/models/{ns}/{name}"
ROUTES = [
    Route("/", root, methods=["GET"]),
    Route("/api/whoami-v2", whoami, methods=["GET"]),
    Route("/api/validate-yaml", validate_yaml, methods=["POST"]),
    Route("/api/models", list_models, methods=["GET"]),
    Route(_M, model_info, methods=["GET"]),
    Route(_M + "/revision/{rev}", model_info, methods=["GET"]),
    Route(_M + "/tree/{rev}", tree, methods=["GET"]),
    Route(_M + "/tree/{rev}/{path:path}", tree, methods=["GET"]),
    Route(_M + "/paths-info/{rev}", paths_info, methods=["POST"]),
    Route(_M + "/refs", refs, methods=["GET"]),
    Route(_M + "/commits/{rev}", commits, methods=["GET"]),
    Route(_M + "/xet-write-token/{rev}", xet_token, methods=["GET"]),
    Route(_M + "/xet-read-token/{rev}", xet_token, methods=["GET"]),
    *(Route(f"/api/{kind}/{{rest:path}}", not_model_repo) for kind in ("datasets", "spaces", "kernels", "buckets")),
    *(Route(f"/{kind}/{{rest:path}}", not_model_repo) for kind in ("datasets", "spaces")),
    Route("/{ns}/{name}/resolve/{rev}/{path:path}", resolve, methods=["GET", "HEAD"]),
]

__all__ = ["ROUTES", "file_entry", "dir_entry"]
