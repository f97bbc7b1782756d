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

This module is the client's public face; the code lives in :mod:`.transport` (endpoint, API, error translation),
:mod:`.layout` (repo layout, index, checks), :mod:`.push` and :mod:`.pull`.
"""
from __future__ import annotations

from ..names import looks_like_repo_id
from ..errors import HubError
from .layout import INDEX_FILE, SOURCE_FILE, check_base, parse_index, verify_adapter_dir
from .pull import FetchedAdapter, fetch, load_from_hub, pull
from .push import PushResult, push_adapter, push_adapters, push_dir, push_dirs
from .transport import resolve_endpoint

__all__ = ["push_adapter", "push_adapters", "push_dir", "push_dirs", "pull", "fetch", "load_from_hub",
           "verify_adapter_dir", "check_base", "looks_like_repo_id", "resolve_endpoint", "parse_index",
           "PushResult", "FetchedAdapter", "INDEX_FILE", "SOURCE_FILE", "HubError"]
