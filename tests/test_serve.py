"""``adapterhub serve`` on real uvicorn, loopback, free ports: concurrent mixed requests equal in-process predict
row for row in shared batches, a hot replace never mixes versions within a request, 429 when the queue is full,
metrics move, graceful drain, adapter management, LRU residency behind the server. (The OpenAI endpoints and
the bad-input table live in test_serve_openai.py / test_serve_inputs.py.)"""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapterhub.model import predicting
from serve_helpers import SENT, TEXTS, bert_model, bert_store, call, metric, serving

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path):
    return bert_store(tmp_path / "store")


def reference(model, texts, adapters):
    """In-process predictions and sequence-classification probabilities (row -> list)."""
    probs: dict[int, list[float]] = {}

    def hook(rows, res):
        probs.update({rows[r]: p for r, p in predicting.sequence_probabilities(res).items()})

    preds = predicting.predict(model, texts, adapters, batch_size=len(texts), on_output=hook)
    return preds, probs


def assert_rows_equal(got: list[dict], preds, probs, offset: int = 0) -> None:
    for k, row in enumerate(got):
        i = offset + k
        if "label" in row:
            assert row["label"] == preds[i]
            assert list(row["probabilities"]) == SENT or len(row["probabilities"]) == 3
            assert list(row["probabilities"].values()) == pytest.approx(probs[i], abs=1e-5)
        else:
            assert row["tags"] == preds[i]


def test_concurrent_mixed_requests_equal_in_process_predict(store):
    rng = random.Random(0)
    names = ["sent", "topic", "ner"]
    requests = []
    for _ in range(24):
        n = rng.randint(1, 4)
        requests.append(([rng.choice(TEXTS) for _ in range(n)], [rng.choice(names) for _ in range(n)]))
    ref_model = bert_model(store)
    flat_t = [t for ts, _ in requests for t in ts]
    flat_a = [a for _, ads in requests for a in ads]
    preds, probs = reference(ref_model, flat_t, flat_a)

    model = bert_model(store)  # nothing resident: every adapter loads on first use
    with serving(model, max_batch_rows=32, max_wait_ms=50) as srv:
        start = threading.Barrier(len(requests))

        def send(req):
            start.wait(10)
            texts, ads = req
            body = {"inputs": texts, "adapters": ads, "probabilities": True} if len(set(ads)) > 1 else \
                {"inputs": texts, "adapter": ads[0], "probabilities": True}
            return call(srv, "POST", "/v1/predict", body)

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, requests))
        offset = 0
        for (texts, ads), (status, _, body) in zip(requests, answers):
            assert status == 200, body
            assert [r["adapter"] for r in body["predictions"]] == ads
            assert_rows_equal(body["predictions"], preds, probs, offset)
            offset += len(texts)
        batches = metric(srv, "adapterhub_batch_rows_count")
        assert metric(srv, "adapterhub_batch_rows_sum") == len(flat_t)
        assert 1 <= batches < len(requests)  # requests shared batches: one routed forward each
        assert metric(srv, "adapterhub_batch_adapters_bucket", le="1.0") < batches  # and mixed adapters
    assert model.residency.loads == 3  # one load per cold adapter, however many requests asked at once


