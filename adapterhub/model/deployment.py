"""The compression-for-deployment part of :class:`~adapterhub.model.AdapterModel`'s API, as a mixin (``core.py``
holds the registry and the routed forward): a quantized base (:mod:`.quantize`) and rank compression
(:mod:`.compress`). ``export_merged(..., quantize=)`` stays with merge and export in ``core.py``."""
from __future__ import annotations

from . import compress as compression
from . import quantize as quant


class DeploymentMixin:
    """``quantize`` and ``compress`` of an :class:`~adapterhub.model.AdapterModel`."""

    def quantize(self, mode: str) -> quant.QuantInfo:
        """Quantize the base in place (adapters stay in full precision on top); see :mod:`.quantize`."""
        return quant.quantize(self, mode)

    def compress(self, name: str, new_name: str, rank: int | None = None, energy: float | None = None):
        """``(entry, report)``: ``name`` at a lower rank as ``new_name``; see :func:`.compress.compress`."""
        return compression.compress(self, name, new_name, rank, energy)
