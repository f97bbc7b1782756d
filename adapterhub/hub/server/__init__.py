"""``adapterhub hub serve``: a self-hosted hub (needs the ``hub-server`` extra: Starlette, uvicorn, httptools).

It speaks the part of the Hugging Face Hub HTTP API that ``huggingface_hub`` 2.x uses for *model* repos, so the
stock client (``HfApi``, ``snapshot_download``, ``hf_hub_download``, the ``hf`` CLI, ``peft``/``transformers``
``from_pretrained``) works against it through ``HF_ENDPOINT``:

- repos: ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``PUT /api/models/{repo}/settings``,
  ``GET /api/models`` (listing), ``GET /api/whoami-v2``, ``POST /api/validate-yaml``
- read: ``GET /api/models/{repo}[/revision/{rev}]`` (model info), ``GET /api/models/{repo}/tree/{rev}[/{path}]``,
  ``POST /api/models/{repo}/paths-info/{rev}``, ``GET /api/models/{repo}/refs``,
  ``GET /api/models/{repo}/commits/{rev}``, ``HEAD|GET /{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``,
  ``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range`` requests)
- write: ``POST /api/models/{repo}/preupload/{rev}``, ``POST /api/models/{repo}/commit/{rev}`` (NDJSON),
  ``POST /{repo}.git/info/lfs/objects/batch`` (basic transfer, one-use upload URLs, ``verify``), branches and tags

Not supported: Xet storage (clients must set ``HF_HUB_DISABLE_XET=1``, or the server runs with ``--no-lfs`` so
every file is sent inline), pull requests, datasets and spaces, pagination (one page holds everything).

Modules: :mod:`.runner` (:class:`HubServer`, uvicorn), :mod:`.protocol` (HTTP/1.1 parsing limits),
:mod:`.guard` (timeouts, routing path, access log), :mod:`.app` + ``routes_*`` (the HTTP layer), :mod:`.storage`
(domain storage: :mod:`.db` SQLite metadata, :mod:`.blobs` content-addressed files), :mod:`.tokens` (tokens, scopes,
namespaces, orgs), :mod:`.limits`, :mod:`.yaml_safe` (README metadata), :mod:`.errors` (domain errors).

Importing this package imports neither Starlette nor uvicorn: :class:`HubServer` and :func:`serve` load them when
first used, so ``adapterhub hub token`` / ``gc`` / ``quota`` work on a core install.
"""
from __future__ import annotations

from typing import Any

_LAZY = {"HubServer": "runner", "serve": "runner", "is_loopback": "rootlock", "lock_root": "rootlock",
         "DEFAULT_HOST": "runner", "HubStorage": "storage", "git_blob_sha1": "storage", "lfs_pointer": "storage",
         "parse_front_matter": "yaml_safe", "Limits": "limits"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_LAZY)
