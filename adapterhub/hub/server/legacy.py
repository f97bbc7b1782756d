"""Roots written by the first hub server (before ``hub.db``): JSON repos and a plain-text tokens file.

At start, :func:`import_legacy_root` moves them into ``hub.db`` (same commit ids, same blobs): each repo in one
transaction, then ``repos/`` is renamed ``legacy-repos-imported/`` (delete it when satisfied). Tokens of the
plain-text ``tokens`` file ('<user> <token>' lines) are stored as hashes with the ``write`` scope and the file is
removed. A plain-text tokens file that group or others may read is refused before anything is touched (those tokens
must be treated as leaked).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import HubError
from .db import check_private
from .tokens import token_hash, validate_user

if TYPE_CHECKING:
    from .storage import HubStorage

LEGACY_TOKENS = "tokens"
LEGACY_REPOS = "repos"
IMPORTED_REPOS = "legacy-repos-imported"


def check_legacy_root(root: Path) -> None:
    check_private(root / LEGACY_TOKENS, "plain-text tokens of an older adapterhub hub")


def import_legacy_root(storage: "HubStorage") -> dict[str, int]:
    done = {"repos": 0, "tokens": 0}
    repos = storage.root / LEGACY_REPOS
    if repos.is_dir():
        for repo_dir in sorted(p for ns in repos.iterdir() if ns.is_dir() for p in ns.iterdir() if p.is_dir()):
            if (repo_dir / "refs.json").is_file():
                done["repos"] += _import_repo(storage, repo_dir)
        os.rename(repos, storage.root / IMPORTED_REPOS)
    tokens = storage.root / LEGACY_TOKENS
    if tokens.is_file():
        done["tokens"] = _import_tokens(storage, tokens)
        tokens.unlink()
    return done


def _import_repo(storage: "HubStorage", d: Path) -> int:
    meta = json.loads((d / "repo.json").read_text())
    refs = json.loads((d / "refs.json").read_text())
    manifests = [json.loads(p.read_text()) for p in (d / "commits").glob("*.json")]
    key = meta["id"].lower()
    with storage.db.write() as cx:
        if cx.execute("SELECT 1 FROM repos WHERE key = ?", (key,)).fetchone():
            return 0
        cx.execute("INSERT INTO repos(key, id, private, created) VALUES (?, ?, ?, ?)",
                   (key, meta["id"], int(bool(meta.get("private"))), meta.get("created") or ""))
        for m in manifests:
            parents = m.get("parents") or [None]
            cx.execute("INSERT INTO commits(repo, id, parent, title, message, author, date) VALUES (?,?,?,?,?,?,?)",
                       (key, m["id"], parents[0], m["title"], m["message"], m["author"], m["date"]))
            files = m["files"].items()
            cx.executemany("INSERT INTO commit_files(repo, commit_id, path, sha256, size, lfs, oid) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(key, m["id"], p, e["sha256"], e["size"], int(e["lfs"]), e["oid"]) for p, e in files])
            cx.executemany("INSERT OR IGNORE INTO repo_blobs(repo, sha256, size) VALUES (?, ?, ?)",
                           [(key, e["sha256"], e["size"]) for _, e in files])
        for kind, table in (("branch", refs["branches"]), ("tag", refs["tags"])):
            cx.executemany("INSERT INTO refs(repo, name, kind, commit_id) VALUES (?, ?, ?, ?)",
                           [(key, name, kind, cid) for name, cid in table.items()])
    return 1


def _import_tokens(storage: "HubStorage", path: Path) -> int:
    rows = []
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for line in path.read_text().splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) != 2:
            raise HubError(f"{path}: each line must be '<user> <token>'")
        rows.append((secrets.token_hex(4), validate_user(parts[0]), "write", token_hash(parts[1]), created))
    with storage.db.write() as cx:
        cx.executemany("INSERT OR IGNORE INTO tokens(id, user, scope, hash, created) VALUES (?, ?, ?, ?, ?)", rows)
    return len(rows)


__all__ = ["check_legacy_root", "import_legacy_root"]
