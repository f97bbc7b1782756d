"""adapterhub: a frozen base Transformer with a registry of named per-task adapters.

Importing the package is light (no torch): ``__version__`` and the error classes are loaded eagerly, the rest on
first access (PEP 562):

- ``AdapterModel`` and ``RoutedOutput`` from :mod:`adapterhub.model`;
- method configs (``LoRA``, ``AdaLoRA``, ``Bottleneck``, and any other
  :class:`~adapterhub.methods.base.MethodConfig` subclass :mod:`adapterhub.methods` exposes) from
  :mod:`adapterhub.methods`;
- submodules (``adapterhub.routing``, ...) by importing them.
"""
import importlib as _importlib
import importlib.util as _importlib_util

from .errors import (AdapterFileError, AdapterHubError, AdapterNameError, BaseMismatchError, BaseSourceError,
                     StoreError)
from .version import __version__

#: public names imported on first access -> the submodule holding them
_LAZY = {"AdapterModel": ".model", "RoutedOutput": ".model"}
_EAGER = ["AdapterHubError", "AdapterNameError", "AdapterFileError", "BaseMismatchError", "BaseSourceError",
          "StoreError", "__version__"]


def _methods():
    return _importlib.import_module(".methods", __name__)


def _is_method_config(obj: object) -> bool:
    from .methods import MethodConfig

    return isinstance(obj, type) and issubclass(obj, MethodConfig) and obj is not MethodConfig


def _method_config_names() -> list[str]:
    """The method config classes :mod:`adapterhub.methods` exposes now (imports it, and torch)."""
    methods = _methods()
    return sorted(n for n in dir(methods) if not n.startswith("_") and _is_method_config(getattr(methods, n, None)))


def _is_submodule(name: str) -> bool:
    try:
        return name.isidentifier() and _importlib_util.find_spec(f"{__name__}.{name}") is not None
    except (ImportError, ValueError):
        return False


def __getattr__(name: str):
    if name == "__all__":  # computed: method plug-ins may be added at run time
        return list(_LAZY) + _method_config_names() + _EAGER
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
    elif name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    elif _is_submodule(name):
        value = _importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(_methods(), name, None)
        if not _is_method_config(value):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__getattr__("__all__")))
