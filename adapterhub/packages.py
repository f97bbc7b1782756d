"""Files shipped inside installed Python distributions (packaged base models, packaged data sets), one copy.

Distributions are found with :mod:`importlib.metadata`; they are never imported. Errors are
:class:`~adapterhub.errors.PackageFileError` naming the distribution, the file and the ``pip install`` fix;
callers prefix what they were looking for.
"""
from __future__ import annotations

import importlib.metadata as importlib_metadata
from pathlib import Path

from .errors import PackageFileError


def distribution(name: str) -> importlib_metadata.Distribution:
    """The installed distribution ``name``; :class:`PackageFileError` with the install command when missing."""
    try:
        return importlib_metadata.distribution(name)
    except importlib_metadata.PackageNotFoundError:
        raise PackageFileError(f"the distribution {name!r} is not installed; install it with: "
                               f"pip install --no-deps {name}") from None


def package_file(dist: str | importlib_metadata.Distribution, *parts: str) -> Path:
    """Absolute path of the file of ``dist`` (a name or a distribution) whose path ends with ``parts``.

    Looked up in the distribution's RECORD (the shortest matching path wins, so a full path matches exactly);
    without a RECORD, ``parts`` is taken as the path from the install root."""
    if isinstance(dist, str):
        dist = distribution(dist)
    name = dist.metadata["Name"] or "?"
    n = len(parts)
    if dist.files is not None:
        candidates = sorted((f for f in dist.files if tuple(f.parts[-n:]) == parts), key=lambda f: len(f.parts))
    else:
        candidates = ["/".join(parts)]
    for f in candidates:
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            return path.resolve()
    raise PackageFileError(f"file {'/'.join(parts)} not found in the installed distribution {name} {dist.version}; "
                           f"reinstall it with: pip install --force-reinstall --no-deps {name}")


__all__ = ["distribution", "package_file"]
