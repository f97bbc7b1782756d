"""Method plug-ins. A method is one module (or folder) here that defines a config dataclass and a
:class:`Method` subclass and calls :func:`register_method` at import; every module in this package is imported
once, below, so adding a method is adding its file. Nothing outside this package names a method: callers use the
registry (:func:`get_method`, :func:`method_for`, :func:`method_for_peft_type`, ...)."""
from __future__ import annotations

import importlib
import pkgutil

from .base import CheckpointState, Method, MethodConfig, TrainingHooks, match_linear_modules, targetable_modules
from .registry import (config_classes, config_from_dict, factor_method, get_method, method_for,
                       method_for_peft_type, methods, register_method, training_option_fields)

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_info.name}")

globals().update(config_classes())  # LoRA, AdaLoRA, ...: the config classes of the registered methods

__all__ = ["CheckpointState", "Method", "MethodConfig", "TrainingHooks", "config_classes", "config_from_dict",
           "factor_method", "get_method", "match_linear_modules", "method_for", "method_for_peft_type", "methods",
           "register_method", "targetable_modules", "training_option_fields", *config_classes()]
