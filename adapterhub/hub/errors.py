"""Hub errors: :class:`HubError` lives in :mod:`adapterhub.errors` (so :mod:`adapterhub.names` can raise its
subclass :class:`~adapterhub.errors.RepoIdError` without importing the hub package); re-exported here."""
from __future__ import annotations

from ..errors import HubError, RepoIdError

__all__ = ["HubError", "RepoIdError"]
