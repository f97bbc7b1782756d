"""The ``adapterhub`` command line.

Subcommands: ``list``, ``show``, ``rm``, ``predict``, ``train``, ``push``, ``pull``, ``hub serve`` (see ``adapterhub --help``). ``main(argv)``
returns the exit code: 0 on success, 2 on any adapterhub error (printed as ``error: <message>`` on stderr, no
traceback) and on bad command lines.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import AdapterHubError
from .version import __version__

PROG = "adapterhub"
EXIT_ERROR = 2
_MISSING = "?"


# ----------------------------------------------------------------------------------------------------
# formatting helpers
# ----------------------------------------------------------------------------------------------------
def _human_count(n: Any) -> str:
    """``1536`` -> ``1.5K``; non-ints are shown as ``?``."""
    if not isinstance(n, int) or isinstance(n, bool):
        return _MISSING
    for div, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def _human_bytes(n: int) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n} B"


def _short_time(created: Any) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM`` (UTC when it carries a zone); anything else as given."""
    if not isinstance(created, str) or not created:
        return _MISSING
    try:
        t = _dt.datetime.fromisoformat(created)
    except ValueError:
        return created
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M")


def _ellipsize(s: str, width: int) -> str:
    """Keep the tail (the informative part of paths and hub ids)."""
    return s if len(s) <= width else "..." + s[-(width - 3):]


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A plain-text table; columns listed in ``right`` are right-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# store access
# ----------------------------------------------------------------------------------------------------
def _store(args: argparse.Namespace):
    from .store import Store

    root = getattr(args, "store", None)
    return Store(Path(root).expanduser()) if root else Store()


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name@v3`` -> (name, version or None)."""
    name, at, version = ref.strip().partition("@")
    if at and not version:
        raise AdapterHubError(f"bad adapter reference {ref!r}: expected NAME or NAME@vN")
    return name, (version if at else None)


def _resolve(store, ref: str, version: str | None):
    """The store entry for ``ref`` (``NAME`` or ``NAME@vN``) and an optional ``--version``."""
    name, ref_version = _split_ref(ref)
    if ref_version is not None and version is not None:
        from .store import parse_version

        if parse_version(ref_version) != parse_version(version):
            raise AdapterHubError(f"{ref!r} and --version {version} name different versions")
    return store.get(name, ref_version if ref_version is not None else version)


def _summary(entry, versions: list[int] | None = None) -> dict[str, Any]:
    """What ``list`` shows of one store entry; a broken card gives ``error`` instead of failing the listing."""
    out: dict[str, Any] = {"name": entry.name, "version": entry.version}
    if versions is not None:
        out["versions"] = versions
    try:
        card = entry.card
        if not isinstance(card, dict):
            raise AdapterHubError(f"{entry.path}: the adapter card is not a JSON object")
    except AdapterHubError as e:
        _warn(f"{entry.ref}: {e}")
        card, out["error"] = {}, str(e)
    labels = card.get("labels")
    out.update({
        "method": card.get("method"),
        "task": card.get("task"),
        "labels": labels,
        "num_labels": len(labels) if isinstance(labels, list) else None,
        "base_model": card.get("base_model"),
        "num_parameters": card.get("num_parameters"),
        "num_head_parameters": card.get("num_head_parameters"),
        "created": card.get("created"),
        "path": str(entry.path),
    })
    return out


# ----------------------------------------------------------------------------------------------------
# list
# ----------------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    entries = store.list()
    if args.all:
        items = [_summary(e) for e in entries]
    else:
        by_name: dict[str, list] = {}
        for e in entries:
            by_name.setdefault(e.name, []).append(e)
        items = [_summary(es[-1], [e.version for e in es]) for es in by_name.values()]
    if args.json:
        _print_json(items)
        return 0
    if not items:
        print(f"no adapters in {store.root}")
        return 0

    def common(it):
        n = it["num_labels"]
        return [it["method"] or _MISSING, it["task"] or _MISSING, _MISSING if n is None else n,
                _ellipsize(str(it["base_model"] or _MISSING), 40), _human_count(it["num_parameters"]),
                _short_time(it["created"])]

    tail = ["METHOD", "TASK", "LABELS", "BASE", "PARAMS", "CREATED"]
    if args.all:
        headers = ["NAME", "VERSION"] + tail
        rows = [[it["name"], f"v{it['version']}"] + common(it) for it in items]
        right = (4, 6)
    else:
        headers = ["NAME", "LATEST", "VERSIONS"] + tail
        rows = [[it["name"], f"v{it['version']}", len(it["versions"])] + common(it) for it in items]
        right = (2, 5, 7)
    print(_table(headers, rows, right))
    return 0


# ----------------------------------------------------------------------------------------------------
# show
# ----------------------------------------------------------------------------------------------------
def _rank_table(alloc: dict[str, Any]) -> str:
    """``rank_allocation``: module -> rank (int), or module -> {field: value}, or module -> [values]."""
    vals = list(alloc.values())
    if vals and all(isinstance(v, dict) for v in vals):
        keys: list[str] = []
        for v in vals:
            keys += [k for k in v if k not in keys]
        rows = [[m] + [_value(v.get(k, "")) for k in keys] for m, v in alloc.items()]
        return _table(["MODULE"] + [k.upper() for k in keys], rows, right=range(1, len(keys) + 1))
    rows = [[m, " ".join(map(str, v)) if isinstance(v, list) else _value(v)] for m, v in alloc.items()]
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        rows.append(["total", sum(vals)])
    return _table(["MODULE", "RANK"], rows, right=(1,))


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    entry = _resolve(store, args.name, args.version)
    card = entry.card
    if not isinstance(card, dict):
        raise AdapterHubError(f"{entry.path}: the adapter card is not a JSON object")
    versions = store.versions(entry.name)
    if args.json:
        _print_json({"name": entry.name, "version": entry.version, "versions": versions,
                     "path": str(entry.path), "card": card})
        return 0

    w = 13
    lines: list[str] = []

    def field(label: str, value: Any) -> None:
        lines.append(f"{label + ':':<{w}} {value}")

    field("name", f"{entry.ref}  (versions: {', '.join(f'v{v}' for v in versions)})")
    if card.get("name") not in (None, entry.name):
        field("card name", card.get("name"))
    field("path", entry.path)
    field("method", card.get("method", _MISSING))
    cfg = card.get("method_config")
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if k != "method":
                lines.append(f"  {k}: {_value(v)}")
    field("task", card.get("task", _MISSING))
    labels = card.get("labels")
    if isinstance(labels, list):
        field(f"labels ({len(labels)})", ", ".join(map(str, labels)))
    else:
        field("labels", "-" if labels is None else _value(labels))
    field("base model", card.get("base_model", _MISSING))
    fp = card.get("base_fingerprint")
    if isinstance(fp, dict) and fp:
        lines.append("  fingerprint: " + ", ".join(f"{k}={v}" for k, v in fp.items()))
    n, nh = card.get("num_parameters"), card.get("num_head_parameters", 0)
    if isinstance(n, int) and isinstance(nh, int):
        field("parameters", f"{n:,} adapter + {nh:,} head = {n + nh:,}")
    else:
        field("parameters", _value(n))
    metrics = card.get("metrics")
    if isinstance(metrics, dict) and metrics:
        field("metrics", "")
        lines[-1] = lines[-1].rstrip()
        for k, v in metrics.items():
            lines.append(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {_value(v)}")
    else:
        field("metrics", "-")
    field("created", card.get("created", _MISSING))
    field("library", f"adapterhub {card.get('library_version') or _MISSING} (card format "
                     f"{card.get('format_version', _MISSING)})")
    files = card.get("files")
    lines.append("files:")
    if isinstance(files, dict):
        rows = []
        for fname, sha in sorted(files.items()):
            p = entry.path / fname
            size = _human_bytes(p.stat().st_size) if p.is_file() else "MISSING"
            rows.append([fname, f"sha256:{str(sha)[:12]}", size])
        lines.append(_indent(_table(["FILE", "HASH", "SIZE"], rows, right=(2,))))
    extra = card.get("extra")
    if isinstance(extra, dict):
        alloc = extra.get("rank_allocation")
        if isinstance(alloc, dict) and alloc:
            lines.append("rank allocation:")
            lines.append(_indent(_rank_table(alloc)))
        rest = {k: v for k, v in extra.items() if not (k == "rank_allocation" and isinstance(v, dict) and v)}
        if rest:
            lines.append("extra:")
            lines += [f"  {k}: {_value(v)}" for k, v in rest.items()]
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------------------------------
# rm
# ----------------------------------------------------------------------------------------------------
def cmd_rm(args: argparse.Namespace) -> int:
    # --yes is accepted for scripts; no confirmation is asked either way.
    store = _store(args)
    name, ref_version = _split_ref(args.name)
    version = None
    if ref_version is not None or args.version is not None:
        version = _resolve(store, args.name, args.version).version
    removed = store.remove(name, version)
    for e in removed:
        print(f"removed {e.ref} ({e.path})")
    left = store.versions(name)
    if left:
        print(f"{name}: {', '.join(f'v{v}' for v in left)} remain")
    return 0


# ----------------------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------------------
def _split_list(s: str, what: str) -> list[str]:
    items = [x.strip() for x in s.split(",")]
    if not items or any(not x for x in items):
        raise AdapterHubError(f"bad {what} {s!r}: expected a comma-separated list of adapter names")
    return items


def _is_dir_ref(ref: str) -> bool:
    return "/" in ref or os.sep in ref or (os.altsep is not None and os.altsep in ref) or ref in (".", "..")


def _format_prediction(text: str, pred: Any) -> str:
    if isinstance(pred, list):  # token classification: one tag per whitespace word
        return " ".join(f"{w}/{t}" for w, t in zip(text.split(), pred))
    return str(pred).replace("\r", "\\r").replace("\n", "\\n")


def _load_base(spec: str, args: argparse.Namespace):
    from .model import AdapterModel

    try:
        return AdapterModel.from_pretrained(spec, dtype=args.dtype, device=args.device)
    except AdapterHubError:
        raise
    except (OSError, ValueError) as e:  # transformers' "can't load" errors
        raise AdapterHubError(f"could not load base model {spec!r}: {e}") from None


def cmd_predict(args: argparse.Namespace) -> int:
    from .card import AdapterCard

    store = _store(args)
    texts = list(args.texts)
    if texts == ["-"]:
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise AdapterHubError("no texts to predict")
    refs = list(dict.fromkeys(_split_list(args.name, "adapter list")))
    per_row = _split_list(args.adapters, "--adapters list") if args.adapters else None
    if per_row is not None:
        if len(per_row) != len(texts):
            raise AdapterHubError(f"--adapters names {len(per_row)} adapters but there are {len(texts)} texts; "
                                  "give one adapter per text")
        refs = list(dict.fromkeys(per_row))  # the per-row list overrides NAME
    if args.version is not None and len(refs) != 1:
        raise AdapterHubError("--version needs a single adapter; use NAME@vN to pick versions of several")

    # resolve every adapter (and its card) before loading anything heavy
    sources: dict[str, tuple[Path, str | None, dict]] = {}  # ref -> (directory, name to register, card)
    for ref in refs:
        if _is_dir_ref(ref):
            d = Path(ref).expanduser()
            if not d.is_dir():
                raise AdapterHubError(f"no adapter directory {ref!r}")
            sources[ref] = (d, None, AdapterCard.read(d).to_dict())
        else:
            e = _resolve(store, ref, args.version)
            sources[ref] = (e.path, e.name, e.card)
    names = [n for _d, n, _c in sources.values() if n]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AdapterHubError(f"cannot load two versions of {dup[0]!r} at once")

    spec = args.base
    if spec is None:
        bases = {ref: c.get("base_model") for ref, (_d, _n, c) in sources.items()}
        if not all(isinstance(b, str) and b for b in bases.values()):
            raise AdapterHubError(f"the adapter card of {next(r for r, b in bases.items() if not b)!r} names no "
                                  "base model; pass --base")
        if len(set(bases.values())) > 1:
            raise AdapterHubError(f"the adapters were made for different bases {bases}; pass --base")
        spec = next(iter(bases.values()))

    model = _load_base(spec, args)
    registered: dict[str, str] = {}
    for ref, (d, name, _card) in sources.items():
        registered[ref] = model.load_adapter(d, name=name, allow_base_mismatch=args.allow_base_mismatch).name

    if per_row is not None:
        row_refs, row_texts = per_row, texts
    else:  # every text through every adapter
        row_refs = [r for _t in texts for r in refs]
        row_texts = [t for t in texts for _r in refs]
    preds = model.predict(row_texts, adapters=[registered[r] for r in row_refs], batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens)

    if args.json:
        _print_json([{"text": t, "adapter": r, "prediction": p} for t, r, p in zip(row_texts, row_refs, preds)])
        return 0
    tagged = len(set(row_refs)) > 1
    for t, r, p in zip(row_texts, row_refs, preds):
        line = _format_prediction(t, p)
        print(f"{r}\t{line}" if tagged else line)
    return 0


# ----------------------------------------------------------------------------------------------------
# train (implemented in adapterhub.training.cli, imported lazily)
# ----------------------------------------------------------------------------------------------------
TRAINING_MODULE = "adapterhub.training.cli"


def cmd_train(args: argparse.Namespace) -> int:
    try:
        training_cli = importlib.import_module(TRAINING_MODULE)
    except ModuleNotFoundError as e:
        if e.name in (TRAINING_MODULE, TRAINING_MODULE.rpartition(".")[0]):
            raise AdapterHubError("training is not available in this build") from None
        if e.name and not e.name.startswith("adapterhub"):
            raise AdapterHubError(f"training needs the optional dependencies (missing module {e.name!r}): "
                                  "pip install 'adapterhub[train]'") from None
        raise
    rc = training_cli.run(args)
    return 0 if rc is None else int(rc)


# ----------------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------------
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS,
                        help="the adapter store (default: $ADAPTERHUB_HOME/store)")

    p = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="A frozen base model with a registry of named per-task adapters: manage the local store, "
                    "predict, train, push, pull, hub serve.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("list", parents=[common], help="list the stored adapters",
                       description="List the adapters in the local store (latest version of each).")
    s.add_argument("--all", action="store_true", help="one row per version")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", parents=[common], help="show an adapter's card",
                       description="Show the card of a stored adapter (the latest version unless --version).")
    s.add_argument("name", metavar="NAME", help="adapter name (or NAME@vN)")
    s.add_argument("--version", dest="version", metavar="V", help="version: 3 or v3 (default: latest)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("rm", parents=[common], help="remove an adapter from the store",
                       description="Remove every version of NAME, or only --version V.")
    s.add_argument("name", metavar="NAME", help="adapter name (or NAME@vN)")
    s.add_argument("--version", dest="version", metavar="V", help="remove only this version")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask (removal never asks; kept for scripts)")
    s.set_defaults(func=cmd_rm)

    s = sub.add_parser(
        "predict", parents=[common], help="run stored adapters on texts",
        description="Load the base model named in the adapter card (or --base), load the adapter(s) from the "
                    "store and print one prediction per text: a label, word/TAG pairs, or generated text "
                    "(newlines shown as \\n; use --json for the exact output). With several adapters "
                    "(NAME=a,b) every text goes through each, one line per pair, prefixed by the adapter.")
    s.add_argument("name", metavar="NAME",
                   help="adapter name, NAME@vN, an adapter directory, or a comma-separated list of these")
    s.add_argument("texts", metavar="TEXT", nargs="+", help="texts to predict ('-' alone: read lines from stdin)")
    s.add_argument("--version", dest="version", metavar="V", help="adapter version (default: latest)")
    s.add_argument("--adapters", metavar="A,B,...",
                   help="one adapter per text, for a mixed batch in one pass (overrides NAME)")
    s.add_argument("--base", metavar="SPEC",
                   help="base model: Hub id, local directory or package:<dist> (default: the card's base_model)")
    s.add_argument("--allow-base-mismatch", action="store_true",
                   help="load adapters made for other weights of the same architecture")
    s.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="rows per forward (32)")
    s.add_argument("--max-new-tokens", type=_positive_int, default=32, metavar="N",
                   help="tokens to generate for causal-lm adapters (32)")
    s.add_argument("--device", help="e.g. cuda, cuda:0, cpu (default: cpu)")
    s.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="base model dtype")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("train", parents=[common], help="train an adapter from a recipe",
                       description="Train an adapter from a recipe file, with key=value overrides.")
    s.add_argument("recipe", metavar="RECIPE", help="recipe file (YAML)")
    s.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="recipe overrides, e.g. train.lr=1e-4")
    s.add_argument("--resume", action="store_true", help="resume from the last checkpoint of this run")
    s.add_argument("--run-dir", metavar="DIR", help="where the run's checkpoints and report go "
                                                     "(default: chosen by the recipe)")
    s.set_defaults(func=cmd_train)

    from .hub.cli import register as register_hub

    register_hub(sub, parents=[common])
    return p


def _code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return _code(e.code)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return _code(args.func(args))
    except AdapterHubError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `adapterhub list | head -1`
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
