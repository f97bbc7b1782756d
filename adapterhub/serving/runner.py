"""Running the server: :class:`ServeServer` serves one :class:`~adapterhub.model.AdapterModel` with uvicorn, in a
background thread (:meth:`~ServeServer.start`, for tests and embedding) or in the foreground
(:meth:`~ServeServer.serve_forever`, ``adapterhub serve``).

Shutdown is graceful: on SIGTERM / SIGINT (or :meth:`~ServeServer.stop`) ``/ready`` answers 503, the server stops
accepting connections, requests in flight finish (up to ``shutdown_timeout``), then the batch worker runs what is
still queued and ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading

from ..errors import AdapterHubError
from ..sockets import listening_socket, socket_url
from .app import create_app
from .catalog import Catalog
from .context import ServeContext
from .engine import Engine
from .metrics import ServeMetrics
from .scheduler import Scheduler
from .settings import ServeSettings

DEFAULT_HOST = "127.0.0.1"


class ServeServer:
    """``model`` behind ``host:port`` (``port=0``: a free one). ``token``: the bearer token every endpoint but
    ``/health`` asks for (None: no token). Adapters the model's store holds are loaded on first use (see the
    model's ``store`` / ``max_resident``)."""

    def __init__(self, model, host: str = DEFAULT_HOST, port: int = 0, settings: ServeSettings | None = None,
                 token: str | None = None):
        self.model = model
        self.settings = settings or ServeSettings()
        self.metrics = ServeMetrics(model)
        model.residency.on_load = lambda name, seconds: self.metrics.observe_load("request", seconds)
        self.catalog = Catalog(model, model.residency.store, on_load=self.metrics.observe_load)
        self.engine = Engine(model)
        res = model.residency
        self.scheduler = Scheduler(self.engine.run, self.settings, capacity=lambda: (res.max_resident, set(res.pinned)),
                                   on_batch=self.metrics.observe_batch,
                                   on_batch_done=self.metrics.batch_seconds.observe)
        self.metrics.queue_requests.set_function(lambda: self.scheduler.queued[0])
        self.metrics.queue_rows.set_function(lambda: self.scheduler.queued[1])
        self.context = ServeContext(model, self.settings, self.catalog, self.scheduler, self.metrics, token,
                                    draining=self._draining)
        self.app = create_app(self.context)
        self._sock = listening_socket(host, port)
        self._server = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def host(self) -> str:
        return self._sock.getsockname()[0]

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return socket_url(self._sock)

    def _draining(self) -> bool:
        return self._stopping or (self._server is not None and self._server.should_exit)

    def _uvicorn(self):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                """uvicorn re-raises SIGTERM / SIGINT once it has shut down, which would kill the process before
                the batch worker drains: the signal has been handled, so it is dropped here."""
                with super().capture_signals():
                    try:
                        yield
                    finally:
                        getattr(self, "_captured_signals", []).clear()

        s = self.settings
        config = uvicorn.Config(self.app, interface="asgi3", loop="asyncio", lifespan="off", log_config=None,
                                access_log=False, log_level="warning", server_header=False,
                                limit_concurrency=s.max_connections,
                                timeout_keep_alive=max(1, round(s.keepalive_timeout)),
                                timeout_graceful_shutdown=max(1, round(s.shutdown_timeout)))
        self._server = Server(config)
        return self._server

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> "ServeServer":
        """Serve in a background (daemon) thread; returns self once it accepts connections."""
        self.scheduler.start()
        server = self._uvicorn()
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[self._sock])),
                                        name="adapterhub-serve", daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not server.started:
            self.scheduler.stop(timeout=5)
            raise AdapterHubError("the server did not start")
        return self

    def serve_forever(self) -> None:
        """Serve in the foreground until SIGINT / SIGTERM, then drain (see the module docstring)."""
        self.scheduler.start()
        try:
            self._uvicorn().run(sockets=[self._sock])
        finally:
            self._finish()

    def stop(self) -> None:
        if self._thread is not None and self._server is not None:
            self._stopping = True
            self._server.should_exit = True
            self._thread.join(timeout=self.settings.shutdown_timeout + 5)
            self._thread = None
        self._finish()

    def _finish(self) -> None:
        self._stopping = True
        self.scheduler.stop(timeout=self.settings.shutdown_timeout)
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.model.residency.on_load is not None:
            self.model.residency.on_load = None

    def __enter__(self) -> "ServeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ServeServer", "bind", "DEFAULT_HOST"]
