"""Push adapters to a Hub and pull them back, through ``huggingface_hub`` (public Hub or ``adapterhub hub serve``).

Repo layouts:

- one adapter: its files at the repo root (``adapter_config.json``, ``adapter_model.safetensors``,
  ``adapterhub_head.json``, ``adapterhub_head.safetensors``, ``adapter_card.json``, ``README.md``) - loadable by
  ``peft.PeftModel.from_pretrained(base, repo_id)``;
- several adapters: one folder per adapter (same files), ``adapterhub_index.json`` at the root listing them and
  a root ``README.md`` (``PeftModel.from_pretrained(base, repo_id, subfolder=name)``).

A push is one commit (all files or none). A pull downloads into huggingface_hub's cache, copies the chosen
adapters to a staging dir, checks every file's sha256 against the adapter card and (when loading into a model)
the base fingerprint and the names, and only then stores them (atomically) and attaches them (all or none).
Only safetensors are fetched: pickle files are never downloaded, and a repo holding only pickle weights is refused.

Endpoint: ``endpoint=`` > ``$HF_ENDPOINT`` (read at call time) > huggingface_hub's default. Token: ``token=`` >
huggingface_hub's (``$HF_TOKEN``, ``hf auth login``). Tokens are never printed or put in error messages.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from ..adapter_files import sha256_file
from ..card import CARD_FILE, CONFIG_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, WEIGHTS_FILE, AdapterCard
from ..errors import AdapterFileError, AdapterNameError, BaseMismatchError
from ..names import looks_like_repo_id, validate_name, validate_path_in_repo, validate_repo_id
from ..pickles import listing, refuse_pickle_weights
from ..version import __version__
from .errors import HubError
from .modelcard import render_index_card, render_model_card

INDEX_FILE = "adapterhub_index.json"
README_FILE = "README.md"
SOURCE_FILE = "hub_source.json"  # written into pulled store entries: where they came from
INDEX_FORMAT = "adapterhub-index"
INDEX_VERSION = 1
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE)  # hashed in the card
REPO_FILES = ADAPTER_FILES + (CARD_FILE,)
PUBLIC_HOSTS = ("huggingface.co", "hf.co")
_SETTINGS_LOCK = threading.RLock()


# ----------------------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PushResult:
    repo_id: str
    commit: str          # the commit id the push created (or the head, when nothing changed)
    revision: str        # the branch pushed to
    url: str
    adapters: list[str]  # names pushed
    endpoint: str


@dataclasses.dataclass(frozen=True)
class FetchedAdapter:
    """One adapter downloaded into the cache (not yet verified)."""

    name: str
    subfolder: str       # "" for a single-adapter repo
    directory: Path      # in huggingface_hub's cache
    repo_id: str
    commit: str
    endpoint: str

    @property
    def source(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "commit": self.commit, "subfolder": self.subfolder,
                "endpoint": self.endpoint}


# ----------------------------------------------------------------------------------------------------------------
# plumbing
# ----------------------------------------------------------------------------------------------------------------
def resolve_endpoint(endpoint: str | None = None) -> str:
    if endpoint is None:
        endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    endpoint = endpoint.rstrip("/")
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise HubError(f"bad hub endpoint {endpoint!r}: expected http(s)://host[:port]")
    return endpoint


def is_public_hub(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in PUBLIC_HOSTS)


def _api(endpoint: str, token: str | bool | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="adapterhub", library_version=__version__)


def _have_token(token: str | bool | None) -> bool:
    if token is False:
        return False
    if isinstance(token, str):
        return bool(token)
    from huggingface_hub import get_token

    return get_token() is not None


@contextlib.contextmanager
def _transfer_settings(endpoint: str, progress: bool) -> Iterator[None]:
    """Xet off for self-hosted hubs (they speak plain LFS); progress bars off when asked. Restored after."""
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    with _SETTINGS_LOCK:
        has_xet_flag = hasattr(constants, "HF_HUB_DISABLE_XET")  # huggingface_hub >= 0.32
        old_xet = getattr(constants, "HF_HUB_DISABLE_XET", None)
        bars_were_off = are_progress_bars_disabled()
        if has_xet_flag and not is_public_hub(endpoint):
            constants.HF_HUB_DISABLE_XET = True
        if not progress and not bars_were_off:
            disable_progress_bars()
        try:
            yield
        finally:
            if has_xet_flag:
                constants.HF_HUB_DISABLE_XET = old_xet
            if not progress and not bars_were_off:
                enable_progress_bars()


@contextlib.contextmanager
def _hub_errors(repo_id: str, endpoint: str, token: str | bool | None, revision: str | None = None,
                what: str = "") -> Iterator[None]:
    """huggingface_hub / network errors -> :class:`HubError` with a plain message (never the token)."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    # names moved between huggingface_hub releases
    RemoteEntryNotFoundError = getattr(hf_errors, "RemoteEntryNotFoundError", None) or hf_errors.EntryNotFoundError
    OfflineModeIsEnabled = getattr(hf_errors, "OfflineModeIsEnabled", None) or _Never

    try:
        yield
    except (HubError, AdapterFileError, AdapterNameError, BaseMismatchError):
        raise
    except OfflineModeIsEnabled:
        raise HubError(f"offline mode is on (HF_HUB_OFFLINE=1): it blocks every Hub request, also to a hub on this "
                       f"machine; set HF_HUB_OFFLINE=0 to reach {endpoint}") from None
    except RevisionNotFoundError:
        raise HubError(f"revision {revision or 'main'!r} not found in {repo_id} on {endpoint}") from None
    except RemoteEntryNotFoundError as e:
        raise HubError(f"{what or 'a file'} not found in {repo_id}@{revision or 'main'} on {endpoint} "
                       f"({_server_message(e)})") from None
    except RepositoryNotFoundError as e:
        status = _status(e)
        if status == 401 and not _have_token(token):
            raise HubError(f"repository {repo_id} not found on {endpoint}, or it needs a token (it may be "
                           f"private, or this is a write): set HF_TOKEN or pass token=") from None
        raise HubError(f"repository {repo_id} not found on {endpoint} (if it is private, your token has no access "
                       f"to it)") from None
    except HfHubHTTPError as e:
        status = _status(e)
        if status == 401:
            if _have_token(token):
                raise HubError(f"{endpoint} refused the token (wrong or expired token)") from None
            raise HubError(f"{endpoint} needs a token for this: set HF_TOKEN or pass token=") from None
        if status == 403:
            raise HubError(f"{endpoint} refused access to {repo_id} ({_server_message(e)}): your token may lack "
                           f"write permission") from None
        raise HubError(f"hub request for {repo_id} failed (HTTP {status}): {_server_message(e)}") from None
    except ConnectionError as e:
        raise HubError(f"cannot reach the hub at {endpoint}: {e}") from None
    except Exception as e:
        name = type(e).__name__
        if any(k in name for k in ("ConnectError", "Timeout", "NetworkError", "RemoteProtocolError")):
            raise HubError(f"cannot reach the hub at {endpoint}: {name}: {e}") from None
        raise


