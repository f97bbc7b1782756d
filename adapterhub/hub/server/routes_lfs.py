"""Git LFS (basic transfer) for uploads: ``POST /{repo}.git/info/lfs/objects/batch`` answers each announced object
with a one-use upload URL (or an error: over the per-file limit, over the repo's quota, bad oid or size);
``PUT /api/adapterhub/lfs-upload/{ticket}`` streams the object to disk, verifying size and sha256 as it goes;
``POST .../verify`` confirms it. Downloads go through ``/resolve/``."""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...names import validate_repo_id
from .bodies import announced_length, read_json, want_int, want_list, want_object, want_str
from .blobs import is_sha256
from .context import base_url, hub, param, writable_repo
from .errors import BadRequest, EntryNotFound, Forbidden
from .limits import format_size
from .storage import UPLOAD_TICKET_TTL

LFS_JSON = "application/vnd.git-lfs+json"


def _lfs_repo_id(request: Request) -> str:
    return validate_repo_id(f"{param(request, 'ns')}/{param(request, 'name')}")


def _object_error(oid: Any, size: Any, code: int, message: str) -> dict[str, Any]:
    return {"oid": oid if isinstance(oid, str) else "", "size": size if isinstance(size, int) else 0,
            "error": {"code": code, "message": message}}


async def batch(request: Request) -> Response:
    repo, _ = writable_repo(request, _lfs_repo_id(request))
    ctx = hub(request)
    body = want_object(await read_json(request, ctx.limits.max_json_bytes), "request body")
    if want_str(body, "operation", "request body") != "upload":
        raise BadRequest("only the 'upload' operation is supported; download files through /resolve/")
    if want_str(body, "hash_algo", "request body", default="sha256") != "sha256":
        raise BadRequest("only sha256 is supported")
    room = ctx.storage.room(repo)
    max_object = ctx.limits.max_object_bytes
    objects = []
    for obj in want_list(body, "objects", "request body"):
        oid, size = (obj.get("oid"), obj.get("size")) if isinstance(obj, dict) else (None, None)
        if not is_sha256(oid) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            objects.append(_object_error(oid, size, 422, "bad oid or size"))
        elif size > max_object:
            objects.append(_object_error(oid, size, 413, f"{format_size(size)} is over this hub's per-file limit "
                                                         f"of {format_size(max_object)}"))
        elif ctx.storage.object_size(repo, oid) == size:
            objects.append({"oid": oid, "size": size, "authenticated": True})
        elif size > room:
            objects.append(_object_error(oid, size, 413, f"{repo.id} has {format_size(room)} left of its quota: "
                                                         f"{format_size(size)} does not fit"))
        else:
            room -= size
            ticket = await run_in_threadpool(ctx.storage.new_ticket, repo, oid, size)
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{base_url(request)}/api/adapterhub/lfs-upload/{ticket}",
                           "expires_in": UPLOAD_TICKET_TTL},
                "verify": {"href": f"{base_url(request)}/{repo.id}.git/info/lfs/objects/verify", "header": {}}}})
    return JSONResponse({"transfer": "basic", "objects": objects}, media_type=LFS_JSON)


async def upload(request: Request) -> Response:
    storage = hub(request).storage
    ticket = await run_in_threadpool(storage.take_ticket, request.path_params["ticket"])
    if ticket is None:
        raise Forbidden("unknown or expired upload URL")
    repo_key, oid, size = ticket
    announced = announced_length(request)
    if announced is not None and announced != size:
        raise BadRequest(f"Content-Length {announced} is not the announced size {size}")
    with storage.blobs.writer(expect_sha256=oid, expect_size=size) as writer:
        async for chunk in request.stream():
            writer.write(chunk)
        await run_in_threadpool(writer.finish)
    await run_in_threadpool(storage.record_upload, repo_key, oid)
    return Response(b"")


async def verify(request: Request) -> Response:
    repo, _ = writable_repo(request, _lfs_repo_id(request))
    body = want_object(await read_json(request, hub(request).limits.max_json_bytes), "request body")
    oid, size = want_str(body, "oid", "request body", default=""), want_int(body, "size", "request body")
    found = hub(request).storage.object_size(repo, oid)
    if found is None or (size is not None and size != found):
        raise EntryNotFound(f"LFS object sha256:{oid} not found")
    return JSONResponse({})


ROUTES = [
    Route("/{ns}/{name}.git/info/lfs/objects/batch", batch, methods=["POST"]),
    Route("/{ns}/{name}.git/info/lfs/objects/verify", verify, methods=["POST"]),
    Route("/api/adapterhub/lfs-upload/{ticket}", upload, methods=["PUT"]),
]

__all__ = ["ROUTES"]
