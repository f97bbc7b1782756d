"""``adapterhub push``, ``adapterhub pull``, and ``adapterhub hub serve`` / ``gc`` / ``token`` / ``quota``.

Handlers raise ``HubError`` (an ``AdapterHubError``) on failure. The hub client (huggingface_hub) and server are
imported inside the handlers only.

Tokens are never taken on the command line (they would land in shell history and ``ps``): the client uses
``$HF_TOKEN`` or ``hf auth login``'s stored token, or ``--token-file``; the server keeps token hashes in
``<root>/hub.db`` (``adapterhub hub token add`` prints a new token once, on stdout).
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


def _limits(args: argparse.Namespace):
    from ..hub.server.limits import Limits, parse_size

    changes = {"max_connections": args.max_connections}
    for option, field in (("max_object_size", "max_object_bytes"), ("max_repo_size", "max_repo_bytes"),
                          ("max_inline_size", "max_inline_bytes")):
        if getattr(args, option) is not None:
            changes[field] = parse_size(getattr(args, option))
    return Limits(**changes)


def _missing(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # in sys.modules as None: blocked
        return True


def cmd_hub_serve(args: argparse.Namespace) -> int:
    from ..errors import HubError

    missing = [m for m in ("starlette", "uvicorn", "httptools") if _missing(m)]
    if missing:
        raise HubError(f"the hub server needs the 'hub-server' extra ({', '.join(missing)} missing): "
                       f"pip install 'adapterhub[hub-server]'")
    from ..hub.server.rootlock import is_loopback
    from ..hub.server.runner import HubServer

    root = Path(args.root).expanduser()
    try:
        server = HubServer(root, host=args.host, port=args.port, lfs=not args.no_lfs, quiet=args.quiet,
                           limits=_limits(args))
    except OSError as e:
        raise HubError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    n_tokens = server.storage.tokens.count()
    print(f"adapterhub hub serving {server.storage.root} at {server.url}", flush=True)
    print(f"  tokens: {n_tokens} (add one: adapterhub hub token add USER --root {server.storage.root})", flush=True)
    print(f"  clients: export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1", flush=True)
    if not is_loopback(args.host):
        print(f"  warning: listening on {args.host}, reachable from other machines over plain HTTP "
              f"(tokens travel unencrypted)", file=sys.stderr, flush=True)
    try:
        server.serve_forever(workers=args.workers)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("adapterhub hub stopped", flush=True)
    return 0


def _storage(args: argparse.Namespace):
    """The hub's storage under --root (which must already be a hub root: a typo must not create a new one)."""
    from ..errors import HubError
    from ..hub.server.storage import HubStorage

    root = Path(args.root).expanduser()
    if not (root / "hub.db").is_file() and not (root / "repos").is_dir() and not getattr(args, "create", False):
        raise HubError(f"{root} is not a hub root (no hub.db): start `adapterhub hub serve --root {root}` once, or "
                       f"add a token, which creates it")
    return HubStorage(root)


def cmd_hub_gc(args: argparse.Namespace) -> int:
    from ..hub.server.rootlock import lock_root

    storage = _storage(args)
    lock = lock_root(storage.root)
    try:
        storage.recover()
        n = storage.gc()
    finally:
        storage.close()
        if lock is not None:
            lock.close()
    print(f"removed {n} unreferenced blob(s) from {storage.root}")
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    args.create = True
    storage = _storage(args)
    try:
        token_id, token = storage.tokens.add(args.user, args.scope)
    finally:
        storage.close()
    print(f"token {token_id} for {args.user} ({args.scope}); it is shown only this once:", file=sys.stderr)
    print(token, flush=True)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from .common import table

    storage = _storage(args)
    try:
        rows = storage.tokens.list()
    finally:
        storage.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(table(["ID", "USER", "SCOPE", "CREATED"], [[r["id"], r["user"], r["scope"], r["created"]] for r in rows]))
    else:
        print("no tokens")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from ..errors import HubError

    storage = _storage(args)
    try:
        if not storage.tokens.revoke(args.id):
            raise HubError(f"no token with id {args.id!r} (see: adapterhub hub token list --root {args.root})")
    finally:
        storage.close()
    print(f"revoked token {args.id}")
    return 0


def cmd_quota(args: argparse.Namespace) -> int:
    from ..hub.server.limits import format_size, parse_size

    storage = _storage(args)
    try:
        if args.quota_command == "set":
            storage.set_quota(args.repo, None if args.size == "default" else parse_size(args.size))
            print(f"quota of {args.repo}: {args.size}")
        else:
            for repo, size in storage.quotas().items():
                print(f"{repo}  {format_size(size)}")
            print(f"default  {format_size(storage.limits.max_repo_bytes)} (adapterhub hub serve --max-repo-size)")
    finally:
        storage.close()
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


