"""Helpers of the serving tests: a store of random adapters on the tiny BERT, a server on a free loopback port
(always stopped), and a small JSON HTTP client."""
from __future__ import annotations

import contextlib
import http.client
import json
from typing import Any, Iterator

import torch

from adapterhub import AdapterModel, Bottleneck, LoRA
from adapterhub.serving import ServeServer, ServeSettings
from adapterhub.store import Store
from conftest import make_tokenizer, tiny_bert

TEXTS = ["the film was good", "a bad plot", "i love paris and london", "obama said the team won",
         "new york city is great", "it was awful", "the actor lost", "fine"]
SENT, TOPIC, TAGS = ["neg", "pos"], ["a", "b", "c"], ["O", "B-loc", "I-loc"]


def randomize(model: AdapterModel, name: str, seed: int, std: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def bert_store(root) -> Store:
    """sent (LoRA, 2 versions), topic (LoRA, 3 labels), ner (bottleneck, token classification)."""
    store = Store(root)
    src = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    src.add_adapter("sent", LoRA(r=2), labels=SENT)
    src.add_adapter("topic", LoRA(r=4), labels=TOPIC, pooling="cls")
    src.add_adapter("ner", Bottleneck(reduction_factor=4), task="token-classification", labels=TAGS)
    for i, n in enumerate(["sent", "topic", "ner"]):
        randomize(src, n, seed=10 + i)
        src.store_adapter(n, store=store)
    randomize(src, "sent", seed=99)
    src.store_adapter("sent", store=store)  # sent@v2
    return store


def bert_model(store: Store | None = None, max_resident: int | None = None) -> AdapterModel:
    return AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert", store=store, max_resident=max_resident)


@contextlib.contextmanager
def serving(model: AdapterModel, token: str | None = None, **settings) -> Iterator[ServeServer]:
    server = ServeServer(model, settings=ServeSettings(**settings), token=token).start()
    try:
        yield server
    finally:
        server.stop()


def call(server: ServeServer, method: str, path: str, body: Any = None, token: str | None = None,
         raw: bytes | None = None, headers: dict | None = None, timeout: float = 30) -> tuple[int, Any, Any]:
    """(status, headers, parsed JSON or text)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        payload = r.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = payload.decode("utf-8", "replace")
    return r.status, r.headers, parsed


def metric(server: ServeServer, name: str, token: str | None = None, **labels) -> float:
    """One sample of ``/metrics`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, text = call(server, "GET", "/metrics", token=token)
    assert status == 200
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0
