"""Domain errors of the self-hosted hub. Storage, tokens and request checks raise these; the HTTP layer
(:mod:`.app`) maps each class to its status and to the ``X-Error-Code`` that huggingface_hub turns into its own
exception types. Every message says what is wrong and is safe to show to the client (no paths, no tokens)."""
from __future__ import annotations

from ...errors import HubError


class ServerError(HubError):
    """Base class: ``status`` (HTTP) and ``code`` (``X-Error-Code``, or None)."""

    status = 500
    code: str | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ServerError):
    status = 400


class Unauthorized(ServerError):
    status = 401


class Forbidden(ServerError):
    status = 403


class NotFound(ServerError):
    status = 404


class RepoNotFound(NotFound):
    """A missing repo, and equally a private repo the caller may not read: the two must look the same."""

    code = "RepoNotFound"


class RevisionNotFound(NotFound):
    code = "RevisionNotFound"


class EntryNotFound(NotFound):
    code = "EntryNotFound"


class RequestTimeout(ServerError):
    status = 408


class Conflict(ServerError):
    status = 409


class ParentMismatch(ServerError):
    """``parentCommit`` is not the branch head any more."""

    status = 412


class TooLarge(ServerError):
    status = 413


class QuotaExceeded(TooLarge):
    code = "QuotaExceeded"


class NotSupported(ServerError):
    status = 501


class Misconfigured(ServerError):
    """The server's own configuration went bad while it runs (details are in the server's start-up check)."""

    status = 503


def repo_not_found(repo_id: str) -> RepoNotFound:
    """The one answer for a missing repo and for a private repo the caller may not read."""
    return RepoNotFound(f"Repository {repo_id} not found")


def revision_not_found(rev: str) -> RevisionNotFound:
    return RevisionNotFound(f"Invalid rev id: {rev}")


__all__ = ["ServerError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "RepoNotFound", "RevisionNotFound",
           "EntryNotFound", "RequestTimeout", "Conflict", "ParentMismatch", "TooLarge", "QuotaExceeded",
           "NotSupported", "Misconfigured", "repo_not_found", "revision_not_found"]
