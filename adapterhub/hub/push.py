"""Push adapters to a Hub in one commit (all files or none): a single adapter at the repo root, several in a
folder each plus ``adapterhub_index.json`` (see :mod:`.layout`)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

from ..files.card import AdapterCard
from ..errors import AdapterNameError, HubError
from ..names import validate_repo_id
from .layout import (ADAPTER_FILES, CARD_FILE, INDEX_FILE, INDEX_FORMAT, INDEX_VERSION, README_FILE, REPO_FILES,
                     index_entry, read_index, verify_adapter_dir)
from .modelcard import render_index_card, render_model_card
from .transport import hub_errors, http_status, make_api, progress_bar, resolve_endpoint, transfer_settings


@dataclasses.dataclass(frozen=True)
class PushResult:
    repo_id: str
    commit: str          # the commit id the push created (or the head, when nothing changed)
    revision: str        # the branch pushed to
    url: str
    adapters: list[str]  # names pushed
    endpoint: str


def push_dirs(directories: Sequence[str | os.PathLike], repo_id: str, *, multi: bool | None = None,
              private: bool = False, revision: str | None = None, commit_message: str | None = None,
              token: str | bool | None = None, endpoint: str | None = None, progress: bool = True,
              datasets: Sequence[str] | None = None) -> PushResult:
    """Push saved adapter directories (``save_adapter`` output or store entries) in one commit.

    ``multi``: one folder per adapter plus an index (default: when more than one directory, or when the repo is
    already a multi-adapter repo). A single adapter goes to the repo root. ``revision``: the branch (created from
    ``main`` when missing). The repo is created when missing (``private`` applies only then). ``datasets``: Hub
    dataset ids for the README metadata (default: the card's ``extra["datasets"]``, if any)."""
    validate_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    branch = revision or "main"
    if not directories:
        raise HubError("nothing to push")
    items = _checked_items(directories, datasets, progress)
    names = [c.name for _, c in items]
    multi_requested = multi if multi is not None else len(items) > 1
    if not multi_requested and len(items) > 1:
        raise HubError("several adapters need multi=True (one folder each)")

    from huggingface_hub.errors import HfHubHTTPError

    api = make_api(endpoint, token)
    with transfer_settings(endpoint, progress), hub_errors(repo_id, endpoint, token, branch):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        for attempt in range(3):
            info = api.model_info(repo_id, revision=branch)
            head = info.sha
            present = {s.rfilename for s in info.siblings or []}
            if multi is False and INDEX_FILE in present:
                raise HubError(f"{repo_id}@{branch} is a multi-adapter repo: push with multi=True")
            if multi_requested or INDEX_FILE in present:
                ops = _multi_operations(api, repo_id, branch, head, present, items)
            else:
                ops = _single_operations(repo_id, items[0])
            message = commit_message or (f"Upload adapter {names[0]} with adapterhub" if len(names) == 1 else
                                         f"Upload adapters {', '.join(names)} with adapterhub")
            try:
                ci = api.create_commit(repo_id, ops, commit_message=message, revision=branch, parent_commit=head)
                break
            except HfHubHTTPError as e:
                if http_status(e) == 412 and attempt < 2:  # someone pushed meanwhile: re-read the index, retry
                    continue
                raise
    return PushResult(repo_id=repo_id, commit=ci.oid, revision=branch, url=f"{endpoint}/{repo_id}", adapters=names,
                      endpoint=endpoint)


def _checked_items(directories: Sequence[str | os.PathLike], datasets: Sequence[str] | None,
                   progress: bool) -> list[tuple[Path, AdapterCard]]:
    """Verify each directory against its card; names must differ. ``datasets`` go into the cards' ``extra``
    (for the README and the index only: the card file is pushed as it is)."""
    items: list[tuple[Path, AdapterCard]] = []
    bar = progress_bar(len(directories) * len(ADAPTER_FILES), f"Checking {len(directories)} adapter(s)") \
        if progress else None
    try:
        for d in directories:
            d = Path(d)
            items.append((d, verify_adapter_dir(d)))
            if bar is not None:
                bar.update(len(ADAPTER_FILES))
    finally:
        if bar is not None:
            bar.close()
    if datasets:
        if isinstance(datasets, str):
            datasets = [datasets]
        for _, card in items:
            card.extra = {**(card.extra or {}), "datasets": list(datasets)}
    names = [c.name for _, c in items]
    if len(set(names)) != len(names):
        raise AdapterNameError(f"adapter names pushed together must differ, got {names}")
    return items


def _single_operations(repo_id: str, item: tuple[Path, AdapterCard]) -> list:
    """One adapter at the repo root."""
    from huggingface_hub import CommitOperationAdd

    d, card = item
    ops = [CommitOperationAdd(f, str(d / f)) for f in REPO_FILES]
    ops.append(CommitOperationAdd(README_FILE, render_model_card(card.to_dict(), repo_id, d).encode()))
    return ops


def _multi_operations(api, repo_id: str, branch: str, head: str, present: set[str],
                      items: list[tuple[Path, AdapterCard]]) -> list:
    """A folder per adapter, added to the repo's index (read at ``head``), plus the index and the root README."""
    from huggingface_hub import CommitOperationAdd

    if CARD_FILE in present and INDEX_FILE not in present:
        raise HubError(f"{repo_id}@{branch} holds a single adapter at its root; push several adapters "
                       f"to another repo (or another branch)")
    index = read_index(api, repo_id, head) if INDEX_FILE in present else \
        {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "adapters": {}}
    ops = []
    for d, card in items:
        sub = card.name
        ops += [CommitOperationAdd(f"{sub}/{f}", str(d / f)) for f in REPO_FILES]
        ops.append(CommitOperationAdd(f"{sub}/{README_FILE}",
                                      render_model_card(card.to_dict(), repo_id, d, sub).encode()))
        index["adapters"][card.name] = index_entry(card, sub, d)
    index["adapters"] = dict(sorted(index["adapters"].items()))
    ops.append(CommitOperationAdd(INDEX_FILE, (json.dumps(index, indent=2) + "\n").encode()))
    cards = {n: {"name": n, **e} for n, e in index["adapters"].items()}
    ops.append(CommitOperationAdd(README_FILE, render_index_card(repo_id, index, cards).encode()))
    return ops


def push_dir(directory: str | os.PathLike, repo_id: str, **kwargs) -> PushResult:
    """Push one saved adapter directory (or store entry path). See :func:`push_dirs` for the options."""
    return push_dirs([directory], repo_id, **kwargs)
