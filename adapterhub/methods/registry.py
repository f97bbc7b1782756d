"""The method registry: plug-ins register themselves by name; every caller looks them up here."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import AdapterHubError
from .base import Method, MethodConfig

_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Register a plug-in instance (call it at import of the method's module). Names, config classes and peft
    types must be unique."""
    if not isinstance(method, Method):
        raise AdapterHubError(f"register_method takes a Method instance, got {type(method).__name__}")
    name = method.name
    if not name or method.config_cls.method != name:
        raise AdapterHubError(f"{type(method).__name__}: name {name!r} must equal its config's method "
                              f"{method.config_cls.method!r}")
    if getattr(method, "kind", None) is None:
        raise AdapterHubError(f"method {name!r} declares no unit kind")
    for other in _METHODS.values():
        if other.name == name and type(other) is not type(method):
            raise AdapterHubError(f"method {name!r} is already registered by {type(other).__name__}")
        if other.name != name and other.peft_type == method.peft_type:
            raise AdapterHubError(f"methods {other.name!r} and {name!r} both claim peft_type {method.peft_type!r}")
    _METHODS[name] = method
    return method


def methods() -> dict[str, Method]:
    """Every registered plug-in by name (registration order)."""
    return dict(_METHODS)


def get_method(name: str) -> Method:
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise AdapterHubError(f"unknown method {name!r}; known: {sorted(_METHODS)}") from None


def method_for(config: MethodConfig) -> Method:
    """The plug-in of a config object."""
    if not isinstance(config, MethodConfig):
        raise AdapterHubError(f"config must be a method config such as {_example()}(...), got {type(config).__name__}")
    return get_method(config.method)


def method_for_peft_type(peft_type: Any, where: str) -> Method:
    """The plug-in of an ``adapter_config.json``'s ``peft_type``; ``where`` names the file in errors."""
    wanted = str(peft_type or "").upper()
    for m in _METHODS.values():
        if m.peft_type == wanted:
            return m
    raise AdapterHubError(f"{where}: unsupported peft_type {peft_type!r}; supported: "
                          f"{sorted(m.peft_type for m in _METHODS.values())}")


def factor_method() -> Method:
    """The method that holds plain factors ``B @ A`` (the result of combining adapters)."""
    for m in _METHODS.values():
        if m.accepts_factors:
            return m
    raise AdapterHubError("no registered method holds combined factors")


def config_classes() -> dict[str, type[MethodConfig]]:
    """Config class name -> class (``LoRA``, ``AdaLoRA``, ...), for ``from adapterhub import LoRA``."""
    return {m.config_cls.__name__: m.config_cls for m in _METHODS.values()}


def config_from_dict(d: dict[str, Any]) -> MethodConfig:
    """Build and validate a method config from a dict with a ``method`` key (recipes, cards)."""
    if not isinstance(d, dict):
        raise AdapterHubError(f"an adapter config is a mapping with a 'method' key, got {type(d).__name__}")
    d = dict(d)
    m = get_method(d.pop("method", None))
    fields = {f.name for f in dataclasses.fields(m.config_cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise AdapterHubError(f"{m.config_cls.__name__}: unknown option(s) {unknown}; known: {sorted(fields)}")
    try:
        cfg = m.config_cls(**d)
    except TypeError as e:
        raise AdapterHubError(f"{m.config_cls.__name__}: {e}") from None
    cfg.validate()
    return cfg


def training_option_fields() -> dict[str, tuple[Any, Any, Method]]:
    """Every method's ``training.*`` recipe keys: key -> (types, default, owning method)."""
    out: dict[str, tuple[Any, Any, Method]] = {}
    for m in _METHODS.values():
        for key, (types, default) in m.training_options.items():
            if key in out:
                raise AdapterHubError(f"training option {key!r} is claimed by methods {out[key][2].name!r} and "
                                      f"{m.name!r}")
            out[key] = (types, default, m)
    return out


def _example() -> str:
    return next(iter(config_classes()), "a method config")
