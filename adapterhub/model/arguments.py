"""Checks of the arguments the model's public methods take: a wrong type or value is an error naming the argument,
never a raw Python error or a silently wrong result (``labels="pos"`` is not ``['p', 'o', 's']``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import AdapterHubError


def check_labels(labels: Any) -> list[str] | None:
    """``labels`` as a list of names (or None): a string, a mapping or a set is refused (no order, or characters)."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)):
        raise AdapterHubError(f"labels must be a list of label names, got the string {labels!r} (did you mean "
                              f"[{labels!r}]?)")
    if isinstance(labels, (dict, set, frozenset)) or not isinstance(labels, Sequence):
        raise AdapterHubError(f"labels must be a list of label names (in class-id order), got "
                              f"{type(labels).__name__}")
    bad = [x for x in labels if not isinstance(x, str) or not x]
    if bad:
        raise AdapterHubError(f"labels must be non-empty strings, got {bad[0]!r} in {list(labels)}")
    return list(labels)


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdapterHubError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_texts(texts: Any) -> tuple[list[str], bool]:
    """(the texts as a list, whether one string was given). Anything but strings is refused, naming the row."""
    if isinstance(texts, str):
        return [texts], True
    if texts is None or isinstance(texts, (bytes, dict, set, frozenset)) or not hasattr(texts, "__iter__"):
        raise AdapterHubError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise AdapterHubError(f"texts[{i}] must be a string, got {type(t).__name__}")
    return out, False


def check_device(device: Any) -> str | None:
    """A device string torch can use on this machine (``cuda`` without CUDA is refused up front)."""
    import torch

    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise AdapterHubError(f"device {device!r} is not a device (e.g. cpu, cuda, cuda:0): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AdapterHubError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
                                  f"{'no GPU found' if torch.version.cuda else 'built without CUDA'}); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AdapterHubError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AdapterHubError(f"device {device!r}: MPS is not available here; use cpu")
    return str(device)
