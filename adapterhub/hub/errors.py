"""Hub errors."""
from __future__ import annotations

from ..errors import AdapterHubError


class HubError(AdapterHubError):
    """A Hub request failed: missing repo or revision, refused token, unreachable or offline hub, bad repo id."""
