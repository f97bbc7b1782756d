"""The hub's metadata database: SQLite in WAL mode at ``<root>/hub.db`` (repos, refs, commits, quotas, upload
tickets and the token hashes).

One connection per thread; writes run in ``BEGIN IMMEDIATE`` transactions (:meth:`Database.write`), so several
threads or several server processes (uvicorn workers) on one root serialise their writes, and a crash at any point
leaves each transaction applied whole or not at all (``synchronous=FULL``: a committed transaction survives a power
loss too). The file holds the token hashes: it is created mode 0600, and :func:`check_private` refuses it when group
or others may read it.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Iterator

from ...errors import HubError

DB_NAME = "hub.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    key TEXT PRIMARY KEY,                 -- lower-cased id: repo ids are case-insensitive
    id TEXT NOT NULL,                     -- as created
    private INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (         -- branches and tags share one name space per repo
    repo TEXT NOT NULL REFERENCES repos(key) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('branch', 'tag')),
    commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, name)
);
CREATE TABLE IF NOT EXISTS commits (
    repo TEXT NOT NULL REFERENCES repos(key) ON DELETE CASCADE,
    id TEXT NOT NULL,
    parent TEXT,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    author TEXT NOT NULL,
    date TEXT NOT NULL,
    PRIMARY KEY (repo, id)
);
CREATE TABLE IF NOT EXISTS commit_files ( -- the whole tree of every commit
    repo TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    lfs INTEGER NOT NULL,
    oid TEXT NOT NULL,                    -- git blob sha1 (of the LFS pointer for LFS files)
    PRIMARY KEY (repo, commit_id, path),
    FOREIGN KEY (repo, commit_id) REFERENCES commits(repo, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS commit_files_sha256 ON commit_files(sha256);
CREATE TABLE IF NOT EXISTS repo_blobs (   -- distinct blobs a repo references: its storage use
    repo TEXT NOT NULL REFERENCES repos(key) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (repo, sha256)
);
CREATE TABLE IF NOT EXISTS quotas (       -- per-repo storage quota overrides
    repo TEXT PRIMARY KEY,                -- lower-cased repo id
    max_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lfs_uploads (  -- LFS objects a repo was sent: only those (and its own) may be committed
    repo TEXT NOT NULL REFERENCES repos(key) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (repo, sha256)
);
CREATE TABLE IF NOT EXISTS upload_tickets (
    ticket_hash TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    oid TEXT NOT NULL,
    size INTEGER NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    hash TEXT NOT NULL UNIQUE,            -- sha256 of the token; the token itself is never stored
    created TEXT NOT NULL
);
"""


def check_private(path: Path, what: str) -> None:
    """Refuse a file that group or others may read or write (it holds secrets or decides access)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HubError(f"{path} ({what}) has mode {stat.S_IMODE(mode):04o}: group and others must have no access. "
                       f"Run: chmod 600 {path}  (and treat tokens stored in plain text there as leaked)")


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class Database:
    """Thread-local SQLite connections to one database file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        create_private_file(self.path)
        for suffix in ("", "-wal", "-shm"):
            check_private(self.path.with_name(self.path.name + suffix), "the hub database: token hashes, private repos")
        cx = self.connect()
        cx.execute("PRAGMA journal_mode=WAL")
        version = cx.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HubError(f"{self.path} was written by a newer adapterhub (schema {version} > {SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            cx.executescript("BEGIN IMMEDIATE;" + SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    def connect(self) -> sqlite3.Connection:
        cx = getattr(self._local, "cx", None)
        if cx is None:
            cx = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=BUSY_TIMEOUT_MS / 1000)
            cx.row_factory = sqlite3.Row
            cx.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cx.execute("PRAGMA foreign_keys=ON")
            cx.execute("PRAGMA synchronous=FULL")
            self._local.cx = cx
            with self._lock:
                self._all.append(cx)
        return cx

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken at once (``BEGIN IMMEDIATE``), committed on exit, rolled back on error."""
        cx = self.connect()
        cx.execute("BEGIN IMMEDIATE")
        try:
            yield cx
        except BaseException:
            cx.execute("ROLLBACK")
            raise
        cx.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several queries."""
        cx = self.connect()
        cx.execute("BEGIN")
        try:
            yield cx
        finally:
            cx.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self.connect().execute(sql, args).fetchall()

    def one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        return self.connect().execute(sql, args).fetchone()

    def close(self) -> None:
        with self._lock:
            for cx in self._all:
                with contextlib.suppress(sqlite3.Error):
                    cx.close()
            self._all.clear()
        self._local = threading.local()


__all__ = ["Database", "DB_NAME", "check_private", "create_private_file"]