def test_hot_replace_during_load_never_mixes_versions(store):
    texts = TEXTS[:4]
    ref = bert_model(store)
    versions = {}
    for v in (1, 2):
        ref.load_adapter("sent", version=v, store=store, replace=True)
        versions[v] = reference(ref, texts, ["sent"] * 4)[1]
    assert versions[1][0] != pytest.approx(versions[2][0], abs=1e-3)  # the versions differ on every row
    model = bert_model(store)
    model.load_adapter("sent", version=1, store=store)
    seen, bad, stop = {1: 0, 2: 0}, [], threading.Event()
    with serving(model, max_wait_ms=5) as srv:
        def client():
            while not stop.is_set():
                status, _, body = call(srv, "POST", "/v1/predict",
                                       {"adapter": "sent", "inputs": texts, "probabilities": True})
                assert status == 200, body
                rows = [list(r["probabilities"].values()) for r in body["predictions"]]
                match = [v for v in (1, 2) if all(r == pytest.approx(versions[v][i], abs=1e-5)
                                                  for i, r in enumerate(rows))]
                if match:
                    seen[match[0]] += 1
                else:
                    bad.append(rows)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for k in range(10):
                status, _, body = call(srv, "POST", "/v1/adapters",
                                       {"source": "sent", "version": 2 if k % 2 == 0 else 1, "replace": True})
                assert status == 200, body
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not bad, f"{len(bad)} answers mixed versions"
    assert seen[1] > 0 and seen[2] > 0, seen


def test_full_queue_answers_429_with_retry_after(store):
    model = bert_model(store)
    entered, release = threading.Event(), threading.Event()
    with serving(model, max_batch_rows=4, max_queue_rows=4) as srv:
        run = srv.scheduler.run

        def held(jobs):
            entered.set()
            release.wait(30)
            run(jobs)

        srv.scheduler.run = held
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(call, srv, "POST", "/v1/predict", {"adapter": "sent", "inputs": TEXTS[:1]})
            assert entered.wait(10)  # the worker is busy with the first request
            second = pool.submit(call, srv, "POST", "/v1/predict", {"adapter": "topic", "inputs": TEXTS[:4]})
            deadline = time.monotonic() + 10
            while srv.scheduler.queued != (1, 4) and time.monotonic() < deadline:
                time.sleep(0.01)
            status, headers, body = call(srv, "POST", "/v1/predict", {"adapter": "sent", "inputs": TEXTS[:1]})
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert body["error"]["type"] == "rate_limit_error" and "queue is full" in body["error"]["message"]
            assert metric(srv, "adapterhub_queue_rows") == 4
            release.set()
            assert first.result()[0] == 200 and second.result()[0] == 200
        assert metric(srv, "adapterhub_requests_total", endpoint="/v1/predict", status="429") == 1
        assert metric(srv, "adapterhub_queue_rows") == 0


def test_metrics_move(store):
    model = bert_model(store, max_resident=2)
    with serving(model) as srv:
        before = metric(srv, "adapterhub_requests_total", endpoint="/v1/predict", adapter="sent", status="200")
        for _ in range(3):
            assert call(srv, "POST", "/v1/predict", {"adapter": "sent", "inputs": TEXTS[:2]})[0] == 200
        assert call(srv, "POST", "/v1/predict", {"adapter": "nope", "inputs": TEXTS[:2]})[0] == 404
        for name in ("topic", "ner"):  # max_resident=2: the third adapter evicts the least recently used
            assert call(srv, "POST", "/v1/predict", {"adapter": name, "inputs": TEXTS[:1]})[0] == 200
        assert metric(srv, "adapterhub_requests_total", endpoint="/v1/predict", adapter="sent", status="200") \
            == before + 3
        assert metric(srv, "adapterhub_request_errors_total", endpoint="/v1/predict", adapter="-",
                      status="404") == 1
        assert metric(srv, "adapterhub_request_seconds_count", endpoint="/v1/predict", adapter="sent") == 3
        assert metric(srv, "adapterhub_batch_rows_sum") == 8
        assert metric(srv, "adapterhub_adapter_loads_total", trigger="request") == 3
        assert metric(srv, "adapterhub_adapter_load_seconds_count", trigger="request") == 3
        assert metric(srv, "adapterhub_adapter_evictions_total") == 1
        assert metric(srv, "adapterhub_resident_adapters") == 2
        assert metric(srv, "adapterhub_queue_requests") == 0


