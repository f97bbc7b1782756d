"""What every sub-command shares: the ``--store`` option and store access, ``NAME@vN`` references, output
formatting (tables, sizes, times, JSON) and warnings.

Light on purpose: only the standard library and :mod:`adapterhub.errors` are imported here; the store is imported
when a handler first asks for it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import AdapterHubError

MISSING = "?"


# ----------------------------------------------------------------------------------------------------
# argument parsing
# ----------------------------------------------------------------------------------------------------
def store_option_parser() -> argparse.ArgumentParser:
    """The parent parser holding ``--store``, accepted before and after the sub-command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS,
                        help="the adapter store (default: $ADAPTERHUB_HOME/store)")
    return common


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


# ----------------------------------------------------------------------------------------------------
# store access and adapter references
# ----------------------------------------------------------------------------------------------------
def open_store(args: argparse.Namespace):
    """The store named by ``--store``, else the default one."""
    from ..store import Store

    root = getattr(args, "store", None)
    return Store(Path(root).expanduser()) if root else Store()


def split_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name@v3`` -> (name, version or None); ``name@`` is refused."""
    name, at, version = ref.strip().partition("@")
    if at and not version:
        raise AdapterHubError(f"bad adapter reference {ref!r}: expected NAME or NAME@vN")
    return name, (version if at else None)


def resolve(store, ref: str, version: str | None = None):
    """The store entry for ``ref`` (``NAME`` or ``NAME@vN``) and an optional ``--version``."""
    name, ref_version = split_ref(ref)
    if ref_version is not None and version is not None:
        from ..store import parse_version

        if parse_version(ref_version) != parse_version(version):
            raise AdapterHubError(f"{ref!r} and --version {version} name different versions")
    return store.get(name, ref_version if ref_version is not None else version)


# ----------------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------------
def human_count(n: Any) -> str:
    """``1536`` -> ``1.5K``; non-ints are shown as ``?``."""
    if not isinstance(n, int) or isinstance(n, bool):
        return MISSING
    for div, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def human_bytes(n: int) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n} B"


def short_time(created: Any) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM`` (UTC when it carries a zone); anything else as given."""
    if not isinstance(created, str) or not created:
        return MISSING
    try:
        t = _dt.datetime.fromisoformat(created)
    except ValueError:
        return created
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M")


def ellipsize(s: str, width: int) -> str:
    """Keep the tail (the informative part of paths and hub ids)."""
    return s if len(s) <= width else "..." + s[-(width - 3):]


def value(v: Any) -> str:
    """Strings as they are, anything else as JSON."""
    return v if isinstance(v, str) else json.dumps(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A plain-text table; columns listed in ``right`` are right-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)
