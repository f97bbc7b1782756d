"""LRU residency: stored adapters load on first use, the least recently used unpinned one is evicted past
``max_resident``, concurrent requests for a cold adapter load it once, and refusals change nothing."""
from __future__ import annotations

import threading

import pytest
import torch

from adapterhub import AdapterModel, LoRA
from adapterhub.errors import AdapterHubError, AdapterNameError
from adapterhub.store import Store
from conftest import make_tokenizer, tiny_bert

TEXTS = ["the film was good", "a bad plot"]


@pytest.fixture
def stored(tmp_path):
    store = Store(tmp_path / "store")
    src = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    for i, n in enumerate("abcde"):
        src.add_adapter(n, LoRA(r=2), labels=["neg", "pos"])
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in src.adapter_parameters(n):
                p.copy_(torch.randn(p.shape, generator=g))
        src.store_adapter(n, store=store)
    refs = {n: src.predict(TEXTS, adapters=n) for n in "abcde"}
    return store, refs


def test_load_on_first_use_and_lru_eviction(stored):
    store, refs = stored
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert", store=store, max_resident=2)
    assert model.predict(TEXTS, adapters="a") == refs["a"] and model.adapters == ["a"]
    assert model.predict(TEXTS, adapters="b") == refs["b"]
    assert model.predict(TEXTS, adapters="a") == refs["a"]  # a is now the most recent
    assert model.predict(TEXTS, adapters="c") == refs["c"]
    assert sorted(model.adapters) == ["a", "c"]  # b was the least recently used
    model.pin("a")
    assert model.predict(TEXTS, adapters="d") == refs["d"]
    assert sorted(model.adapters) == ["a", "d"]  # c evicted, a pinned
    assert model.predict(TEXTS, adapters=["a", "d"]) == [refs["a"][0], refs["d"][1]]
    assert model.residency.loads == 4 and model.residency.evictions == 2
    timed = []
    model.residency.on_load = lambda name, seconds: timed.append((name, seconds))
    assert model.predict(TEXTS, adapters="e") == refs["e"]
    assert [n for n, _ in timed] == ["e"] and timed[0][1] > 0 and model.residency.loads == 5
    with pytest.raises(AdapterNameError, match="unknown adapter 'zzz'"):
        model.predict(TEXTS, adapters="zzz")  # neither loaded nor stored


def test_nothing_evictable_is_refused_and_changes_nothing(stored):
    store, refs = stored
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert", store=store, max_resident=2)
    model.predict(TEXTS, adapters="a")
    model.pin("a")
    model.add_adapter("mine", LoRA(r=2), labels=["x", "y"])  # trainable: never evicted
    with pytest.raises(AdapterHubError, match=r"none can be evicted \(pinned: \['a'\]"):
        model.predict(TEXTS, adapters="b")
    assert sorted(model.adapters) == ["a", "mine"]
    with pytest.raises(AdapterHubError, match="none can be evicted"):  # the request's own adapters stay
        AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert", store=store,
                     max_resident=1).predict(TEXTS, adapters=["a", "b"])
    with pytest.raises(AdapterNameError, match="not pinned"):
        model.unpin("b")
    with pytest.raises(AdapterHubError, match="max_resident must be a positive int"):
        AdapterModel(tiny_bert(), make_tokenizer(), store=store, max_resident=0)


def test_concurrent_requests_for_a_cold_adapter_load_it_once(stored):
    store, refs = stored
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert", store=store, max_resident=3)
    results, errors = [], []
    start = threading.Barrier(6)

    def ask():
        try:
            start.wait()
            results.append(model.predict(TEXTS, adapters="e"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and results == [refs["e"]] * 6
    assert model.residency.loads == 1 and model.adapters == ["e"]
