"""adapterhub: a frozen base Transformer with a registry of named per-task adapters."""
from .errors import (AdapterFileError, AdapterHubError, AdapterNameError, BaseMismatchError, BaseSourceError,
                     StoreError)
from .methods import AdaLoRA, Bottleneck, LoRA
from .model import AdapterModel, RoutedOutput
from .version import __version__

__all__ = ["AdapterModel", "RoutedOutput", "LoRA", "AdaLoRA", "Bottleneck", "AdapterHubError", "AdapterNameError",
           "AdapterFileError", "BaseMismatchError", "BaseSourceError", "StoreError", "__version__"]
