"""``adapterhub list``, ``adapterhub show`` and ``adapterhub rm``: the local adapter store."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import AdapterHubError
from .common import (MISSING, ellipsize, human_bytes, human_count, indent, open_store, print_json, resolve,
                     short_time, split_ref, table, value, warn)


# ----------------------------------------------------------------------------------------------------
# list
# ----------------------------------------------------------------------------------------------------
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
        warn(f"{entry.ref}: {e}")
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


def _list_columns(it: dict[str, Any]) -> list[Any]:
    """The columns after NAME/VERSION(S) of one ``list`` row."""
    n = it["num_labels"]
    return [it["method"] or MISSING, it["task"] or MISSING, MISSING if n is None else n,
            ellipsize(str(it["base_model"] or MISSING), 40), human_count(it["num_parameters"]),
            short_time(it["created"])]


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    entries = store.list()
    if args.all:
        items = [_summary(e) for e in entries]
    else:
        by_name: dict[str, list] = {}
        for e in entries:
            by_name.setdefault(e.name, []).append(e)
        items = [_summary(es[-1], [e.version for e in es]) for es in by_name.values()]
    if args.json:
        print_json(items)
        return 0
    if not items:
        print(f"no adapters in {store.root}")
        return 0

    tail = ["METHOD", "TASK", "LABELS", "BASE", "PARAMS", "CREATED"]
    if args.all:
        headers = ["NAME", "VERSION"] + tail
        rows = [[it["name"], f"v{it['version']}"] + _list_columns(it) for it in items]
        right = (4, 6)
    else:
        headers = ["NAME", "LATEST", "VERSIONS"] + tail
        rows = [[it["name"], f"v{it['version']}", len(it["versions"])] + _list_columns(it) for it in items]
        right = (2, 5, 7)
    print(table(headers, rows, right))
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
        rows = [[m] + [value(v.get(k, "")) for k in keys] for m, v in alloc.items()]
        return table(["MODULE"] + [k.upper() for k in keys], rows, right=range(1, len(keys) + 1))
    rows = [[m, " ".join(map(str, v)) if isinstance(v, list) else value(v)] for m, v in alloc.items()]
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        rows.append(["total", sum(vals)])
    return table(["MODULE", "RANK"], rows, right=(1,))


def _field(label: str, val: Any) -> str:
    return f"{label + ':':<13} {val}"


def _show_identity(entry, card: dict[str, Any], versions: list[int]) -> list[str]:
    """name, path, method (+ its options), task, labels, base model (+ fingerprint)."""
    lines = [_field("name", f"{entry.ref}  (versions: {', '.join(f'v{v}' for v in versions)})")]
    if card.get("name") not in (None, entry.name):
        lines.append(_field("card name", card.get("name")))
    lines.append(_field("path", entry.path))
    lines.append(_field("method", card.get("method", MISSING)))
    cfg = card.get("method_config")
    if isinstance(cfg, dict):
        lines += [f"  {k}: {value(v)}" for k, v in cfg.items() if k != "method"]
    lines.append(_field("task", card.get("task", MISSING)))
    labels = card.get("labels")
    if isinstance(labels, list):
        lines.append(_field(f"labels ({len(labels)})", ", ".join(map(str, labels))))
    else:
        lines.append(_field("labels", "-" if labels is None else value(labels)))
    lines.append(_field("base model", card.get("base_model", MISSING)))
    fp = card.get("base_fingerprint")
    if isinstance(fp, dict) and fp:
        lines.append("  fingerprint: " + ", ".join(f"{k}={v}" for k, v in fp.items()))
    return lines


def _show_numbers(card: dict[str, Any]) -> list[str]:
    """parameters, metrics, created, library."""
    n, nh = card.get("num_parameters"), card.get("num_head_parameters", 0)
    if isinstance(n, int) and isinstance(nh, int):
        lines = [_field("parameters", f"{n:,} adapter + {nh:,} head = {n + nh:,}")]
    else:
        lines = [_field("parameters", value(n))]
    metrics = card.get("metrics")
    if isinstance(metrics, dict) and metrics:
        lines.append(_field("metrics", "").rstrip())
        for k, v in metrics.items():
            lines.append(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {value(v)}")
    else:
        lines.append(_field("metrics", "-"))
    lines.append(_field("created", card.get("created", MISSING)))
    lines.append(_field("library", f"adapterhub {card.get('library_version') or MISSING} (card format "
                                   f"{card.get('format_version', MISSING)})"))
    return lines


def _show_files_and_extra(entry, card: dict[str, Any]) -> list[str]:
    """files (hash, size on disk), rank allocation, other extra fields."""
    lines = ["files:"]
    files = card.get("files")
    if isinstance(files, dict):
        rows = []
        for fname, sha in sorted(files.items()):
            p = entry.path / fname
            size = human_bytes(p.stat().st_size) if p.is_file() else "MISSING"
            rows.append([fname, f"sha256:{str(sha)[:12]}", size])
        lines.append(indent(table(["FILE", "HASH", "SIZE"], rows, right=(2,))))
    extra = card.get("extra")
    if isinstance(extra, dict):
        alloc = extra.get("rank_allocation")
        if isinstance(alloc, dict) and alloc:
            lines.append("rank allocation:")
            lines.append(indent(_rank_table(alloc)))
        rest = {k: v for k, v in extra.items() if not (k == "rank_allocation" and isinstance(v, dict) and v)}
        if rest:
            lines.append("extra:")
            lines += [f"  {k}: {value(v)}" for k, v in rest.items()]
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    entry = resolve(store, args.name, args.version)
    card = entry.card
    if not isinstance(card, dict):
        raise AdapterHubError(f"{entry.path}: the adapter card is not a JSON object")
    versions = store.versions(entry.name)
    if args.json:
        print_json({"name": entry.name, "version": entry.version, "versions": versions,
                    "path": str(entry.path), "card": card})
        return 0
    lines = _show_identity(entry, card, versions) + _show_numbers(card) + _show_files_and_extra(entry, card)
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------------------------------
# rm
# ----------------------------------------------------------------------------------------------------
def cmd_rm(args: argparse.Namespace) -> int:
    # --yes is accepted for scripts; no confirmation is asked either way.
    store = open_store(args)
    name, ref_version = split_ref(args.name)
    version = None
    if ref_version is not None or args.version is not None:
        version = resolve(store, args.name, args.version).version
    removed = store.remove(name, version)
    for e in removed:
        print(f"removed {e.ref} ({e.path})")
    left = store.versions(name)
    if left:
        print(f"{name}: {', '.join(f'v{v}' for v in left)} remain")
    return 0


# ----------------------------------------------------------------------------------------------------
# parsers
# ----------------------------------------------------------------------------------------------------
def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``list``, ``show`` and ``rm`` to the main parser's sub-commands."""
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
