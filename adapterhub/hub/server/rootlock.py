"""One server per root: an exclusive ``flock`` on ``<root>/.lock``, held by the serving process (its uvicorn workers
share it) and by ``adapterhub hub gc``. Also :func:`is_loopback`, to warn when a hub listens beyond this machine."""
from __future__ import annotations

from pathlib import Path

from ...errors import HubError


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def lock_root(root: Path):
    """Refuse a second server (or ``hub gc``) on the same root."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    f = open(root / ".lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise HubError(f"another hub server is already serving {root}") from None
    return f


__all__ = ["lock_root", "is_loopback"]
