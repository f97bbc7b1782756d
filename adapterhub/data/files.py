"""Reading data files: csv/tsv, JSONL and JSON, plain or ``.bz2``/``.gz`` (by suffix); the shared opening and
decoding rules (CoNLL / CoNLL-U in :mod:`.conll`, Orange ``.tab`` in :mod:`.orange`). A file that does not decode
with its encoding is an error naming the file, the encoding and the line."""
from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import AdapterHubError


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, decompressing ``.bz2`` / ``.gz`` by suffix. ``newline=''`` so csv sees raw lines."""
    suffix = path.suffix.lower()
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding=encoding, newline="")
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _open_bytes(path: Path):
    suffix = path.suffix.lower()
    return bz2.open(path, "rb") if suffix == ".bz2" else gzip.open(path, "rb") if suffix == ".gz" else open(path, "rb")


def first_undecodable_line(path: Path, encoding: str) -> tuple[int, bytes] | None:
    """(line number, the bytes that fail) of the first line of ``path`` that does not decode, or None."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with _open_bytes(path) as f:
        for i, raw in enumerate(f, 1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as e:
                return i, raw[e.start:e.start + 4]
    return None


@contextlib.contextmanager
def decoding_errors(path: Path, encoding: str) -> Iterator[None]:
    """Turn a decoding failure inside the block into an error naming the file, its line and the encoding."""
    try:
        yield
    except UnicodeDecodeError as e:
        bad = first_undecodable_line(path, encoding)
        where, what = (f"{path}:{bad[0]}", bad[1]) if bad else (str(path), e.object[e.start:e.start + 4])
        raise AdapterHubError(f"{where}: not valid {encoding} text ({what!r}); set the data source's 'encoding' to "
                              "the file's encoding (e.g. encoding: latin-1)") from None


def inner_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".bz2", ".gz"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


class FieldSizeLimit:
    """Raise csv's per-field limit for long documents (20newsgroups posts), restoring it afterwards."""

    def __enter__(self):
        self.old = csv.field_size_limit()
        csv.field_size_limit(max(self.old, 2 ** 31 - 1))

    def __exit__(self, *exc):
        csv.field_size_limit(self.old)


def iter_delimited(path: Path, delimiter: str, encoding: str) -> Iterator[tuple[int, dict]]:
    """Rows of a csv/tsv file with a header line, as (line number, {column: value})."""
    kind = "tsv" if delimiter == "\t" else "csv"
    with FieldSizeLimit(), open_text(path, encoding) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        with decoding_errors(path, encoding):
            try:
                if not reader.fieldnames:
                    raise AdapterHubError(f"{path}: empty file, expected a header row of column names")
                for row in reader:
                    if None in row:  # more cells than header columns
                        raise AdapterHubError(f"{path}:{reader.line_num}: row has more cells than the header's "
                                              f"{len(reader.fieldnames)} columns {reader.fieldnames}")
                    yield reader.line_num, row
            except csv.Error as e:
                raise AdapterHubError(f"{path}:{reader.line_num}: malformed {kind}: {e}") from e


def iter_jsonl(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    with open_text(path, encoding) as f, decoding_errors(path, encoding):
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
    with open_text(path, encoding) as f, decoding_errors(path, encoding):
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
