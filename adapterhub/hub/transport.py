"""Talking to a Hub through ``huggingface_hub``: the endpoint, the API client, transfer settings, and one
translation of huggingface_hub / network errors into :class:`HubError` (never showing the token).

Endpoint: ``endpoint=`` > ``$HF_ENDPOINT`` (read at call time) > huggingface_hub's default. Token: ``token=`` >
huggingface_hub's (``$HF_TOKEN``, ``hf auth login``).
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator
from urllib.parse import urlsplit

from ..errors import AdapterFileError, AdapterNameError, BaseMismatchError, HubError
from ..version import __version__

PUBLIC_HOSTS = ("huggingface.co", "hf.co")
_SETTINGS_LOCK = threading.RLock()


def resolve_endpoint(endpoint: str | None = None) -> str:
    if endpoint is None:
        endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    endpoint = endpoint.rstrip("/")
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise HubError(f"bad hub endpoint {endpoint!r}: expected http(s)://host[:port]")
    return endpoint


def is_public_hub(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in PUBLIC_HOSTS)


def make_api(endpoint: str, token: str | bool | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="adapterhub", library_version=__version__)


def have_token(token: str | bool | None) -> bool:
    if token is False:
        return False
    if isinstance(token, str):
        return bool(token)
    from huggingface_hub import get_token

    return get_token() is not None


@contextlib.contextmanager
def transfer_settings(endpoint: str, progress: bool) -> Iterator[None]:
    """Xet off for self-hosted hubs (they speak plain LFS); progress bars off when asked. Restored after."""
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    with _SETTINGS_LOCK:
        has_xet_flag = hasattr(constants, "HF_HUB_DISABLE_XET")  # huggingface_hub >= 0.32
        old_xet = getattr(constants, "HF_HUB_DISABLE_XET", None)
        bars_were_off = are_progress_bars_disabled()
        if has_xet_flag and not is_public_hub(endpoint):
            constants.HF_HUB_DISABLE_XET = True
        if not progress and not bars_were_off:
            disable_progress_bars()
        try:
            yield
        finally:
            if has_xet_flag:
                constants.HF_HUB_DISABLE_XET = old_xet
            if not progress and not bars_were_off:
                enable_progress_bars()


@contextlib.contextmanager
def hub_errors(repo_id: str, endpoint: str, token: str | bool | None, revision: str | None = None,
                what: str = "") -> Iterator[None]:
    """huggingface_hub / network errors -> :class:`HubError` with a plain message (never the token)."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    # names moved between huggingface_hub releases
    RemoteEntryNotFoundError = getattr(hf_errors, "RemoteEntryNotFoundError", None) or hf_errors.EntryNotFoundError
    OfflineModeIsEnabled = getattr(hf_errors, "OfflineModeIsEnabled", None) or _Never

    try:
        yield
    except (HubError, AdapterFileError, AdapterNameError, BaseMismatchError):
        raise
    except OfflineModeIsEnabled:
        raise HubError(f"offline mode is on (HF_HUB_OFFLINE=1): it blocks every Hub request, also to a hub on this "
                       f"machine; set HF_HUB_OFFLINE=0 to reach {endpoint}") from None
    except RevisionNotFoundError:
        raise HubError(f"revision {revision or 'main'!r} not found in {repo_id} on {endpoint}") from None
    except RemoteEntryNotFoundError as e:
        raise HubError(f"{what or 'a file'} not found in {repo_id}@{revision or 'main'} on {endpoint} "
                       f"({server_message(e)})") from None
    except RepositoryNotFoundError:
        if not have_token(token):  # a private repo answers 404 (or 401) to callers without a token
            raise HubError(f"repository {repo_id} not found on {endpoint}, or it needs a token (it may be "
                           f"private, or this is a write): set HF_TOKEN or pass token=") from None
        raise HubError(f"repository {repo_id} not found on {endpoint} (if it is private, your token has no access "
                       f"to it)") from None
    except HfHubHTTPError as e:
        status = http_status(e)
        if status == 401:
            if have_token(token):
                raise HubError(f"{endpoint} refused the token (wrong or expired token)") from None
            raise HubError(f"{endpoint} needs a token for this: set HF_TOKEN or pass token=") from None
        if status == 403:
            raise HubError(f"{endpoint} refused access to {repo_id} ({server_message(e)}): your token may lack "
                           f"write permission") from None
        raise HubError(f"hub request for {repo_id} failed (HTTP {status}): {server_message(e)}") from None
    except ConnectionError as e:
        raise HubError(f"cannot reach the hub at {endpoint}: {e}") from None
    except Exception as e:
        name = type(e).__name__
        if any(k in name for k in ("ConnectError", "Timeout", "NetworkError", "RemoteProtocolError")):
            raise HubError(f"cannot reach the hub at {endpoint}: {name}: {e}") from None
        raise


class _Never(Exception):
    pass


def http_status(e: Exception) -> int | None:
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None)


def server_message(e: Exception) -> str:
    msg = getattr(e, "server_message", None)
    if msg:
        return str(msg).strip().splitlines()[0]
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def progress_bar(total: int, desc: str):
    from huggingface_hub.utils import tqdm

    return tqdm(total=total, desc=desc, unit="file")
