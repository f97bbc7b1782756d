"""Exceptions. Every one names what is wrong; all derive from :class:`AdapterHubError` (a ``ValueError``)."""
from __future__ import annotations


class AdapterHubError(ValueError):
    """Base class of adapterhub's errors."""


class AdapterNameError(AdapterHubError):
    """A bad, unknown or duplicate adapter name."""


class AdapterFileError(AdapterHubError):
    """An adapter directory is missing files, holds corrupt ones, or holds unsafe (pickle) ones."""


class BaseMismatchError(AdapterHubError):
    """An adapter was made for another base model."""


class StoreError(AdapterHubError):
    """A problem with the local store."""


class BaseSourceError(AdapterHubError):
    """A base model string could not be resolved."""


class PackageFileError(AdapterHubError):
    """A file that should ship inside an installed distribution is missing, or the distribution is not installed."""


class HubError(AdapterHubError):
    """A Hub request failed: missing repo or revision, refused token, unreachable or offline hub, bad repo id."""


class RepoIdError(HubError):
    """A bad Hub repo id, or a bad path inside a repo (see :mod:`adapterhub.names`)."""


class TargetExistsError(AdapterHubError):
    """An atomic write meant to create a new directory found it already there (see :mod:`adapterhub.atomic`)."""