class _Never(Exception):
    pass


def _status(e: Exception) -> int | None:
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None)


def _server_message(e: Exception) -> str:
    msg = getattr(e, "server_message", None)
    if msg:
        return str(msg).strip().splitlines()[0]
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _progress_bar(total: int, desc: str):
    from huggingface_hub.utils import tqdm

    return tqdm(total=total, desc=desc, unit="file")


# ----------------------------------------------------------------------------------------------------------------
# verification
# ----------------------------------------------------------------------------------------------------------------
def verify_adapter_dir(directory: Path, where: str | None = None) -> AdapterCard:
    """Check an adapter directory against its card: every adapter file is present, listed in the card's ``files``
    and has that sha256; the name is valid; weights are safetensors. Returns the card."""
    d = Path(directory)
    where = where or str(d)
    refuse_pickle_weights(listing(d), where)
    card = AdapterCard.read(d)
    validate_name(card.name)
    if not isinstance(card.files, dict):
        raise AdapterFileError(f"{where}: the card's 'files' is not a mapping")
    for fname in card.files:
        if not isinstance(fname, str) or "/" in fname or "\\" in fname or fname in ("", ".", ".."):
            raise AdapterFileError(f"{where}: the card lists a bad file name {fname!r}")
    for fname in ADAPTER_FILES:
        if fname not in card.files:
            raise AdapterFileError(f"{where}: the card has no sha256 for {fname}")
        path = d / fname
        if not path.is_file():
            raise AdapterFileError(f"{where}: missing {fname}")
        got = sha256_file(path)
        if got != card.files[fname]:
            raise AdapterFileError(f"{where}: {fname} has sha256 {got[:16]}..., the card says "
                                   f"{str(card.files[fname])[:16]}...: corrupted or tampered file, refused")
    return card


