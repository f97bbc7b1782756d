"""Pull adapters from a Hub: download into huggingface_hub's cache (adapter files only, never pickles), copy to a
staging dir, check every file's sha256 against the card, and only then store them (atomically). The hub client
moves directories only; loading into a model (fetch -> stage -> read -> attach) is the model layer's
:mod:`adapterhub.model.hub_io`."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..files.adapter_dir import sha256_file
from ..files.card import AdapterCard
from ..errors import AdapterFileError, HubError
from ..names import validate_name, validate_repo_id
from .layout import (ADAPTER_FILES, CARD_FILE, INDEX_FILE, PLAIN_FILES, README_FILE, REPO_FILES, SOURCE_FILE,
                     check_listing, read_index, verify_adapter_dir)
from .transport import hub_errors, make_api, progress_bar, resolve_endpoint, transfer_settings


@dataclasses.dataclass(frozen=True)
class FetchedAdapter:
    """One adapter downloaded into the cache (not yet verified)."""

    name: str
    subfolder: str       # "" for a single-adapter repo
    directory: Path      # in huggingface_hub's cache
    repo_id: str
    commit: str
    endpoint: str
    plain: bool = False  # a plain peft adapter (no card, no head): read onto a base by the model layer

    @property
    def source(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "commit": self.commit, "subfolder": self.subfolder,
                "endpoint": self.endpoint}


def _select(repo_id: str, present: set[str], adapters: str | Sequence[str] | None,
            index: dict[str, Any] | None) -> list[tuple[str | None, str]]:
    """[(name or None if unknown yet, subfolder)] to fetch."""
    wanted = [adapters] if isinstance(adapters, str) else (list(adapters) if adapters is not None else None)
    if wanted is not None:
        for w in wanted:
            validate_name(w)
    if index is None:
        return [(None, "")]
    available = list(index["adapters"])
    if wanted is None:
        wanted = available
    missing = [w for w in wanted if w not in index["adapters"]]
    if missing:
        raise HubError(f"{repo_id} has no adapter(s) {missing}; it holds {available}")
    if not wanted:
        raise HubError(f"{repo_id} lists no adapters in {INDEX_FILE}")
    return [(w, index["adapters"][w]["subfolder"]) for w in dict.fromkeys(wanted)]


def fetch(repo_id: str, revision: str | None = None, adapters: str | Sequence[str] | None = None, *,
          token: str | bool | None = None, endpoint: str | None = None, cache_dir: str | os.PathLike | None = None,
          progress: bool = True, plain_ok: bool = False) -> list[FetchedAdapter]:
    """Download the chosen adapters of ``repo_id@revision`` into huggingface_hub's cache (no checks yet beyond the
    file listing: see :func:`verify_adapter_dir`). Only the adapter files are fetched - never pickles.
    ``plain_ok``: a plain peft repo (config + safetensors weights, no card) is fetched too, named after the repo."""
    from huggingface_hub import snapshot_download

    validate_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    if revision is not None and (not isinstance(revision, str) or not revision or ".." in revision
                                 or revision.startswith("/")):
        raise HubError(f"bad revision {revision!r}")
    api = make_api(endpoint, token)
    cache = str(cache_dir) if cache_dir is not None else None
    with transfer_settings(endpoint, progress), hub_errors(repo_id, endpoint, token, revision):
        info = api.model_info(repo_id, revision=revision)
        commit = info.sha
        present = {s.rfilename for s in info.siblings or []}
        index = read_index(api, repo_id, commit, cache) if INDEX_FILE in present else None
        chosen = _select(repo_id, present, adapters, index)
        plain = {sub: check_listing(repo_id, present, sub, plain_ok) for _, sub in chosen}
        patterns = [f"{sub}/{f}" if sub else f for _, sub in chosen for f in REPO_FILES + (README_FILE,)]
        folder = Path(snapshot_download(repo_id, revision=commit, allow_patterns=patterns, endpoint=endpoint,
                                        token=token, cache_dir=cache))
    out = []
    for name, sub in chosen:
        d = folder / sub if sub else folder
        if plain[sub]:
            out.append(FetchedAdapter(name=repo_id.rsplit("/", 1)[-1], subfolder=sub, directory=d, repo_id=repo_id,
                                      commit=commit, endpoint=endpoint, plain=True))
            continue
        if name is None:  # single-adapter repo: the name is the card's
            try:
                name = json.loads((d / CARD_FILE).read_text())["name"]
            except (OSError, ValueError, KeyError, TypeError):
                raise AdapterFileError(f"{repo_id}: unreadable {CARD_FILE}") from None
            if adapters is not None:
                wanted = [adapters] if isinstance(adapters, str) else list(adapters)
                if wanted != [name]:
                    raise HubError(f"{repo_id} holds one adapter, {name!r}; asked for {wanted}")
        out.append(FetchedAdapter(name=str(name), subfolder=sub, directory=d, repo_id=repo_id, commit=commit,
                                  endpoint=endpoint))
    return out


def stage(fetched: Sequence[FetchedAdapter], staging: Path, progress: bool) -> list[tuple[FetchedAdapter, Path,
                                                                                             AdapterCard | None]]:
    """Copy each fetched adapter out of the cache into ``staging`` and verify the copies against their cards (a
    plain peft adapter has none: its card is None, the model layer reads and completes it)."""
    out = []
    bar = progress_bar(len(fetched), "Verifying sha256") if progress else None
    try:
        for i, fa in enumerate(fetched):
            d = staging / f"{i}-{fa.name}"
            d.mkdir(parents=True)
            for f in PLAIN_FILES if fa.plain else REPO_FILES + (README_FILE,):
                if (fa.directory / f).is_file():
                    shutil.copyfile(fa.directory / f, d / f)  # follows the cache's symlinks
            where = f"{fa.repo_id}@{fa.commit[:10]}" + (f"/{fa.subfolder}" if fa.subfolder else "")
            card = None if fa.plain else verify_adapter_dir(d, where)
            if card is not None and card.name != fa.name:
                raise AdapterFileError(f"{where}: the index calls it {fa.name!r}, its card {card.name!r}")
            (d / SOURCE_FILE).write_text(json.dumps(fa.source, indent=2, sort_keys=True) + "\n")
            out.append((fa, d, card))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def store_staged(store, directory: Path, name: str):
    """Store atomically as the next version of ``name`` - or reuse the latest version when identical."""
    if name in store:
        latest = store.get(name)
        try:
            same = (latest.path / CARD_FILE).read_bytes() == (directory / CARD_FILE).read_bytes() and all(
                (latest.path / f).is_file() and sha256_file(latest.path / f) == sha256_file(directory / f)
                for f in ADAPTER_FILES)
        except OSError:
            same = False
        if same:
            return latest
    return store.put(directory, name)


def pull(repo_id: str, revision: str | None = None, adapters: str | Sequence[str] | None = None, *, store=None,
         token: str | bool | None = None, endpoint: str | None = None, cache_dir: str | os.PathLike | None = None,
         progress: bool = True) -> list:
    """``adapterhub pull REPO``: download, verify sha256, and store each chosen adapter (a new store version, or
    the latest one when identical). Returns the store entries. Nothing is stored unless every adapter verifies."""
    from ..store import Store

    store = store if store is not None else Store()
    fetched = fetch(repo_id, revision, adapters, token=token, endpoint=endpoint, cache_dir=cache_dir,
                    progress=progress)
    with store.scratch() as tmp:  # inside the store: a killed pull leaves nothing in the system temp dir
        staged = stage(fetched, Path(tmp), progress)
        return [store_staged(store, d, card.name) for _, d, card in staged]
