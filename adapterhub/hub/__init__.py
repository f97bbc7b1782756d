"""The Hub side of adapterhub.

- :mod:`adapterhub.hub.client`: push adapters to a Hub (the public one or a self-hosted one) and pull them back
  into the local store / a model, sha256- and base-checked (code in :mod:`~adapterhub.hub.push`,
  :mod:`~adapterhub.hub.pull`, :mod:`~adapterhub.hub.layout` and :mod:`~adapterhub.hub.transport`).
- :mod:`adapterhub.hub.server`: ``adapterhub hub serve``, a self-hosted hub speaking the part of the Hugging Face
  Hub HTTP API that ``huggingface_hub`` 2.x uses for model repos.
- :mod:`adapterhub.hub.modelcard`: the README model cards written on push.
- the ``push`` / ``pull`` / ``hub serve`` / ``hub gc`` sub-commands live in :mod:`adapterhub.cli.hub_commands`.
"""
from __future__ import annotations

from ..errors import HubError
from ..names import validate_path_in_repo, validate_repo_id
from .client import (PushResult, fetch, load_from_hub, looks_like_repo_id, pull, push_adapter, push_adapters,
                     push_dir, push_dirs)
from .server import HubServer, serve

__all__ = ["HubError", "HubServer", "PushResult", "fetch", "load_from_hub", "looks_like_repo_id", "pull",
           "push_adapter", "push_adapters", "push_dir", "push_dirs", "serve", "validate_path_in_repo",
           "validate_repo_id"]