def check_base(model, card: AdapterCard, where: str, allow_base_mismatch: bool = False) -> None:
    """The same rule as ``AdapterModel.load_adapter``: architecture must match; weights too unless allowed."""
    fp = card.base_fingerprint or {}
    mine = model.base_fingerprint
    if fp.get("arch") != mine["arch"]:
        raise BaseMismatchError(
            f"{where}: adapter {card.name!r} was made for base {card.base_model!r} with another architecture "
            f"(fingerprint {fp.get('arch')} != {mine['arch']} of {model.base_id!r}); nothing was loaded")
    if fp.get("weights") != mine["weights"] and not allow_base_mismatch:
        raise BaseMismatchError(
            f"{where}: adapter {card.name!r} was made for base {card.base_model!r} whose weights differ from this "
            f"base {model.base_id!r} (same architecture); pass allow_base_mismatch=True to load it anyway")


# ----------------------------------------------------------------------------------------------------------------
# push
# ----------------------------------------------------------------------------------------------------------------
def _index_entry(card: AdapterCard, subfolder: str, directory: Path) -> dict[str, Any]:
    return {"subfolder": subfolder, "name": card.name, "method": card.method, "task": card.task,
            "labels": card.labels, "base_model": card.base_model, "base_fingerprint": card.base_fingerprint,
            "num_parameters": card.num_parameters, "num_head_parameters": card.num_head_parameters,
            "metrics": card.metrics, "extra": card.extra, "card_sha256": sha256_file(directory / CARD_FILE)}


def _read_index(api, repo_id: str, commit: str, cache_dir: str | None = None) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, INDEX_FILE, revision=commit, endpoint=api.endpoint, token=api.token,
                           cache_dir=cache_dir)
    return parse_index(Path(path).read_text(), repo_id)


