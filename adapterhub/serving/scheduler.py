"""The scheduler: concurrent requests become batches, each run as ONE routed predict / generate over the model.

Requests (:class:`Job`) wait in one bounded queue (rows; past ``max_queue_rows`` a request gets 429 with
``Retry-After``). One worker thread takes batches: the oldest job and every later one of the same kind
(``Job.key``: predict with the same ``max_new_tokens``, or generation with the same sampling settings) up to
``max_batch_rows`` rows and, with ``max_resident``, no more distinct adapters than the model may hold at once. A
batch goes when it is full, when its oldest job has waited ``max_wait_ms``, or at once when no other request is on
its way in (being read or checked: :meth:`Scheduler.arriving`), so a lone request never waits for nothing and
under load batches form while the previous one runs. A job is never split: its rows all run in one call, against
one version of each adapter.

A batch that fails is retried job by job (one request naming an adapter deleted meanwhile fails alone); each
job's failure maps to an HTTP answer through :func:`~.errors.as_serve_error`.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import time
from typing import Any, Callable, Iterator

from .errors import Overloaded, Unavailable, as_serve_error
from .settings import ServeSettings


class Job:
    """One request's rows waiting for a batch; its result is handed to the request's event loop."""

    key: tuple = ()

    def __init__(self, rows: int, names: frozenset[str]):
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future = self.loop.create_future()
        self.rows, self.names = rows, names
        self.queued_at = 0.0
        self.cancelled = False  # the client went away: skipped if still queued, its rows stop early if running
        self.started = False   # part of its output was sent (a stream): never retried
        self._answered = False  # set by the thread that answers (the future is set later, in the loop)

    @property
    def done(self) -> bool:
        return self._answered

    def resolve(self, value: Any) -> None:
        if not self._answered:
            self._answered = True
            self._call(self._set, value, None)

    def fail(self, exc: BaseException) -> None:
        if not self._answered:
            self._answered = True
            self._call(self._set, None, as_serve_error(exc))

    def _set(self, value: Any, exc: BaseException | None) -> None:
        if not self.future.done():
            self.future.set_result(value) if exc is None else self.future.set_exception(exc)
            self.finished()

    def finished(self) -> None:
        """Called in the event loop once the result is set (streams close here)."""

    def _call(self, fn: Callable, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(fn, *args)


class Scheduler:
    """``run(jobs)``: runs one batch and resolves each job (see :class:`~.engine.Engine`); ``capacity()``: the
    model's ``(max_resident or None, pinned names)``; metrics: ``on_batch(rows, distinct adapters)`` before a
    batch runs (so they are counted when its answers arrive), ``on_batch_done(seconds)`` after."""

    def __init__(self, run: Callable[[list[Job]], None], settings: ServeSettings,
                 capacity: Callable[[], tuple[int | None, set[str]]] = lambda: (None, set()),
                 on_batch: Callable[[int, int], None] | None = None,
                 on_batch_done: Callable[[float], None] | None = None):
        self.run, self.settings, self.capacity = run, settings, capacity
        self.on_batch, self.on_batch_done = on_batch, on_batch_done
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._arrivals = 0
        self._queued_rows = 0
        self._stopping = False
        self._rows_per_s = 0.0  # recent throughput, for Retry-After
        self._thread: threading.Thread | None = None

    # -- requests --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Hold while a request is read and checked: a batch about to go waits for it (up to ``max_wait_ms``)."""
        with self._cond:
            self._arrivals += 1
        try:
            yield
        finally:
            with self._cond:
                self._arrivals -= 1
                self._cond.notify_all()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise Unavailable("the server is shutting down")
            limit = self.settings.max_queue_rows
            if self._queued_rows + job.rows > limit:
                raise Overloaded(f"the queue is full ({self._queued_rows} rows waiting, limit {limit}); retry "
                                 "later", retry_after=self._retry_after())
            job.queued_at = time.monotonic()
            self._queue.append(job)
            self._queued_rows += job.rows
            self._cond.notify_all()

    def _retry_after(self) -> int:
        rate = self._rows_per_s
        return max(1, min(60, math.ceil(self._queued_rows / rate))) if rate > 0 else 1

    @property
    def queued(self) -> tuple[int, int]:
        """(requests, rows) waiting."""
        with self._cond:
            return len(self._queue), self._queued_rows

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> "Scheduler":
        self._thread = threading.Thread(target=self._work, name="adapterhub-batches", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new jobs, run the queued ones, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the worker ------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as exc:  # noqa: BLE001 - a bug in the bookkeeping must not stop the worker
                for job in batch:
                    job.fail(exc)

    def _next_batch(self) -> list[Job] | None:
        wait_s = self.settings.max_wait_ms / 1000
        with self._cond:
            while True:
                while self._queue and self._queue[0].cancelled:
                    self._queued_rows -= self._queue.popleft().rows
                if not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                head = self._queue[0]
                left = head.queued_at + wait_s - time.monotonic()
                if left > 0 and self._arrivals > 0 and not self._stopping and \
                        self._rows_of(head.key) < self.settings.max_batch_rows:
                    self._cond.wait(left)
                    continue
                return self._take(head.key)

    def _rows_of(self, key: tuple) -> int:
        return sum(j.rows for j in self._queue if j.key == key and not j.cancelled)

    def _take(self, key: tuple) -> list[Job]:
        """The oldest job and the later ones of its kind that fit (rows, distinct adapters); the rest stay."""
        limit, pinned = self.capacity()
        batch: list[Job] = []
        rows, names = 0, set()
        keep: collections.deque[Job] = collections.deque()
        for job in self._queue:
            if job.cancelled:
                self._queued_rows -= job.rows
                continue
            fits = job.key == key and rows + job.rows <= self.settings.max_batch_rows and \
                (limit is None or not batch or len(names | job.names | pinned) <= limit)
            if fits:
                batch.append(job)
                rows += job.rows
                names |= job.names
                self._queued_rows -= job.rows
            else:
                keep.append(job)
        self._queue = keep
        return batch

    def _run(self, batch: list[Job]) -> None:
        rows = sum(j.rows for j in batch)
        if self.on_batch is not None:
            self.on_batch(rows, len(set().union(*(j.names for j in batch))))
        t0 = time.perf_counter()
        try:
            self.run(batch)
        except BaseException as exc:  # noqa: BLE001 - every job gets its answer
            if len(batch) == 1:
                batch[0].fail(exc)
            else:
                self._one_by_one(batch, exc)
        for job in batch:  # a run that forgot a job is a bug: never leave a request hanging
            if not job.done:
                job.fail(RuntimeError("the batch ended without an answer for this request"))
        seconds = time.perf_counter() - t0
        if seconds > 0:
            rate = rows / seconds
            self._rows_per_s = rate if self._rows_per_s == 0 else 0.8 * self._rows_per_s + 0.2 * rate
        if self.on_batch_done is not None:
            self.on_batch_done(seconds)

    def _one_by_one(self, batch: list[Job], exc: BaseException) -> None:
        for job in batch:
            if job.done or job.started or job.cancelled:
                if not job.done:
                    job.fail(exc)
                continue
            try:
                self.run([job])
            except BaseException as e:  # noqa: BLE001
                job.fail(e)


__all__ = ["Job", "Scheduler"]
