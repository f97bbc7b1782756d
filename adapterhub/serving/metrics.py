"""Prometheus metrics of one server, in its own registry (``GET /metrics``): requests, errors and latency by
endpoint and adapter; rows, distinct adapters and time per batch; the queue; resident and pinned adapters; adapter
loads (on first use by a request, or through the API), evictions and load latency.

The ``adapter`` label is the request's adapter when it names one known adapter, ``mixed`` for several, ``-``
otherwise (unknown names never become labels: a client cannot grow the series without bound)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY = (.001, .0025, .005, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 10, 30, 60)
LOAD = (.001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1, 2.5, 5)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    def __init__(self, model):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("adapterhub_requests", "HTTP requests", ["endpoint", "adapter", "status"],
                                registry=r)
        self.errors = Counter("adapterhub_request_errors", "HTTP requests answered with a 4xx or 5xx",
                              ["endpoint", "adapter", "status"], registry=r)
        self.latency = Histogram("adapterhub_request_seconds", "request latency (whole response, streams too)",
                                 ["endpoint", "adapter"], buckets=LATENCY, registry=r)
        self.batch_rows = Histogram("adapterhub_batch_rows", "rows per batch (one routed call)", buckets=ROWS,
                                    registry=r)
        self.batch_adapters = Histogram("adapterhub_batch_adapters", "distinct adapters per batch", buckets=ROWS,
                                        registry=r)
        self.batch_seconds = Histogram("adapterhub_batch_seconds", "time to run one batch", buckets=LATENCY,
                                       registry=r)
        self.queue_rows = Gauge("adapterhub_queue_rows", "rows waiting for a batch", registry=r)
        self.queue_requests = Gauge("adapterhub_queue_requests", "requests waiting for a batch", registry=r)
        self.load_seconds = Histogram("adapterhub_adapter_load_seconds", "time to load one adapter",
                                      ["trigger"], buckets=LOAD, registry=r)
        self.api_loads = 0
        r.register(_ModelCollector(model, self))

    def observe_batch(self, rows: int, adapters: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_adapters.observe(adapters)

    def observe_load(self, trigger: str, seconds: float) -> None:
        """``trigger``: ``request`` (first use, by the model's residency) or ``api`` (POST /v1/adapters)."""
        if trigger == "api":
            self.api_loads += 1
        self.load_seconds.labels(trigger).observe(seconds)

    def observe_request(self, endpoint: str, adapter: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, adapter, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, adapter, str(status)).inc()
        self.latency.labels(endpoint, adapter).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ModelCollector:
    """Read at scrape time from the model: resident / pinned adapters, loads and evictions."""

    def __init__(self, model, metrics: ServeMetrics):
        self.model, self.metrics = model, metrics

    def describe(self):
        return []

    def collect(self):
        res = self.model.residency
        yield GaugeMetricFamily("adapterhub_resident_adapters", "adapters loaded in the model",
                                value=len(self.model.adapters))
        yield GaugeMetricFamily("adapterhub_pinned_adapters", "adapters never evicted", value=len(res.pinned))
        loads = CounterMetricFamily("adapterhub_adapter_loads", "adapters loaded", labels=["trigger"])
        loads.add_metric(["request"], res.loads)
        loads.add_metric(["api"], self.metrics.api_loads)
        yield loads
        yield CounterMetricFamily("adapterhub_adapter_evictions", "least recently used adapters evicted "
                                  "(max_resident)", value=res.evictions)


__all__ = ["ServeMetrics"]
