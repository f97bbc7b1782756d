"""Who may do what: tokens (hashed at rest, scope ``read`` or ``write``), namespaces and the ``orgs`` file.

- A token belongs to a user. Only its sha256 is stored (in ``hub.db``); the token is shown once, by
  ``adapterhub hub token add``. ``read`` tokens read; ``write`` tokens read and write.
- A user owns the namespace of its name. ``<root>/orgs`` gives users shared namespaces, one per line:
  ``<org> <user> [<user> ...]`` (``#`` starts a comment). A token may write a repo when it has the ``write`` scope
  and its user owns the repo's namespace; it may read a private repo when its user owns the namespace.
  Names compare case-insensitively, as repo ids do.
- Public repos are readable by anyone. A private repo is answered 404 to whoever may not read it, exactly like a
  missing repo.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import secrets
import stat
import threading
from pathlib import Path

from ...errors import HubError, RepoIdError
from ...names import validate_repo_id
from .db import Database
from .errors import Misconfigured

SCOPES = ("read", "write")
TOKEN_PREFIX = "ahub_"
ORGS_FILE = "orgs"


def token_hash(token: str) -> str:
    """Tokens are 256 random bits: a plain sha256 is a safe way to keep them (no guessing a preimage)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def validate_user(user: object) -> str:
    """A user (or org) name follows the namespace rules of repo ids (adapterhub.names)."""
    if not isinstance(user, str):
        raise HubError(f"user name must be a string, got {type(user).__name__}")
    try:
        validate_repo_id(f"{user}/x")
    except RepoIdError as e:
        raise HubError(f"bad user name {user!r}: {str(e).split(': ', 1)[-1]}") from None
    return user


def validate_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise HubError(f"bad token scope {scope!r}: use one of {', '.join(SCOPES)}")
    return scope  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Principal:
    """The caller behind a valid token."""

    user: str
    scope: str
    orgs: tuple[str, ...] = ()

    def owns(self, namespace: str) -> bool:
        ns = namespace.lower()
        return ns == self.user.lower() or any(ns == o.lower() for o in self.orgs)

    def can_write(self, namespace: str) -> bool:
        return self.scope == "write" and self.owns(namespace)


# ---------------------------------------------------------------------------------------------------------- tokens
class TokenStore:
    """Tokens in ``hub.db``: add (returns the token, once), list, revoke, look up by hash."""

    def __init__(self, db: Database):
        self.db = db

    def add(self, user: str, scope: str = "write") -> tuple[str, str]:
        """A new token for ``user``: returns (token id, token). Only the hash is stored."""
        validate_user(user)
        validate_scope(scope)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(4)
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self.db.write() as cx:
            cx.execute("INSERT INTO tokens(id, user, scope, hash, created) VALUES (?, ?, ?, ?, ?)",
                       (token_id, user, scope, token_hash(token), created))
        return token_id, token

    def list(self) -> list[dict[str, str]]:
        rows = self.db.query("SELECT id, user, scope, created FROM tokens ORDER BY user, created, id")
        return [dict(r) for r in rows]

    def revoke(self, token_id: str) -> bool:
        with self.db.write() as cx:
            return cx.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0

    def lookup(self, token: str) -> tuple[str, str] | None:
        row = self.db.one("SELECT user, scope FROM tokens WHERE hash = ?", (token_hash(token),))
        return (row["user"], row["scope"]) if row else None

    def count(self) -> int:
        return self.db.one("SELECT COUNT(*) AS n FROM tokens")["n"]


class StaticTokens:
    """Tokens given in code (``HubServer(tokens={token: user or (user, scope)})``), held as hashes in memory."""

    def __init__(self, tokens: dict[str, object]):
        self._by_hash: dict[str, tuple[str, str]] = {}
        for token, who in tokens.items():
            user, scope = (who, "write") if isinstance(who, str) else who  # type: ignore[misc]
            self._by_hash[token_hash(token)] = (validate_user(user), validate_scope(scope))

    def lookup(self, token: str) -> tuple[str, str] | None:
        return self._by_hash.get(token_hash(token))


# ------------------------------------------------------------------------------------------------------------ orgs
def parse_orgs(text: str, path: Path) -> dict[str, tuple[str, ...]]:
    """``<org> <user> ...`` lines -> {user (lower-cased): (org, ...)}."""
    orgs_of: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise HubError(f"{path}:{lineno}: expected '<org> <user> [<user> ...]'")
        org = validate_user(words[0])
        for user in words[1:]:
            orgs_of.setdefault(validate_user(user).lower(), []).append(org)
    return {u: tuple(o) for u, o in orgs_of.items()}


class Orgs:
    """The ``orgs`` file, re-read when it changes. It decides access: group or others may not write it."""

    def __init__(self, root: Path):
        self.path = root / ORGS_FILE
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._orgs_of: dict[str, tuple[str, ...]] = {}
        self.load()

    def load(self) -> dict[str, tuple[str, ...]]:
        """The current mapping; raises :class:`HubError` for a bad or unsafe file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._orgs_of = None, {}
            return self._orgs_of
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    raise HubError(f"{self.path} may be written by group or others: run chmod 644 {self.path}")
                self._orgs_of = parse_orgs(self.path.read_text(encoding="utf-8"), self.path)
                self._stamp = stamp
            return self._orgs_of

    def of(self, user: str) -> tuple[str, ...]:
        try:
            return self.load().get(user.lower(), ())
        except (HubError, OSError, UnicodeDecodeError):  # fail closed; the message stays on the server
            raise Misconfigured("this hub's orgs file became invalid or unsafe: ask its administrator") from None


class Authenticator:
    """Bearer token -> :class:`Principal`, from the static tokens when given, else from ``hub.db``."""

    def __init__(self, store: TokenStore, orgs: Orgs, static: StaticTokens | None = None):
        self.store = store
        self.orgs = orgs
        self.static = static

    def principal(self, token: str) -> Principal | None:
        if not token or len(token) > 512:
            return None
        found = self.static.lookup(token) if self.static is not None else self.store.lookup(token)
        if found is None:
            return None
        user, scope = found
        return Principal(user, scope, self.orgs.of(user))


def env_token_hint(root: Path) -> str:
    return f"adapterhub hub token add USER --root {os.fspath(root)}"


__all__ = ["SCOPES", "TOKEN_PREFIX", "ORGS_FILE", "token_hash", "validate_user", "validate_scope", "Principal",
           "TokenStore", "StaticTokens", "Orgs", "parse_orgs", "Authenticator", "env_token_hint"]
