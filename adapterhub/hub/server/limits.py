"""The hub server's limits, in one place: request sizes per kind of endpoint, quotas, connections and timeouts.

Every limit is a field of :class:`Limits` (``adapterhub hub serve`` sets the main ones from its options); a request
over a limit gets a clear 4xx answer (413 for sizes and quotas, 408 for timeouts, 414/431 for request heads, 503
past the connection cap), never a partial result.
"""
from __future__ import annotations

import dataclasses
import re

from ...errors import HubError

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
LFS_THRESHOLD = 10 * MiB  # like the Hub: bigger files go through LFS


@dataclasses.dataclass(frozen=True)
class Limits:
    """Sizes are bytes, times seconds."""

    # request bodies
    max_json_bytes: int = 1 * MiB            # JSON endpoints (repo settings, preupload, LFS batch, paths-info...)
    max_inline_bytes: int | None = None      # one inline file of a commit; None: LFS_THRESHOLD, or 128 MiB without LFS
    max_commit_lines: int = 100_000          # operations in one commit
    # quotas
    max_object_bytes: int = 20 * GiB         # one file (LFS object or inline file)
    max_repo_bytes: int = 100 * GiB          # every blob a repo's commits reference; `hub quota set` overrides
    # README metadata (``cardData``)
    max_card_bytes: int = 64 * KiB           # the YAML block at the top of README.md
    # connections and timeouts
    max_connections: int = 256               # past this, new requests get 503
    backlog: int = 2048                      # listen queue
    head_timeout: float = 10.0               # to send a complete request head (request line and headers)
    body_timeout: float = 60.0               # between two pieces of a request body
    send_timeout: float = 120.0              # for the client to take the next piece of a response
    keepalive_timeout: float = 5.0           # an idle kept-alive connection is closed after this
    linger_timeout: float = 5.0              # reading and dropping the rest of a refused request, at most
    shutdown_timeout: float = 5.0            # requests still running at shutdown are cut after this
    # request heads
    max_request_line: int = 8 * KiB          # method + target + version (414 past it)
    max_header_bytes: int = 32 * KiB         # all header lines together (431 past it)
    max_headers: int = 100                   # number of header lines (431 past it)

    def inline_limit(self, lfs: bool) -> int:
        """The largest file a commit may carry inline (base64 in the NDJSON body)."""
        if self.max_inline_bytes is not None:
            return min(self.max_inline_bytes, self.max_object_bytes)
        return min(LFS_THRESHOLD if lfs else 128 * MiB, self.max_object_bytes)

    def replace(self, **changes) -> "Limits":
        return dataclasses.replace(self, **changes)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.I)
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}


def parse_size(text: str) -> int:
    """``"512"``, ``"10M"``, ``"1.5GiB"``, ``"2T"`` -> bytes (binary units). Raises :class:`HubError`."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise HubError(f"bad size {text!r}: use a number of bytes or e.g. 500M, 10G, 1T")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_size(n: int) -> str:
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


__all__ = ["Limits", "LFS_THRESHOLD", "KiB", "MiB", "GiB", "TiB", "parse_size", "format_size"]
