"""What the route modules share: the per-server context, who the caller is and what they may read or write,
and the JSON error answer (``{"error": ...}`` with ``X-Error-Code`` / ``X-Error-Message``)."""
from __future__ import annotations

import collections
import dataclasses
import re
import threading
from typing import Any, Callable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse

from ...names import validate_repo_id
from .errors import Forbidden, Unauthorized, repo_not_found
from .limits import Limits
from .storage import HubStorage, Repo
from .tokens import Authenticator, Principal
from .yaml_safe import parse_front_matter

HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class CardCache:
    """Parsed README metadata by README blob sha256 (blobs never change): parsed once, small, bounded."""

    def __init__(self, max_bytes: int, entries: int = 256):
        self.max_bytes = max_bytes
        self.entries = entries
        self._cache: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, storage: HubStorage, sha256: str) -> dict[str, Any]:
        with self._lock:
            if sha256 in self._cache:
                self._cache.move_to_end(sha256)
                return self._cache[sha256]
        head = storage.read_blob(sha256, limit=self.max_bytes + 4096).decode("utf-8", "replace")
        card, _ = parse_front_matter(head, self.max_bytes)
        card = card or {}
        with self._lock:
            self._cache[sha256] = card
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
        return card


@dataclasses.dataclass
class HubContext:
    """What every request handler of one server needs."""

    storage: HubStorage
    auth: Authenticator
    limits: Limits
    lfs: bool
    log: Callable[[str], None]
    cards: CardCache = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.cards = CardCache(self.limits.max_card_bytes)


def hub(request: Request) -> HubContext:
    return request.app.state.hub


def base_url(request: Request) -> str:
    host = request.headers.get("host", "")
    if not HOST_RE.match(host):
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"http://{host}"


def param(request: Request, name: str) -> str:
    return unquote(request.path_params[name])


def repo_id_param(request: Request) -> str:
    return validate_repo_id(f"{param(request, 'ns')}/{param(request, 'name')}")


# ------------------------------------------------------------------------------------------------------------- auth
def principal(request: Request) -> Principal | None:
    """The caller of a valid bearer token; None without a token; 401 for a token this hub does not know."""
    auth = request.headers.get("authorization")
    if not auth:
        return None
    scheme, _, token = auth.partition(" ")
    found = hub(request).auth.principal(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise Unauthorized("Invalid credentials in Authorization header")
    return found


def require_principal(request: Request) -> Principal:
    who = principal(request)
    if who is None:
        raise Unauthorized("Invalid credentials in Authorization header: writing needs a token "
                           "(Authorization: Bearer <token>)")
    return who


def may_read(who: Principal | None, repo: Repo) -> bool:
    return not repo.private or (who is not None and who.owns(repo.namespace))


def readable_repo(request: Request, repo_id: str | None = None) -> Repo:
    """The repo, if the caller may read it; otherwise the same 404 as for a missing repo."""
    repo_id = repo_id or repo_id_param(request)
    who = principal(request)
    repo = hub(request).storage.repo(repo_id)
    if repo is None or not may_read(who, repo):
        raise repo_not_found(repo_id)
    return repo


def check_write(who: Principal, namespace: str) -> None:
    if who.scope != "write":
        raise Forbidden("this token has the 'read' scope: writing needs a 'write' token")
    if not who.owns(namespace):
        raise Forbidden(f"{who.user} may not write to the namespace {namespace!r}")


def writable_repo(request: Request, repo_id: str | None = None) -> tuple[Repo, Principal]:
    repo_id = repo_id or repo_id_param(request)
    who = require_principal(request)
    repo = hub(request).storage.repo(repo_id)
    if repo is None or not may_read(who, repo):
        raise repo_not_found(repo_id)
    check_write(who, repo.namespace)
    return repo, who


# ----------------------------------------------------------------------------------------------------------- errors
def error_json(status: int, message: str, code: str | None = None, extra: dict | None = None) -> JSONResponse:
    headers = {"X-Error-Message": "".join(c if " " <= c <= "~" else " " for c in message)[:500]}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers=headers)


__all__ = ["HubContext", "CardCache", "hub", "base_url", "param", "repo_id_param", "principal", "require_principal",
           "may_read", "readable_repo", "writable_repo", "check_write", "error_json"]
