"""Test-only: serve a hub in this process and SIGKILL it at a chosen point of the next commit.

    python tests/hub_crash_server.py ROOT TOKEN POINT

Creates ``alice/crash`` (owned by the token's user ``alice``), prints the URL, then serves. POINT:

- ``blob-before-rename``: while publishing the first inline file's blob (written and fsynced, not renamed);
- ``before-transaction``: the commit's blobs are stored, its database transaction has not begun;
- ``inside-transaction``: the commit and its tree are inserted, the branch not moved, nothing committed;
- ``after-transaction``: the transaction is committed, the answer never sent.

The faults are injected here, by monkeypatching the storage; the product code has no test hooks.
"""
from __future__ import annotations

import os
import signal
import sys

from adapterhub.hub.server import blobs, storage
from adapterhub.hub.server.runner import HubServer


def die(*_args, **_kwargs):
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    commit = storage.HubStorage.commit
    if point == "blob-before-rename":
        blobs.publish_file = die
    elif point == "before-transaction":
        storage.HubStorage.commit = die
    elif point == "inside-transaction":
        storage.HubStorage._move_ref = staticmethod(die)
    elif point == "after-transaction":
        def commit_then_die(self, *args, **kwargs):
            commit(self, *args, **kwargs)
            die()

        storage.HubStorage.commit = commit_then_die
    else:
        raise SystemExit(f"unknown crash point {point!r}")


def main() -> None:
    root, token, point = sys.argv[1:4]
    server = HubServer(root, tokens={token: "alice"})
    if server.storage.repo("alice/crash") is None:
        server.storage.create_repo("alice/crash", False, "alice")
    arm(point)
    print(server.url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
