"""Reading data files: csv/tsv, JSONL, JSON, CoNLL and Orange ``.tab``, plain or ``.bz2``/``.gz`` (by suffix)."""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import AdapterHubError


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, decompressing ``.bz2`` / ``.gz`` by suffix. ``newline=''`` so csv sees raw lines."""
    suffix = path.suffix.lower()
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding=encoding, newline="")
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def inner_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".bz2", ".gz"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""




class _FieldSizeLimit:
    """Raise csv's per-field limit for long documents (20newsgroups posts), restoring it afterwards."""

    def __enter__(self):
        self.old = csv.field_size_limit()
        csv.field_size_limit(max(self.old, 2 ** 31 - 1))

    def __exit__(self, *exc):
        csv.field_size_limit(self.old)


def iter_delimited(path: Path, delimiter: str, encoding: str) -> Iterator[tuple[int, dict]]:
    """Rows of a csv/tsv file with a header line, as (line number, {column: value})."""
    with _FieldSizeLimit(), _open_text(path, encoding) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise AdapterHubError(f"{path}: empty file, expected a header row of column names")
        try:
            for row in reader:
                if None in row:  # more cells than header columns
                    raise AdapterHubError(f"{path}:{reader.line_num}: row has more cells than the header's "
                                          f"{len(reader.fieldnames)} columns {reader.fieldnames}")
                yield reader.line_num, row
        except csv.Error as e:
            raise AdapterHubError(f"{path}:{reader.line_num}: malformed {('tsv' if delimiter == chr(9) else 'csv')}"
                                  f": {e}") from e


def iter_jsonl(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    with _open_text(path, encoding) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise AdapterHubError(f"{path}:{i}: invalid JSON: {e.msg}") from e
            if not isinstance(row, dict):
                raise AdapterHubError(f"{path}:{i}: each JSONL line must be an object, got {type(row).__name__}")
            yield i, row


def iter_json(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    with _open_text(path, encoding) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise AdapterHubError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise AdapterHubError(f"{path}: a JSON data file must hold a list of objects (or {{'data': [...]}})")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise AdapterHubError(f"{path}: item {i} must be an object, got {type(row).__name__}")
        yield i, row


def read_conll(path: Path, encoding: str = "utf-8", limit: int | None = None) -> list[dict]:
    """CoNLL-style file: one ``token<TAB>tag`` (or ``token tag``; extra middle columns ignored, the tag
    is the last column) per line, a blank (or whitespace-only) line between sentences; ``-DOCSTART-``
    lines are skipped. Returns ``[{"tokens": [...], "tags": [...]}]``."""
    out: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    with _open_text(path, encoding) as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    out.append({"tokens": tokens, "tags": tags})
                    tokens, tags = [], []
                    if limit is not None and len(out) >= limit:
                        return out
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if parts[0] == "-DOCSTART-":
                continue
            if len(parts) < 2 or not parts[0] or not parts[-1]:
                raise AdapterHubError(f"{path}:{i}: expected 'token<TAB>tag' (or 'token tag'), got {line!r}")
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        out.append({"tokens": tokens, "tags": tags})
    return out


def read_orange_tab(path: Path, encoding: str = "utf-8") -> tuple[list[dict], list[str], list[str]]:
    """Orange ``.tab`` file: three header rows (names, types, flags), then tab-separated rows.
    Returns (rows as {name: value}, the string-typed column names, the class-flagged column names)."""
    with _FieldSizeLimit(), _open_text(path, encoding) as f:
        reader = csv.reader(f, dialect=csv.excel_tab)
        try:
            names = next(reader)
            types = next(reader)
            flags = next(reader)
        except StopIteration:
            raise AdapterHubError(f"{path}: an Orange .tab file needs 3 header rows (names, types, flags)") from None
        types += [""] * (len(names) - len(types))
        flags += [""] * (len(names) - len(flags))
        string_cols = [n for n, t in zip(names, types) if t.strip().lower() in ("s", "string", "text")]
        class_cols = [n for n, fl in zip(names, flags) if "class" in fl.split() or fl.strip() == "c"]
        rows = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) > len(names):
                raise AdapterHubError(f"{path}:{reader.line_num}: {len(row)} cells, header has {len(names)}")
            rows.append(dict(zip(names, row + [""] * (len(names) - len(row)))))
    return rows, string_cols, class_cols
