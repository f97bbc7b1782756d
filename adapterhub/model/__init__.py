"""The model layer: :class:`AdapterModel` (a frozen base with a registry of named adapters) and the functions it
delegates to.

- :mod:`.core`: ``AdapterModel``: the registry, the routed forward, the public API;
- :mod:`.entry`: ``AdapterEntry`` (the registry's record) and ``RoutedOutput`` (a forward's result);
- :mod:`.units`: building units and wrapping/unwrapping base modules;
- :mod:`.predicting`: predict and generate;
- :mod:`.loading` / :mod:`.writing`: adapter directories to units and back;
- :mod:`.merging`: merge, unmerge, export, combine;
- :mod:`.fingerprint`: base fingerprints recorded in cards.
"""
from .core import AdapterModel
from .entry import AdapterEntry, RoutedOutput

__all__ = ["AdapterEntry", "AdapterModel", "RoutedOutput"]
