"""The local store: the embedded default hub.

Layout: ``<root>/<name>/v<N>/`` holds one adapter directory (``adapter_config.json``,
``adapter_model.safetensors``, ``adapter_card.json``, optional head files). Every write goes
through :func:`adapterhub.atomic.atomic_dir` (copy into a ``.tmp-*`` sibling, fsync, ``os.rename``), so
readers see either a whole version or none. Leftovers of writers that died (``.tmp-*`` entries whose owner process
is gone) are swept when a store is opened. Version numbers are never reused: ``<name>/.last-version`` records the
highest one ever issued, so a new version after ``rm`` of the latest gets a new number.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from . import paths
from .atomic import atomic_dir, discard, sweep_stale, tmp_path, write_text_atomic
from .files.card import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from .errors import AdapterFileError, AdapterNameError, StoreError, TargetExistsError
from .names import MAX_LEN as MAX_NAME_LEN, NAME_RE, validate_name  # noqa: F401  (re-exported)

REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
_VERSION_DIR_RE = re.compile(r"^v([1-9][0-9]*)$")
_VERSION_STR_RE = re.compile(r"^v?([1-9][0-9]*)$")
LAST_VERSION_FILE = ".last-version"
_SWEPT: set[Path] = set()  # stores swept by this process


def parse_version(version: int | str) -> int:
    """``3``, ``"3"`` or ``"v3"`` -> ``3``. Raises :class:`StoreError` for anything else (including < 1)."""
    if isinstance(version, int) and not isinstance(version, bool):
        if version >= 1:
            return version
    elif isinstance(version, str):
        m = _VERSION_STR_RE.match(version.strip())
        if m:
            return int(m.group(1))
    raise StoreError(f"bad version {version!r}: expected a positive integer like 3, '3' or 'v3'")


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into the existing dir ``dst``, following symlinks; stops at the first error."""
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        rel = Path(dirpath).relative_to(src)
        for d in dirnames:
            (dst / rel / d).mkdir()
        for f in filenames:
            shutil.copy2(Path(dirpath) / f, dst / rel / f)