def parse_index(text: str, repo_id: str) -> dict[str, Any]:
    """Parse and validate ``adapterhub_index.json``: names valid, subfolders plain relative paths."""
    try:
        index = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterFileError(f"{repo_id}: {INDEX_FILE} is not valid JSON ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("adapters"), dict):
        raise AdapterFileError(f"{repo_id}: {INDEX_FILE} has no 'adapters' mapping")
    for name, entry in index["adapters"].items():
        validate_name(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("subfolder"), str):
            raise AdapterFileError(f"{repo_id}: {INDEX_FILE}: adapter {name!r} has no subfolder")
        try:
            validate_path_in_repo(entry["subfolder"])
        except HubError as e:
            raise AdapterFileError(f"{repo_id}: {INDEX_FILE}: adapter {name!r}: {e}") from None
    return index


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
    items: list[tuple[Path, AdapterCard]] = []
    bar = _progress_bar(len(directories) * len(ADAPTER_FILES), f"Checking {len(directories)} adapter(s)") \
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
        for _, card in items:  # for the README and the index only: the card file is pushed as it is
            card.extra = {**(card.extra or {}), "datasets": list(datasets)}
    names = [c.name for _, c in items]
    if len(set(names)) != len(names):
        raise AdapterNameError(f"adapter names pushed together must differ, got {names}")
    multi_requested = multi if multi is not None else len(items) > 1
    if not multi_requested and len(items) > 1:
        raise HubError("several adapters need multi=True (one folder each)")

    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    api = _api(endpoint, token)
    with _transfer_settings(endpoint, progress), _hub_errors(repo_id, endpoint, token, branch):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        for attempt in range(3):
            info = api.model_info(repo_id, revision=branch)
            head = info.sha
            present = {s.rfilename for s in info.siblings or []}
            is_multi = multi_requested or INDEX_FILE in present
            if multi is False and INDEX_FILE in present:
                raise HubError(f"{repo_id}@{branch} is a multi-adapter repo: push with multi=True")
            ops = []
            if not is_multi:
                d, card = items[0]
                ops += [CommitOperationAdd(f, str(d / f)) for f in REPO_FILES]
                ops.append(CommitOperationAdd(README_FILE, render_model_card(card.to_dict(), repo_id, d).encode()))
            else:
                if CARD_FILE in present and INDEX_FILE not in present:
                    raise HubError(f"{repo_id}@{branch} holds a single adapter at its root; push several adapters "
                                   f"to another repo (or another branch)")
                index = _read_index(api, repo_id, head) if INDEX_FILE in present else \
                    {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "adapters": {}}
                for d, card in items:
                    sub = card.name
                    ops += [CommitOperationAdd(f"{sub}/{f}", str(d / f)) for f in REPO_FILES]
                    ops.append(CommitOperationAdd(f"{sub}/{README_FILE}",
                                                  render_model_card(card.to_dict(), repo_id, d, sub).encode()))
                    index["adapters"][card.name] = _index_entry(card, sub, d)
                index["adapters"] = dict(sorted(index["adapters"].items()))
                ops.append(CommitOperationAdd(INDEX_FILE, (json.dumps(index, indent=2) + "\n").encode()))
                cards = {n: {"name": n, **e} for n, e in index["adapters"].items()}
                ops.append(CommitOperationAdd(README_FILE, render_index_card(repo_id, index, cards).encode()))
            message = commit_message or (f"Upload adapter {names[0]} with adapterhub" if len(names) == 1 else
                                         f"Upload adapters {', '.join(names)} with adapterhub")
            try:
                ci = api.create_commit(repo_id, ops, commit_message=message, revision=branch, parent_commit=head)
                break
            except HfHubHTTPError as e:
                if _status(e) == 412 and attempt < 2:  # someone pushed meanwhile: re-read the index, retry
                    continue
                raise
    return PushResult(repo_id=repo_id, commit=ci.oid, revision=branch, url=f"{endpoint}/{repo_id}", adapters=names,
                      endpoint=endpoint)


def push_dir(directory: str | os.PathLike, repo_id: str, **kwargs) -> PushResult:
    """Push one saved adapter directory (or store entry path). See :func:`push_dirs` for the options."""
    return push_dirs([directory], repo_id, **kwargs)


def push_adapter(model, name: str, repo_id: str, *, private: bool = False, revision: str | None = None,
                 commit_message: str | None = None, token: str | bool | None = None, endpoint: str | None = None,
                 progress: bool = True, datasets: Sequence[str] | None = None) -> PushResult:
    """``model.push_to_hub(name, repo_id, ...)``: the adapter's PEFT files, head, card and a README, one commit.
    Into a multi-adapter repo, it is added to the index (its own folder)."""
    return push_adapters(model, [name], repo_id, multi=None, private=private, revision=revision,
                         commit_message=commit_message, token=token, endpoint=endpoint, progress=progress,
                         datasets=datasets)


def push_adapters(model, names: Sequence[str], repo_id: str, *, multi: bool | None = True, private: bool = False,
                  revision: str | None = None, commit_message: str | None = None, token: str | bool | None = None,
                  endpoint: str | None = None, progress: bool = True,
                  datasets: Sequence[str] | None = None) -> PushResult:
    """Several adapters of ``model`` into one repo (a folder each + index), in one commit. Adapters already in the
    repo's index and not pushed now are kept."""
    if isinstance(names, str):
        names = [names]
    for n in names:
        model.entry(n)
    validate_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="adapterhub-push-") as tmp:
        dirs = []
        for n in names:
            d = Path(tmp) / n
            d.mkdir()
            model.write_adapter_files(n, d)
            dirs.append(d)
        return push_dirs(dirs, repo_id, multi=multi, private=private, revision=revision,
                         commit_message=commit_message, token=token, endpoint=endpoint, progress=progress,
                         datasets=datasets)


