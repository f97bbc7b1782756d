"""``adapterhub push``, ``adapterhub pull``, ``adapterhub hub serve`` and ``adapterhub hub gc``.

Handlers raise ``HubError`` (an ``AdapterHubError``) on failure. The hub client (huggingface_hub) and server are
imported inside the handlers only.

Tokens are never taken on the command line (they would land in shell history and ``ps``): the client uses
``$HF_TOKEN`` or ``hf auth login``'s stored token, or ``--token-file``; the server reads ``<root>/tokens``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import open_store, resolve

DEFAULT_PORT = 8765


def _token(args: argparse.Namespace) -> str | None:
    """The token of ``--token-file``, or None (the client then uses its defaults)."""
    path = getattr(args, "token_file", None)
    if not path:
        return None
    from ..errors import HubError

    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as e:
        raise HubError(f"cannot read the token file {path}: {e.strerror}") from None
    if not token or len(token.split()) != 1:
        raise HubError(f"the token file {path} must hold one token")
    return token


def cmd_push(args: argparse.Namespace) -> int:
    from ..hub.push import push_dirs

    store = open_store(args)
    entries = [resolve(store, ref) for ref in args.names]
    res = push_dirs([e.path for e in entries], args.repo, multi=True if args.multi else None,
                    private=args.private, revision=args.revision, commit_message=args.message,
                    token=_token(args), endpoint=args.endpoint, progress=not args.no_progress,
                    datasets=args.dataset or None)
    if args.json:
        print(json.dumps({"repo_id": res.repo_id, "commit": res.commit, "revision": res.revision, "url": res.url,
                          "adapters": [e.ref for e in entries]}, indent=2))
    else:
        print(f"pushed {', '.join(e.ref for e in entries)} to {res.repo_id}@{res.revision} "
              f"(commit {res.commit[:10]}): {res.url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ..hub.pull import pull

    entries = pull(args.repo, revision=args.revision, adapters=args.adapter or None, store=open_store(args),
                   token=_token(args), endpoint=args.endpoint, progress=not args.no_progress)
    if args.json:
        print(json.dumps([{"name": e.name, "version": e.version, "path": str(e.path)} for e in entries], indent=2))
    else:
        for e in entries:
            print(f"stored {e.ref} <- {args.repo}" + (f"@{args.revision}" if args.revision else "") + f"  ({e.path})")
    return 0


def cmd_hub_serve(args: argparse.Namespace) -> int:
    from ..errors import HubError
    from ..hub.server import HubServer, is_loopback

    root = Path(args.root).expanduser()
    try:
        server = HubServer(root, host=args.host, port=args.port, lfs=not args.no_lfs, quiet=args.quiet)
    except OSError as e:
        raise HubError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"adapterhub hub serving {server.storage.root} at {server.url}", flush=True)
    print(f"  write token(s): {server.storage.root / 'tokens'} (never printed)", flush=True)
    print(f"  clients: export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1", flush=True)
    if not is_loopback(args.host):
        print(f"  warning: listening on {args.host}, reachable from other machines over plain HTTP "
              f"(tokens travel unencrypted)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("adapterhub hub stopped", flush=True)
    return 0


def cmd_hub_gc(args: argparse.Namespace) -> int:
    from ..errors import HubError
    from ..hub.server import HubStorage, _lock_root

    root = Path(args.root).expanduser()
    if not (root / "repos").is_dir():
        raise HubError(f"{root} is not a hub root (no repos/ folder)")
    storage = HubStorage(root)
    lock = _lock_root(storage.root)
    try:
        storage.recover()
        n = storage.gc()
    finally:
        if lock is not None:
            lock.close()
    print(f"removed {n} unreferenced blob(s) from {storage.root}")
    return 0


# ----------------------------------------------------------------------------------------------------
# parsers
# ----------------------------------------------------------------------------------------------------
def _client_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--endpoint", metavar="URL", help="hub URL (default: $HF_ENDPOINT, else huggingface.co)")
    s.add_argument("--token-file", metavar="PATH",
                   help="read the token from this file (default: $HF_TOKEN or the `hf auth login` token)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true", help="print JSON")


def _register_push_pull(sub, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "push", parents=[common], help="push stored adapters to a Hub repo",
        description="Push stored adapter(s) (NAME or NAME@vN) to a Hub repo in one commit: the PEFT files, the "
                    "task head, the adapter card and a README model card. One adapter goes to the repo root; "
                    "several (or --multi) go to one folder each with an index. The repo is created when missing.")
    s.add_argument("names", metavar="NAME", nargs="+", help="stored adapter (NAME or NAME@vN)")
    s.add_argument("repo", metavar="REPO", help="repo id: namespace/name")
    s.add_argument("--revision", metavar="BRANCH", help="branch to push to (created from main when missing)")
    s.add_argument("--private", action="store_true", help="create the repo private (when it does not exist)")
    s.add_argument("--multi", action="store_true", help="multi-adapter layout even for one adapter")
    s.add_argument("-m", "--message", metavar="TEXT", help="commit message")
    s.add_argument("--dataset", metavar="ID", action="append",
                   help="Hub dataset id the adapter was trained on, for the README metadata (repeatable)")
    _client_options(s)
    s.set_defaults(func=cmd_push)

    s = sub.add_parser(
        "pull", parents=[common], help="pull adapters from a Hub repo into the store",
        description="Download a repo's adapter(s) through the huggingface_hub cache, verify every file's sha256 "
                    "against the adapter card, and store each as a new version (or reuse an identical one). "
                    "Only safetensors are downloaded; repos holding only pickle weights are refused.")
    s.add_argument("repo", metavar="REPO", help="repo id: namespace/name")
    s.add_argument("--revision", metavar="REV", help="branch, tag or commit id (default: main)")
    s.add_argument("--adapter", metavar="NAME", action="append",
                   help="only this adapter of a multi-adapter repo (repeatable; default: all)")
    _client_options(s)
    s.set_defaults(func=cmd_pull)


def _register_hub(sub, common: argparse.ArgumentParser) -> None:
    hub = sub.add_parser("hub", parents=[common], help="self-hosted hub",
                         description="Run a self-hosted hub that huggingface_hub, peft and adapterhub "
                                     "talk to through HF_ENDPOINT.")
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="COMMAND")
    s = hub_sub.add_parser(
        "serve", parents=[common], help="serve repos under --root",
        description="Serve model repos persisted under --root until interrupted. Writes need a token from "
                    "<root>/tokens ('<user> <token>' lines; one is created on first start); private repos need "
                    "one to read.")
    s.add_argument("--root", metavar="DIR", required=True, help="where repos are stored")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P", help=f"port ({DEFAULT_PORT}; 0: any free)")
    s.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address to bind (127.0.0.1; other addresses expose the hub to the network)")
    s.add_argument("--no-lfs", action="store_true",
                   help="send every file inline in the commit (for clients that cannot turn Xet off)")
    s.add_argument("--quiet", action="store_true", help="do not log requests")
    s.set_defaults(func=cmd_hub_serve)
    s = hub_sub.add_parser(
        "gc", parents=[common], help="delete unreferenced blobs under --root",
        description="Delete stored blobs no commit references (left by interrupted uploads). Refused while a "
                    "server is serving the same root.")
    s.add_argument("--root", metavar="DIR", required=True, help="the hub's root")
    s.set_defaults(func=cmd_hub_gc)

    def hub_usage(args: argparse.Namespace) -> int:  # `adapterhub hub` alone: its help, exit 2
        hub.print_help(sys.stderr)
        return 2

    hub.set_defaults(func=hub_usage)


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``push``, ``pull`` and ``hub`` (``hub serve``, ``hub gc``) to the main parser's sub-commands."""
    _register_push_pull(sub, common)
    _register_hub(sub, common)