@dataclasses.dataclass(frozen=True)
class StoreEntry:
    """One stored adapter version. ``card`` (the parsed ``adapter_card.json``) is read on first use."""

    name: str
    version: int
    path: Path

    @functools.cached_property
    def card(self) -> dict[str, Any]:
        path = self.path / CARD_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise AdapterFileError(f"{self.path}: missing {CARD_FILE} (the adapter card)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AdapterFileError(f"{path}: not valid JSON ({e})") from None

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


class Store:
    """Versioned adapters under ``root`` (default :func:`adapterhub.paths.store_dir`)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else paths.store_dir()
        if self.root not in _SWEPT:
            _SWEPT.add(self.root)
            self.sweep()

    def sweep(self) -> list[Path]:
        """Remove the leftovers of writers that died (temp versions, trash, scratch dirs); returns them."""
        if not self.root.is_dir():
            return []
        done = sweep_stale(self.root)
        for d in self.root.iterdir():
            if d.is_dir() and NAME_RE.match(d.name):
                done += sweep_stale(d)
        return done

    @contextlib.contextmanager
    def scratch(self):
        """A private temp directory inside the store's root (not the system temp dir: a killed process leaves
        it where the next open of the store sweeps it), removed on exit."""
        self.root.mkdir(parents=True, exist_ok=True)
        d = tmp_path(self.root / "scratch")
        d.mkdir()
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def last_issued(self, name: str) -> int:
        """The highest version number ever issued for ``name`` (0 if none)."""
        try:
            return int((self.root / name / LAST_VERSION_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _issued(self, name: str, v: int) -> None:
        """Record ``v`` as issued once it is in place: an ``rm`` of it later cannot hand the number out again."""
        if v > self.last_issued(name):
            write_text_atomic(self.root / name / LAST_VERSION_FILE, f"{v}\n")

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def _entry(self, name: str, version: int) -> StoreEntry:
        return StoreEntry(name, version, self.root / name / f"v{version}")

    def names(self) -> list[str]:
        """Names with at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and NAME_RE.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        """Stored versions of ``name``, ascending; ``[]`` if none."""
        d = self.root / validate_name(name)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            m = _VERSION_DIR_RE.match(p.name)
            if m and p.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    def list(self) -> list[StoreEntry]:
        """Every version of every adapter, sorted by (name, version)."""
        return [self._entry(n, v) for n in self.names() for v in self.versions(n)]

    def get(self, name: str, version: int | str | None = None) -> StoreEntry:
        """The given version of ``name`` (the latest when ``None``)."""
        vs = self.versions(name)
        if not vs:
            raise StoreError(f"no adapter named {name!r} in store {self.root}; have: {self.names()}")
        if version is None:
            return self._entry(name, vs[-1])
        v = parse_version(version)
        if v not in vs:
            raise StoreError(f"no version {v} of {name!r}; have {vs}")
        return self._entry(name, v)

    def put(self, src_dir: Path, name: str) -> StoreEntry:
        """Copy ``src_dir`` into the store as the next version of ``name``; atomic."""
        src = Path(src_dir)
        if not src.is_dir():
            raise StoreError(f"cannot store {src}: not a directory")
        for f in REQUIRED_FILES:
            if not (src / f).is_file():
                raise StoreError(f"cannot store {src}: missing {f}")
        return self.put_with(name, lambda tmp: _copy_tree(src, tmp), what=str(src))

    def put_with(self, name: str, write: Callable[[Path], None], what: str | None = None) -> StoreEntry:
        """Store the next version of ``name`` by running ``write`` on the new version's (empty, temporary)
        directory: the files are written once, in place, then renamed into view; atomic. ``write`` must leave
        the required files there (else nothing is stored)."""
        validate_name(name)
        v = max(self.versions(name) + [self.last_issued(name)]) + 1
        fresh = [d for d in (self.root / name, self.root) if not d.exists()]
        while True:
            target = self.root / name / f"v{v}"
            try:
                with atomic_dir(target) as tmp:
                    write(tmp)
                    missing = [f for f in REQUIRED_FILES if not (tmp / f).is_file()]
                    if missing:
                        raise StoreError(f"cannot store {what or name!r}: missing {', '.join(missing)}")
            except TargetExistsError:  # lost a race with another writer: take the next number
                v += 1
                continue
            except OSError as e:
                self._unmake(name, fresh)
                raise StoreError(f"could not store {what or name!r} as {name!r} ({target}): "
                                 f"{e.strerror or e}") from e
            except BaseException:
                self._unmake(name, fresh)
                raise
            self._issued(name, v)
            return self._entry(name, v)

    @staticmethod
    def _unmake(name: str, fresh: list[Path]) -> None:
        """After a failed first write: remove the directories it created (when still empty)."""
        for d in fresh:
            with contextlib.suppress(OSError):
                d.rmdir()

    def remove(self, name: str, version: int | str | None = None) -> list[StoreEntry]:
        """Remove one version of ``name`` (all when ``None``); returns what was removed."""
        entries = [self.get(name, version)] if version is not None else [self._entry(name, v) for v in self.versions(name)]
        if not entries:
            raise StoreError(f"no adapter named {name!r} in store {self.root}; have: {self.names()}")
        for e in entries:
            with contextlib.suppress(AdapterFileError):
                e.card  # load now: the files are about to go
            try:
                discard(e.path)
            except OSError as err:
                raise StoreError(f"could not remove {e.path}: {err}") from err
        if version is None:
            with contextlib.suppress(OSError):  # fails harmlessly if a writer is busy in there
                (self.root / name).rmdir()
        return entries

    def __contains__(self, name: object) -> bool:
        try:
            return bool(self.versions(name))  # type: ignore[arg-type]
        except AdapterNameError:
            return False
