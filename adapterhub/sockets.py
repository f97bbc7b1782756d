"""The one listening-socket rule for our HTTP servers (the self-hosted hub and ``adapterhub serve``)."""
from __future__ import annotations

import socket


def listening_socket(host: str, port: int, backlog: int = 2048, inheritable: bool = False) -> socket.socket:
    """A bound, listening TCP socket (``port=0``: a free one). Created with ``IPPROTO_TCP`` explicitly: asyncio
    sets ``TCP_NODELAY`` only on connections whose socket says so, and without it a response's head and body wait
    out the client's delayed ACK (~40 ms). ``inheritable``: for worker processes that serve the same socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    if inheritable:
        sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a listening socket (an IPv6 host in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"
