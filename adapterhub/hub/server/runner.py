"""Running the hub: :class:`HubServer` serves one root with uvicorn, in a background thread (:meth:`~HubServer.start`,
for tests and embedding) or in the foreground (:meth:`~HubServer.serve_forever`, ``adapterhub hub serve``), with
one process or several uvicorn workers sharing the root through ``hub.db``.

One server per root: the first takes an exclusive lock on ``<root>/.lock`` (its workers share it); a second server,
or ``adapterhub hub gc``, is refused while it is held.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import threading
from typing import Any, Callable

from ...errors import HubError
from ...sockets import listening_socket, socket_url
from .app import HubContext, create_app
from .limits import Limits
from .rootlock import lock_root
from .storage import HubStorage
from .tokens import Authenticator, Orgs, StaticTokens

DEFAULT_HOST = "127.0.0.1"
PROTOCOL = "adapterhub.hub.server.protocol:HubHttpProtocol"
WORKER_ENV = "ADAPTERHUB_HUB_WORKER"  # settings handed to worker processes


def _uvicorn_config(app: Any, limits: Limits, **kwargs):
    import uvicorn

    config = uvicorn.Config(app, http=PROTOCOL, interface="asgi3", loop="asyncio", lifespan="off", log_config=None,
                            access_log=False, log_level="warning", server_header=False, limit_concurrency=limits.max_connections,
                            backlog=limits.backlog, timeout_keep_alive=max(1, round(limits.keepalive_timeout)),
                            timeout_graceful_shutdown=max(1, round(limits.shutdown_timeout)), **kwargs)
    config.hub_limits = limits  # read by HubHttpProtocol
    return config


class HubServer:
    """A self-hosted hub on ``host:port`` (``port=0``: a free one) serving the repos under ``root``.

    ``tokens``: {token: user, or token: (user, scope)} held in memory instead of the tokens in ``hub.db`` (tests,
    embedding). ``lfs=False``: every preupload is answered ``"regular"`` so clients that would use Xet send files
    inline. ``log``: where request and event lines go (default: nowhere when ``quiet``, else stderr).
    ``limits``: sizes, quotas, connections, timeouts (:class:`~.limits.Limits`).
    """

    def __init__(self, root: str | os.PathLike, host: str = DEFAULT_HOST, port: int = 0,
                 tokens: dict[str, Any] | None = None, lfs: bool = True, quiet: bool = True,
                 log: Callable[[str], None] | None = None, recover: bool = True, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.storage = HubStorage(root, self.limits)
        self._lockfile = None
        try:
            self._lockfile = lock_root(self.storage.root)
            if recover:
                self.storage.recover()
            static = StaticTokens(tokens) if tokens is not None else None
            self.auth = Authenticator(self.storage.tokens, Orgs(self.storage.root), static)
            self._log = log if log is not None else (None if quiet else _stderr)
            self.context = HubContext(self.storage, self.auth, self.limits, lfs, self.log)
            self.app = create_app(self.context)
            self._sock = listening_socket(host, port, self.limits.backlog, inheritable=True)
        except BaseException:
            self._release()
            raise
        self._server = None
        self._thread: threading.Thread | None = None

    # -- info ----------------------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._sock.getsockname()[0]

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return socket_url(self._sock)

    @property
    def lfs(self) -> bool:
        return self.context.lfs

    @lfs.setter
    def lfs(self, value: bool) -> None:
        self.context.lfs = value

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    async def _asgi(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self.app(scope, receive, send)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        """Serve in a background (daemon) thread; returns self once it accepts connections."""
        import uvicorn

        self._server = uvicorn.Server(_uvicorn_config(self._asgi, self.limits))
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])),
                                        name="adapterhub-hub", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self._server.started:
            raise HubError("the hub server did not start")
        return self

    def serve_forever(self, workers: int = 1) -> None:
        """Serve in the foreground until SIGINT/SIGTERM; ``workers`` > 1: that many uvicorn worker processes."""
        import uvicorn

        if workers <= 1:
            self._server = uvicorn.Server(_uvicorn_config(self._asgi, self.limits))
            self._server.run(sockets=[self._sock])
            return
        from uvicorn.supervisors import Multiprocess

        os.environ[WORKER_ENV] = json.dumps({"root": str(self.storage.root), "lfs": self.lfs,
                                             "quiet": self._log is None, "limits": dataclasses.asdict(self.limits)})
        config = _uvicorn_config("adapterhub.hub.server.runner:worker_app", self.limits, factory=True,
                                 workers=workers)
        Multiprocess(config, sockets=[self._sock]).run()

    def stop(self) -> None:
        if self._thread is not None and self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=self.limits.shutdown_timeout + 5)
            self._thread = None
        with contextlib.suppress(OSError):
            self._sock.close()
        self._release()

    def _release(self) -> None:
        self.storage.close()
        if self._lockfile is not None:
            with contextlib.suppress(OSError):
                self._lockfile.close()
            self._lockfile = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def worker_app():
    """The app of one uvicorn worker process (``serve_forever(workers=N)``): the parent holds the root lock and
    has recovered the root; workers share it through ``hub.db``."""
    settings = json.loads(os.environ[WORKER_ENV])
    limits = Limits(**settings["limits"])
    storage = HubStorage(settings["root"], limits)
    auth = Authenticator(storage.tokens, Orgs(storage.root))
    return create_app(HubContext(storage, auth, limits, settings["lfs"], (lambda m: None) if settings["quiet"]
                                 else _stderr))


def serve(root: str | os.PathLike, host: str = DEFAULT_HOST, port: int = 8765, lfs: bool = True,
          tokens: dict[str, Any] | None = None, quiet: bool = False, workers: int = 1,
          limits: Limits | None = None, ready: Callable[[HubServer], None] | None = None) -> None:
    """Run a hub in the foreground until interrupted."""
    server = HubServer(root, host=host, port=port, tokens=tokens, lfs=lfs, quiet=quiet, limits=limits)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever(workers=workers)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = ["HubServer", "serve", "worker_app", "DEFAULT_HOST"]