# ----------------------------------------------------------------------------------------------------------------
# pull
# ----------------------------------------------------------------------------------------------------------------
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


def _check_listing(repo_id: str, present: set[str], sub: str) -> None:
    prefix = f"{sub}/" if sub else ""
    where = f"{repo_id}/{sub}" if sub else repo_id
    here = {p[len(prefix):] for p in present if p.startswith(prefix) and "/" not in p[len(prefix):]}
    refuse_pickle_weights(here, where, " (nothing was downloaded)")
    if prefix + CARD_FILE not in present:
        if prefix + CONFIG_FILE in present:
            raise AdapterFileError(f"{where}: a plain PEFT adapter without an adapterhub card ({CARD_FILE}); "
                                   f"adapterhub pulls only adapters pushed with their card and head")
        raise AdapterFileError(f"{where}: not an adapterhub repo (no {CARD_FILE} and no {INDEX_FILE})")
    missing = [f for f in REPO_FILES if prefix + f not in present]
    if missing:
        raise AdapterFileError(f"{where}: missing {', '.join(missing)}")


def fetch(repo_id: str, revision: str | None = None, adapters: str | Sequence[str] | None = None, *,
          token: str | bool | None = None, endpoint: str | None = None, cache_dir: str | os.PathLike | None = None,
          progress: bool = True) -> list[FetchedAdapter]:
    """Download the chosen adapters of ``repo_id@revision`` into huggingface_hub's cache (no checks yet beyond the
    file listing: see :func:`verify_adapter_dir`). Only the adapter files are fetched - never pickles."""
    from huggingface_hub import snapshot_download

    validate_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    if revision is not None and (not isinstance(revision, str) or not revision or ".." in revision
                                 or revision.startswith("/")):
        raise HubError(f"bad revision {revision!r}")
    api = _api(endpoint, token)
    cache = str(cache_dir) if cache_dir is not None else None
    with _transfer_settings(endpoint, progress), _hub_errors(repo_id, endpoint, token, revision):
        info = api.model_info(repo_id, revision=revision)
        commit = info.sha
        present = {s.rfilename for s in info.siblings or []}
        index = _read_index(api, repo_id, commit, cache) if INDEX_FILE in present else None
        chosen = _select(repo_id, present, adapters, index)
        for _, sub in chosen:
            _check_listing(repo_id, present, sub)
        patterns = [f"{sub}/{f}" if sub else f for _, sub in chosen for f in REPO_FILES + (README_FILE,)]
        folder = Path(snapshot_download(repo_id, revision=commit, allow_patterns=patterns, endpoint=endpoint,
                                        token=token, cache_dir=cache))
    out = []
    for name, sub in chosen:
        d = folder / sub if sub else folder
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


