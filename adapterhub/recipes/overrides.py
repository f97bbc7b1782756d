"""The one override mechanism (CLI, demo, benchmarks): ``a.b.c=value`` items, each value parsed as YAML (so
``training.lr=1e-4`` is a float, ``tasks.x.labels=[neg, pos]`` a list, ``output.store=false`` a bool), applied to a
recipe's raw mapping before it is validated."""
from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from .errors import RecipeError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.2), not as the string PyYAML 1.1 makes of it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """YAML text -> data, with YAML 1.2 floats; a :class:`yaml.YAMLError` on bad YAML."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"training.steps=200"`` -> ``(["training", "steps"], 200)``."""
    if not isinstance(item, str) or "=" not in item:
        raise RecipeError(f"override {item!r}: expected key.path=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"override {item!r}: empty key in {key.strip()!r}")
    try:
        value = load_yaml(text) if text != "" else ""
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"override {item!r}: the value {text!r} is not valid YAML ({problem})") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each override set (missing mappings on the way are created)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"override {item!r}: {p} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return raw