def test_graceful_stop_drains_requests_in_flight(store):
    model = bert_model(store)
    entered, release = threading.Event(), threading.Event()
    srv_cm = serving(model)
    srv = srv_cm.__enter__()
    run = srv.scheduler.run

    def held(jobs):
        entered.set()
        release.wait(30)
        run(jobs)

    srv.scheduler.run = held
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(call, srv, "POST", "/v1/predict", {"adapter": "sent", "inputs": TEXTS[:2]})
        assert entered.wait(10)
        second = pool.submit(call, srv, "POST", "/v1/predict", {"adapter": "ner", "inputs": TEXTS[:2]})
        while srv.scheduler.queued[0] != 1:
            time.sleep(0.01)
        stopping = pool.submit(srv_cm.__exit__, None, None, None)
        time.sleep(0.3)
        assert srv.context.draining() and not stopping.done()  # waits for the requests in flight
        release.set()
        assert first.result()[0] == 200 and second.result()[0] == 200
        stopping.result(timeout=30)
    with pytest.raises(OSError):
        call(srv, "GET", "/health", timeout=2)


def test_adapter_management(store, tmp_path):
    model = bert_model(store)
    with serving(model) as srv:
        status, _, body = call(srv, "POST", "/v1/adapters", {"source": "sent", "name": "sent1", "version": 1,
                                                             "pin": True})
        assert status == 200 and body["loaded"][0]["name"] == "sent1" and body["loaded"][0]["pinned"]
        assert call(srv, "POST", "/v1/adapters", {"source": "sent", "name": "sent1"})[0] == 409
        d = tmp_path / "topic-dir"
        model.save_adapter("sent1", d)
        status, _, body = call(srv, "POST", "/v1/adapters", {"source": str(d), "name": "fromdir"})
        assert status == 200 and body["loaded"][0]["task"] == "sequence-classification"
        status, _, body = call(srv, "GET", "/v1/adapters")
        assert [a["name"] for a in body["resident"]] == ["fromdir", "sent1"] and body["stored"] == ["ner", "sent",
                                                                                                     "topic"]
        status, _, body = call(srv, "GET", "/v1/models")
        ids = {m["id"]: m["adapterhub"] for m in body["data"]}
        assert ids["tiny-bert"]["kind"] == "base" and ids["sent1"]["pinned"] and not ids["topic"]["resident"]
        assert ids["sent"]["version"] == 2 and ids["ner"]["task"] == "token-classification"
        assert call(srv, "GET", "/v1/models/topic")[2]["adapterhub"]["labels"] == ["a", "b", "c"]
        assert call(srv, "POST", "/v1/adapters/topic/pin")[2]["pinned"]  # stored: loaded, then pinned
        assert call(srv, "POST", "/v1/adapters/sent1/unpin")[2]["pinned"] is False
        assert call(srv, "POST", "/v1/adapters/sent1/unpin")[0] == 404  # not pinned any more
        status, _, body = call(srv, "DELETE", "/v1/adapters/fromdir")
        assert status == 200 and body == {"deleted": "fromdir", "stored": False}
        assert call(srv, "DELETE", "/v1/adapters/fromdir")[0] == 404
        assert sorted(model.adapters) == ["sent1", "topic"] and model.residency.pinned == {"topic"}


def test_max_resident_behind_the_server(store):
    model = bert_model(store, max_resident=2)
    with serving(model) as srv:
        assert call(srv, "POST", "/v1/adapters/sent/pin")[0] == 200
        for name in ("topic", "ner", "topic"):
            assert call(srv, "POST", "/v1/predict", {"adapter": name, "inputs": TEXTS[:1]})[0] == 200
            assert "sent" in model.adapters and len(model.adapters) <= 2
        status, _, body = call(srv, "POST", "/v1/predict", {"adapters": ["sent", "topic", "ner"],
                                                            "inputs": TEXTS[:3]})
        assert status == 400 and body["error"]["param"] == "adapters" and "at most 2" in body["error"]["message"]


