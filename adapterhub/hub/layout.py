"""The adapterhub repo layout on a Hub and its checks (the index, the file listing).

- one adapter: its files at the repo root (``adapter_config.json``, ``adapter_model.safetensors``,
  ``adapterhub_head.json``, ``adapterhub_head.safetensors``, ``adapter_card.json``, ``README.md``);
- several adapters: one folder per adapter (same files), ``adapterhub_index.json`` at the root listing them and
  a root ``README.md``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files.adapter_dir import ADAPTER_FILES, sha256_file, verify_adapter_dir  # noqa: F401 (verify: re-exported)
from ..files.card import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, AdapterCard
from ..errors import AdapterFileError, RepoIdError
from ..names import validate_name, validate_path_in_repo
from ..files.pickles import refuse_pickle_weights

INDEX_FILE = "adapterhub_index.json"
README_FILE = "README.md"
SOURCE_FILE = "hub_source.json"  # written into pulled store entries: where they came from
INDEX_FORMAT = "adapterhub-index"
INDEX_VERSION = 1
REPO_FILES = ADAPTER_FILES + (CARD_FILE,)


def index_entry(card: AdapterCard, subfolder: str, directory: Path) -> dict[str, Any]:
    return {"subfolder": subfolder, "name": card.name, "method": card.method, "task": card.task,
            "labels": card.labels, "base_model": card.base_model, "base_fingerprint": card.base_fingerprint,
            "num_parameters": card.num_parameters, "num_head_parameters": card.num_head_parameters,
            "metrics": card.metrics, "extra": card.extra, "card_sha256": sha256_file(directory / CARD_FILE)}


def read_index(api, repo_id: str, commit: str, cache_dir: str | None = None) -> dict[str, Any]:
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
        except RepoIdError as e:
            raise AdapterFileError(f"{repo_id}: {INDEX_FILE}: adapter {name!r}: {e}") from None
    return index


PLAIN_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # a plain peft repo: what is fetched of it


def check_listing(repo_id: str, present: set[str], sub: str, plain_ok: bool = False) -> bool:
    """Check a repo's (or folder's) files; True when it is a plain peft adapter (allowed with ``plain_ok``)."""
    prefix = f"{sub}/" if sub else ""
    where = f"{repo_id}/{sub}" if sub else repo_id
    here = {p[len(prefix):] for p in present if p.startswith(prefix) and "/" not in p[len(prefix):]}
    refuse_pickle_weights(here, where, " (nothing was downloaded)")
    if prefix + CARD_FILE not in present:
        if prefix + CONFIG_FILE in present and plain_ok and WEIGHTS_FILE in here:
            return True
        if prefix + CONFIG_FILE in present:
            raise AdapterFileError(f"{where}: a plain PEFT adapter without an adapterhub card ({CARD_FILE}); "
                                   f"adapterhub pulls only adapters pushed with their card and head into the store "
                                   "(model.load_adapter(repo) reads plain peft repos onto a base, and the card is "
                                   "written when it is stored)")
        raise AdapterFileError(f"{where}: not an adapterhub repo (no {CARD_FILE} and no {INDEX_FILE})")
    missing = [f for f in REPO_FILES if prefix + f not in present]
    if missing:
        raise AdapterFileError(f"{where}: missing {', '.join(missing)}")
    return False
