"""Base models from the Hugging Face Hub: safetensors, JSON and tokenizer files only, never pickles."""
from __future__ import annotations

from pathlib import Path

from ..errors import BaseSourceError
from ..files.pickles import PICKLE_PATTERNS

#: Files fetched from the Hub: configs, safetensors weights, tokenizer files. No pickles, ever.
HUB_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "tokenizer*",
    "*.txt",
    "*.model",
    "*.tiktoken",
]
#: Belt and braces: excluded even if an allow pattern above happens to match them. Pickles, and weights in
#: formats other than safetensors.
HUB_IGNORE_PATTERNS = [*PICKLE_PATTERNS, "*.h5", "*.msgpack", "*.onnx", "*.gguf"]


def snapshot(repo_id: str, spec: str) -> Path:
    """Download (or reuse from the cache) the Hub model ``repo_id``; ``spec`` is named in errors."""
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - a dependency
        raise BaseSourceError(f"base {spec!r}: huggingface_hub is needed to fetch Hub models ({exc})") from exc
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            allow_patterns=HUB_ALLOW_PATTERNS,
            ignore_patterns=HUB_IGNORE_PATTERNS,
        )
    except Exception as exc:  # network, offline, auth, not found, gated ... all become one clear error
        raise BaseSourceError(
            f"base {spec!r}: could not fetch Hub model {repo_id!r} ({type(exc).__name__}: {exc}). "
            "Check the id, your network (or HF_HUB_OFFLINE / cache) and access rights, or pass a local directory."
        ) from exc
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise BaseSourceError(f"base {spec!r}: Hub repo {repo_id!r} has no config.json (not a transformers model)")
    if not any(path.rglob("*.safetensors")):
        raise BaseSourceError(
            f"base {spec!r}: Hub repo {repo_id!r} has no .safetensors weights; "
            "pickle weights (.bin/.pt) are refused — convert the model to safetensors first"
        )
    return path
