"""Orange ``.tab`` files (``type: tab``): three header rows (column names, types, flags), then tab-separated rows.

The header says which column is which, and the default text and label columns come from it, never from the column
order: the text is the string column flagged ``include=True`` (Orange's text-mining marker), else the only string
column with no role (``meta``, ``class``, ``ignore``); the label is the column flagged ``class``. When the header
does not single one out (two ``include=True`` columns, several plain string columns, no class column) the source is
refused with the candidates listed: set ``text_field`` / ``label_field``.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from ..errors import AdapterHubError
from .files import FieldSizeLimit, decoding_errors, open_text

STRING_TYPES = ("s", "string", "text")
ROLES = {"c": "class", "class": "class", "m": "meta", "meta": "meta", "i": "ignore", "ignore": "ignore",
         "w": "weight", "weight": "weight"}


@dataclasses.dataclass(frozen=True)
class TabColumn:
    name: str
    type: str
    role: str | None          # class | meta | ignore | weight | None
    options: dict[str, str]   # key=value flags (include=True, title=True, ...)

    @property
    def is_string(self) -> bool:
        return self.type.strip().lower() in STRING_TYPES

    @property
    def included(self) -> bool:
        return self.options.get("include", "").lower() == "true"


@dataclasses.dataclass
class TabFile:
    path: Path
    columns: list[TabColumn]
    rows: list[tuple[int, dict[str, str]]]  # (line number, {column: value})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def _known(self, field: str, key: str) -> str:
        if field not in self.names:
            raise AdapterHubError(f"{self.path}: {key} {field!r} is not a column; the header has {self.names}")
        return field

    def text_field(self, given: str | None = None) -> str:
        """The text column: ``given``, else the one the header marks (see the module doc)."""
        if given is not None:
            return self._known(given, "text_field")
        strings = [c for c in self.columns if c.is_string and c.role != "ignore"]
        included = [c.name for c in strings if c.included]
        plain = [c.name for c in strings if c.role is None]
        for found, why in ((included, "flagged include=True"), (plain, "string columns with no role")):
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise AdapterHubError(f"{self.path}: the text column is ambiguous: {len(found)} {why} {found}; "
                                      "set the source's text_field to one of them")
        raise AdapterHubError(f"{self.path}: no text column: no string column is flagged include=True or has no "
                              f"role (string columns: {[c.name for c in strings]}, all {self._roles()}); set the "
                              "source's text_field")

    def label_field(self, given: str | None = None) -> str:
        """The label column: ``given``, else the one column flagged ``class``."""
        if given is not None:
            return self._known(given, "label_field")
        classes = [c.name for c in self.columns if c.role == "class"]
        if len(classes) == 1:
            return classes[0]
        what = f"{len(classes)} columns {classes} are" if classes else "no column is"
        raise AdapterHubError(f"{self.path}: {what} flagged 'class' ({self._roles()}); set the source's label_field")

    def _roles(self) -> str:
        return ", ".join(f"{c.name}: {c.role or 'no role'}" for c in self.columns)


def _flags(cell: str, path: Path, name: str) -> tuple[str | None, dict[str, str]]:
    role, options = None, {}
    for tok in cell.split():
        if "=" in tok:
            k, _, v = tok.partition("=")
            options[k] = v
        elif tok.lower() in ROLES:
            role = ROLES[tok.lower()]
        else:
            raise AdapterHubError(f"{path}:3: unknown flag {tok!r} of column {name!r} (known: class, meta, ignore, "
                                  "weight, key=value)")
    return role, options


def read_orange_tab(path: Path, encoding: str = "utf-8") -> TabFile:
    """The header's columns (name, type, role, options) and every non-blank row with its line number."""
    with FieldSizeLimit(), open_text(path, encoding) as f, decoding_errors(path, encoding):
        reader = csv.reader(f, dialect=csv.excel_tab)
        try:
            names, types, flags = next(reader), next(reader), next(reader)
        except StopIteration:
            raise AdapterHubError(f"{path}: an Orange .tab file needs 3 header rows (names, types, flags)") from None
        names = [n.strip() for n in names]
        types += [""] * (len(names) - len(types))
        flags += [""] * (len(names) - len(flags))
        columns = [TabColumn(n, t, *_flags(fl, path, n)) for n, t, fl in zip(names, types, flags)]
        rows = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) > len(names):
                raise AdapterHubError(f"{path}:{reader.line_num}: {len(row)} cells, the header has {len(names)}")
            rows.append((reader.line_num, dict(zip(names, row + [""] * (len(names) - len(row))))))
    return TabFile(path, columns, rows)
