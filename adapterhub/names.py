"""Adapter name rules, shared by the registry and the store."""
from __future__ import annotations

import re

from .errors import AdapterNameError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_LEN = 64


def validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise AdapterNameError(f"adapter name must be a string, got {type(name).__name__}")
    if not name:
        raise AdapterNameError("adapter name is empty")
    if len(name) > MAX_LEN:
        raise AdapterNameError(f"adapter name is {len(name)} characters long; the limit is {MAX_LEN}")
    if "/" in name or "\\" in name or ".." in name:
        raise AdapterNameError(f"adapter name {name!r} contains a path separator or '..'")
    if not NAME_RE.match(name):
        raise AdapterNameError(f"adapter name {name!r} may only hold letters, digits, '_' and '-', "
                               "starting with a letter or digit")
    return name