def test_bearer_token(store):
    with serving(bert_model(store), token="s3cret") as srv:
        assert call(srv, "GET", "/health")[0] == 200
        for path in ("/ready", "/metrics", "/v1/models"):
            status, headers, body = call(srv, "GET", path)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", path
            assert call(srv, "GET", path, token="wrong")[0] == 401
        assert call(srv, "POST", "/v1/predict", {"adapter": "sent", "inputs": ["x"]})[0] == 401
        assert call(srv, "POST", "/v1/predict", {"adapter": "sent", "inputs": ["x"]}, token="s3cret")[0] == 200
        status, _, body = call(srv, "GET", "/ready", token="s3cret")
        assert status == 200 and body["base"] == "tiny-bert"


def test_answers_are_not_held_back_by_delayed_acks(store):
    """Connections get TCP_NODELAY: without it a response's head and body wait out the client's delayed ACK
    (~40 ms per request on Linux)."""
    import http.client
    import statistics

    with serving(bert_model(store)) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            times.append(time.perf_counter() - t0)
        conn.close()
    assert statistics.median(times) < 0.02, times


def test_a_failing_batch_is_retried_request_by_request(store, tmp_path):
    """A request whose adapter was deleted after it was queued fails alone (404 naming it); the request it shared
    a batch with is answered."""
    model = bert_model(store)
    src = bert_model(store)
    src.load_adapter("topic", store=store)
    src.save_adapter("topic", tmp_path / "topic-dir")
    model.load_adapter(tmp_path / "topic-dir", name="mine")  # not in the store: cannot come back once deleted
    entered, release = threading.Event(), threading.Event()
    with serving(model) as srv:
        run = srv.scheduler.run

        def held(jobs):
            entered.set()
            release.wait(30)
            run(jobs)

        srv.scheduler.run = held
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(call, srv, "POST", "/v1/predict", {"adapter": "sent", "inputs": TEXTS[:1]})
            assert entered.wait(10)
            a = pool.submit(call, srv, "POST", "/v1/predict", {"adapter": "ner", "inputs": TEXTS[:2]})
            b = pool.submit(call, srv, "POST", "/v1/predict", {"adapters": ["ner", "mine"], "inputs": TEXTS[:2]})
            while srv.scheduler.queued[0] != 2:
                time.sleep(0.01)
            assert call(srv, "DELETE", "/v1/adapters/mine")[0] == 200
            release.set()
            assert first.result()[0] == 200 and a.result()[0] == 200
            status, _, body = b.result()
            assert status == 404 and "'mine'" in body["error"]["message"]
        assert metric(srv, "adapterhub_batch_rows_count") == 2  # the first request, then a and b together


def test_load_from_a_hub_repo(store, tmp_path, monkeypatch, hf_env):
    """``POST /v1/adapters`` with a Hub repo id (here the self-hosted hub): loaded, served; a missing repo is a
    4xx naming it."""
    from adapterhub.hub.server import HubServer

    token = "ahub_serve_test_token"
    monkeypatch.setenv("HF_TOKEN", token)
    hub = HubServer(tmp_path / "hubroot", tokens={token: "alice"}).start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        src = bert_model(store)
        src.load_adapter("topic", store=store)
        src.push_to_hub("topic", "alice/topic", progress=False)
        want = src.predict(TEXTS[:3], adapters="topic")
        with serving(bert_model(store)) as srv:
            status, _, body = call(srv, "POST", "/v1/adapters", {"source": "alice/topic", "name": "hubtopic"})
            assert status == 200, body
            status, _, body = call(srv, "POST", "/v1/predict", {"adapter": "hubtopic", "inputs": TEXTS[:3]})
            assert status == 200 and [r["label"] for r in body["predictions"]] == want
            status, _, body = call(srv, "POST", "/v1/adapters", {"source": "alice/nothing-here"})
            assert status == 400 and "alice/nothing-here not found" in body["error"]["message"], body
            assert body["error"]["param"] == "source"
    finally:
        hub.stop()
