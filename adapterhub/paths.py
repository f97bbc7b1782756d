"""Where adapterhub keeps things on disk: ``$ADAPTERHUB_HOME`` (default: the user's cache dir)."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of the local store and caches. ``$ADAPTERHUB_HOME`` wins; else ``<user cache dir>/adapterhub``."""
    env = os.environ.get("ADAPTERHUB_HOME")
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("adapterhub"))
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        return Path.home() / ".cache" / "adapterhub"


def store_dir() -> Path:
    return home() / "store"


def bases_dir() -> Path:
    """Cache of converted base models (e.g. SmolLM2 GGUF -> safetensors)."""
    return home() / "bases"