def _register_serve(hub_sub, common: argparse.ArgumentParser) -> None:
    s = hub_sub.add_parser(
        "serve", parents=[common], help="serve repos under --root",
        description="Serve model repos persisted under --root until interrupted (needs the 'hub-server' extra). "
                    "Writes need a 'write' token whose user owns the repo's namespace (users own their name; "
                    "<root>/orgs adds shared ones); private repos need a token of their namespace to read. "
                    "Create tokens with `adapterhub hub token add`.")
    s.add_argument("--root", metavar="DIR", required=True, help="where repos are stored")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P", help=f"port ({DEFAULT_PORT}; 0: any free)")
    s.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address to bind (127.0.0.1; other addresses expose the hub to the network)")
    s.add_argument("--no-lfs", action="store_true",
                   help="send every file inline in the commit (for clients that cannot turn Xet off)")
    s.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes sharing the root (1)")
    s.add_argument("--max-connections", type=int, default=256, metavar="N",
                   help="open connections per worker; past it new requests get 503 (256)")
    s.add_argument("--max-object-size", metavar="SIZE", help="largest file, e.g. 20G (20G)")
    s.add_argument("--max-repo-size", metavar="SIZE",
                   help="default storage quota per repo, e.g. 100G (100G; per repo: adapterhub hub quota set)")
    s.add_argument("--max-inline-size", metavar="SIZE",
                   help="largest file sent inline in a commit (10M, or 128M with --no-lfs)")
    s.add_argument("--quiet", action="store_true", help="do not log requests")
    s.set_defaults(func=cmd_hub_serve)


def _register_tokens(hub_sub, common: argparse.ArgumentParser) -> None:
    token = hub_sub.add_parser("token", parents=[common], help="add, list or revoke tokens of a hub",
                               description="Tokens of the hub under --root. Only their sha256 is stored; "
                                           "`add` prints the new token once, on stdout.")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    s = token_sub.add_parser("add", parents=[common], help="create a token for USER (printed once)")
    s.add_argument("user", metavar="USER", help="the user: owns the namespace USER (and its orgs')")
    s.add_argument("--scope", choices=("read", "write"), default="write", help="what the token may do (write)")
    s.set_defaults(func=cmd_token_add)
    s = token_sub.add_parser("list", parents=[common], help="list tokens (ids, users, scopes; never the tokens)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_token_list)
    s = token_sub.add_parser("revoke", parents=[common], help="revoke a token by its id")
    s.add_argument("id", metavar="ID", help="the token id (see `token list`)")
    s.set_defaults(func=cmd_token_revoke)
    for parser in token_sub.choices.values():
        parser.add_argument("--root", metavar="DIR", required=True, help="the hub's root")


def _register_quota(hub_sub, common: argparse.ArgumentParser) -> None:
    quota = hub_sub.add_parser("quota", parents=[common], help="per-repo storage quotas",
                               description="A repo's quota bounds the bytes of every file its commits reference.")
    quota_sub = quota.add_subparsers(dest="quota_command", metavar="COMMAND", required=True)
    s = quota_sub.add_parser("set", parents=[common], help="set REPO's quota (SIZE, or 'default')")
    s.add_argument("repo", metavar="REPO", help="repo id: namespace/name")
    s.add_argument("size", metavar="SIZE", help="e.g. 500M, 20G; 'default': the server's --max-repo-size")
    quota_sub.add_parser("list", parents=[common], help="list quotas set per repo")
    for parser in quota_sub.choices.values():
        parser.add_argument("--root", metavar="DIR", required=True, help="the hub's root")
        parser.set_defaults(func=cmd_quota)


def _register_hub(sub, common: argparse.ArgumentParser) -> None:
    hub = sub.add_parser("hub", parents=[common], help="self-hosted hub",
                         description="Run a self-hosted hub that huggingface_hub, peft and adapterhub "
                                     "talk to through HF_ENDPOINT, and manage its tokens and quotas.")
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="COMMAND")
    _register_serve(hub_sub, common)
    s = hub_sub.add_parser(
        "gc", parents=[common], help="delete unreferenced blobs under --root",
        description="Delete stored blobs no commit references (left by interrupted uploads). Refused while a "
                    "server is serving the same root.")
    s.add_argument("--root", metavar="DIR", required=True, help="the hub's root")
    s.set_defaults(func=cmd_hub_gc)
    _register_tokens(hub_sub, common)
    _register_quota(hub_sub, common)

    def hub_usage(args: argparse.Namespace) -> int:  # `adapterhub hub` alone: its help, exit 2
        hub.print_help(sys.stderr)
        return 2

    hub.set_defaults(func=hub_usage)


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``push``, ``pull`` and ``hub`` (``serve``, ``gc``, ``token``, ``quota``) to the main parser."""
    _register_push_pull(sub, common)
    _register_hub(sub, common)
