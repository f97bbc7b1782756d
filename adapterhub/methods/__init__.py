"""Method plug-ins. Add a kind by writing a module with a config dataclass and a :class:`Method` subclass,
then registering it in ``METHODS``."""
from __future__ import annotations

from ..errors import AdapterHubError
from .adalora import AdaLoRA, AdaLoRAMethod
from .base import BOTTLENECK, LOWRANK, Method, MethodConfig
from .bottleneck import Bottleneck, BottleneckMethod
from .lora import LoRA, LoRAMethod

METHODS: dict[str, Method] = {m.name: m for m in (LoRAMethod(), AdaLoRAMethod(), BottleneckMethod())}

# peft_type in adapter_config.json -> our method name
PEFT_TYPES = {"LORA": "lora", "ADALORA": "adalora", "BOTTLENECK": "bottleneck"}


def method_for(config: MethodConfig) -> Method:
    try:
        return METHODS[config.method]
    except KeyError:
        raise AdapterHubError(f"unknown method {config.method!r}; known: {sorted(METHODS)}") from None


def method_from_name(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise AdapterHubError(f"unknown method {name!r}; known: {sorted(METHODS)}") from None


def config_from_dict(d: dict) -> MethodConfig:
    """Build a method config from a dict with a ``method`` key (recipes, cards)."""
    d = dict(d)
    name = d.pop("method", None)
    m = method_from_name(str(name))
    import dataclasses

    fields = {f.name for f in dataclasses.fields(m.config_cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise AdapterHubError(f"{m.config_cls.__name__}: unknown option(s) {unknown}; known: {sorted(fields)}")
    cfg = m.config_cls(**d)
    cfg.validate()
    return cfg


__all__ = ["AdaLoRA", "Bottleneck", "LoRA", "METHODS", "Method", "MethodConfig", "LOWRANK", "BOTTLENECK",
           "PEFT_TYPES", "method_for", "method_from_name", "config_from_dict"]
