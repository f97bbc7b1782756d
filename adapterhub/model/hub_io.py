"""A model and the Hub: push adapters (write their directories, hand them to the hub client) and load Hub repos
(fetch -> verify -> store -> read -> attach, all or nothing). The hub client (:mod:`adapterhub.hub.push`,
:mod:`adapterhub.hub.pull`) only moves directories; it never sees the model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..files.card import check_base
from ..errors import AdapterNameError
from ..hub.pull import fetch, stage, store_staged
from ..hub.push import PushResult, push_dirs
from ..names import validate_name, validate_repo_id
from .loading import ReadAdapter, check_replacement, read_adapter
from .peft_import import read_plain
from .writing import write_adapter_files, write_plain_completion


def push(model, names: str | Sequence[str], repo_id: str, *, multi: bool | None = None, **options) -> PushResult:
    """Adapters of ``model`` into one repo in one commit: one adapter at the root (``multi=None``, the default for
    one name, unless the repo is already a multi-adapter repo), several in a folder each with an index. The
    options are :func:`adapterhub.hub.push.push_dirs`'s."""
    names = [names] if isinstance(names, str) else list(names)
    for n in names:
        model.entry(n)
    validate_repo_id(repo_id)
    from ..store import Store

    with Store().scratch() as tmp:  # inside adapterhub's home: a killed push leaves nothing in the system temp dir
        dirs = []
        for n in names:
            d = Path(tmp) / n
            d.mkdir()
            write_adapter_files(model, n, d)
            dirs.append(d)
        return push_dirs(dirs, repo_id, multi=multi, **options)


def complete_plain(model, directory: Path, name: str | None, fa, replace: bool, allow_base_mismatch: bool):
    """A staged plain peft adapter read onto this base (all checks; named ``name``, else after the repo), then
    given our head files and a card (peft's own files kept byte for byte), so that it is stored like any adapter.
    Returns the card."""
    got = read_plain(model, directory, name, allow_base_mismatch, replace=replace, trainable=True,
                     default_name=fa.name)
    return write_plain_completion(model, got, directory, {"hub_source": fa.source})


def load_from_hub(model, repo_id: str, revision: str | None = None, adapters: str | Sequence[str] | None = None,
                  name: str | None = None, allow_base_mismatch: bool = False, store=None,
                  token: str | bool | None = None, endpoint: str | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True, replace: bool = False,
                  trainable: bool = False):
    """``model.load_adapter("user/repo", ...)``: everything is checked before the model changes (sha256 of every
    file, names valid, not loaded and distinct, the base fingerprint); the adapters are stored, read back from the
    store and only then attached, all at once. ``adapters``: a name or names of a multi-adapter repo (default:
    all); ``name``: load one adapter under another name. Returns the entry, or a list of entries when the repo is a
    multi-adapter repo and ``adapters`` is not one name."""
    from ..store import Store

    store = store if store is not None else Store()
    fetched = fetch(repo_id, revision, adapters, token=token, endpoint=endpoint, cache_dir=cache_dir,
                    progress=progress, plain_ok=True)
    if name is not None and len(fetched) != 1:
        raise AdapterNameError(f"name= renames one adapter; {repo_id} gave {len(fetched)}: pass adapters=[...]")
    with store.scratch() as tmp:
        staged = stage(fetched, Path(tmp), progress)
        staged = [(fa, d, card if card is not None else complete_plain(model, d, name, fa, replace,
                                                                        allow_base_mismatch))
                  for fa, d, card in staged]
        chosen: list[str] = []
        for fa, _d, card in staged:
            nm = validate_name(name or card.name)
            if nm in chosen:
                raise AdapterNameError(f"{repo_id}: two adapters named {nm!r}")
            check_replacement(model, nm, card.task, card.labels, replace, repo_id)
            check_base(card, model.base_fingerprint, model.base_id,
                       repo_id + (f"/{fa.subfolder}" if fa.subfolder else ""), allow_base_mismatch)
            chosen.append(nm)
        entries = [store_staged(store, d, card.name) for _fa, d, card in staged]
    read: list[ReadAdapter] = [read_adapter(model, e.path, nm, allow_base_mismatch, replace=replace,
                                            trainable=trainable) for e, nm in zip(entries, chosen)]
    loaded = [model.attach_adapter(r.entry, r.units, r.head, replace=replace, rows=r.rows) for r in read]
    single = len(loaded) == 1 and (isinstance(adapters, str) or (adapters is None and not fetched[0].subfolder))
    return loaded[0] if single else loaded