def _stage(fetched: Sequence[FetchedAdapter], staging: Path, progress: bool) -> list[tuple[FetchedAdapter, Path,
                                                                                             AdapterCard]]:
    """Copy each fetched adapter out of the cache into ``staging`` and verify the copies."""
    out = []
    bar = _progress_bar(len(fetched), "Verifying sha256") if progress else None
    try:
        for i, fa in enumerate(fetched):
            d = staging / f"{i}-{fa.name}"
            d.mkdir(parents=True)
            for f in REPO_FILES + (README_FILE,):
                if (fa.directory / f).is_file():
                    shutil.copyfile(fa.directory / f, d / f)  # follows the cache's symlinks
            where = f"{fa.repo_id}@{fa.commit[:10]}" + (f"/{fa.subfolder}" if fa.subfolder else "")
            card = verify_adapter_dir(d, where)
            if card.name != fa.name:
                raise AdapterFileError(f"{where}: the index calls it {fa.name!r}, its card {card.name!r}")
            (d / SOURCE_FILE).write_text(json.dumps(fa.source, indent=2, sort_keys=True) + "\n")
            out.append((fa, d, card))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def _put(store, directory: Path, name: str):
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
    with tempfile.TemporaryDirectory(prefix="adapterhub-pull-") as tmp:
        staged = _stage(fetched, Path(tmp), progress)
        return [_put(store, d, card.name) for _, d, card in staged]


def load_from_hub(model, repo_id: str, revision: str | None = None, adapters: str | Sequence[str] | None = None,
                  name: str | None = None, allow_base_mismatch: bool = False, store=None,
                  token: str | bool | None = None, endpoint: str | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True):
    """``model.load_adapter("user/repo", ...)``: pull and attach, all or nothing.

    Everything is checked before the model changes: sha256 of every file, names (valid, not loaded yet, distinct),
    the base fingerprint (architecture; weights unless ``allow_base_mismatch``). Then the adapters are stored and
    attached; if one fails to attach, those attached by this call are removed again.
    ``adapters``: a name or a list of names of a multi-adapter repo (default: all). ``name``: load under another
    name (one adapter only). Returns an ``AdapterEntry`` for a single-adapter repo or when ``adapters`` is one
    name, else a list of them."""
    from ..store import Store

    store = store if store is not None else Store()
    fetched = fetch(repo_id, revision, adapters, token=token, endpoint=endpoint, cache_dir=cache_dir,
                    progress=progress)
    if name is not None and len(fetched) != 1:
        raise AdapterNameError(f"name= renames one adapter; {repo_id} gave {len(fetched)}: pass adapters=[...]")
    with tempfile.TemporaryDirectory(prefix="adapterhub-pull-") as tmp:
        staged = _stage(fetched, Path(tmp), progress)
        targets = []
        for fa, d, card in staged:
            nm = validate_name(name or card.name)
            where = f"{repo_id}" + (f"/{fa.subfolder}" if fa.subfolder else "")
            if nm in model.adapters:
                raise AdapterNameError(f"an adapter named {nm!r} is already loaded; delete it first or pass name=")
            if nm in [t[1] for t in targets]:
                raise AdapterNameError(f"{repo_id}: two adapters named {nm!r}")
            check_base(model, card, where, allow_base_mismatch)
            targets.append((d, nm, card))
        entries = [_put(store, d, card.name) for d, _, card in targets]
    loaded = []
    try:
        for entry, (_, nm, _) in zip(entries, targets):
            loaded.append(model.load_adapter(entry.path, name=nm, allow_base_mismatch=allow_base_mismatch))
    except BaseException:
        for e in reversed(loaded):
            with contextlib.suppress(Exception):
                model.delete_adapter(e.name)
        raise
    single = len(loaded) == 1 and (isinstance(adapters, str) or (adapters is None and not fetched[0].subfolder))
    return loaded[0] if single else loaded


__all__ = ["push_adapter", "push_adapters", "push_dir", "push_dirs", "pull", "fetch", "load_from_hub",
           "verify_adapter_dir", "check_base", "looks_like_repo_id", "resolve_endpoint", "parse_index",
           "PushResult", "FetchedAdapter", "INDEX_FILE", "SOURCE_FILE", "HubError"]
