"""Moved to :mod:`adapterhub.bases`; this shim keeps ``from .sources import base_id, resolve_base`` working."""
from .bases import base_id, resolve_base
__all__ = ["base_id", "resolve_base"]
