"""Adapter name rules, shared by the registry, the store, recipes and the Hub client."""
from __future__ import annotations

import os
import re

from .errors import AdapterNameError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_LEN = 64


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid adapter name, else raise :class:`AdapterNameError` saying why."""
    if not isinstance(name, str):
        raise AdapterNameError(f"adapter name must be a string, got {type(name).__name__}")
    if not name:
        raise AdapterNameError("adapter name is empty")
    if len(name) > MAX_LEN:
        raise AdapterNameError(f"adapter name is too long: {len(name)} characters; the limit is {MAX_LEN}")
    if any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)):
        raise AdapterNameError(f"adapter name {name!r} contains a path separator")
    if ".." in name:
        raise AdapterNameError(f"adapter name {name!r} contains '..'")
    if not NAME_RE.match(name):
        raise AdapterNameError(f"adapter name {name!r} may only hold letters, digits, '_' and '-', "
                               "starting with a letter or digit")
    return name
