"""Hot-swapping under load: threads serve requests (forward / predict / generate, per-row adapter lists and
``adapters=``) while the main thread loads, adds, activates and deletes other adapters. Every output must equal
its precomputed reference, nothing may raise, and deleted adapters must be freed."""
from __future__ import annotations

import gc
import sys
import threading
import time
import weakref

import pytest
import torch
from torch import nn

from adapterhub import AdaLoRA, AdapterModel, Bottleneck, LoRA
from adapterhub.routing import AdaptedLinear
from conftest import make_tokenizer, tiny_bert, tiny_llama

LABELS2 = ["neg", "pos"]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER"]
TEXTS = ["the film was good", "a bad plot", "i love paris and london", "it was awful", "the actor won",
         "new york city is great and fine"]
N_WORKERS = 4
MIN_ROUNDS = 6       # each worker serves at least this many rounds of all its requests ...
MIN_SWAPS = 6        # ... and the main thread completes at least this many load/delete cycles meanwhile


def randomize(model: AdapterModel, name: str, seed: int, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)


@pytest.fixture
def fast_switching():
    """Switch threads every few microseconds so that interleavings inside a forward actually happen."""
    old, old_threads = sys.getswitchinterval(), torch.get_num_threads()
    sys.setswitchinterval(1e-5)
    torch.set_num_threads(1)  # threads interleave in Python, not inside one op's thread pool
    try:
        yield
    finally:
        sys.setswitchinterval(old)
        torch.set_num_threads(old_threads)


def banked_rows(model: AdapterModel) -> int:
    """Bank rows held across all modules (0 once every banked adapter is deleted)."""
    return sum(len(b) for m in model.base.modules() if isinstance(m, AdaptedLinear) for b in m._banks.values())


def run_under_churn(serve_round, churn_once) -> tuple[list[BaseException], list[int], int]:
    """Run ``serve_round(worker)`` in N_WORKERS threads while the main thread runs ``churn_once(i)``; stop
    once every worker did MIN_ROUNDS rounds and the main thread MIN_SWAPS cycles (or after a time limit)."""
    errors: list[BaseException] = []
    rounds = [0] * N_WORKERS
    stop = threading.Event()
    start = threading.Barrier(N_WORKERS + 1)

    def worker(k: int) -> None:
        try:
            start.wait()
            while not stop.is_set():
                serve_round(k)
                rounds[k] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(N_WORKERS)]
    for t in threads:
        t.start()
    start.wait()
    swaps = 0
    deadline = time.monotonic() + 120
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            churn_once(swaps)
            swaps += 1
            if swaps >= MIN_SWAPS and min(rounds) >= MIN_ROUNDS:
                break
    except BaseException as e:  # noqa: BLE001
        errors.append(e)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return errors, rounds, swaps


# ---------------------------------------------------------------------------------------------------------
# encoder: forward + predict, sequence and token classification, LoRA / AdaLoRA / Bottleneck
# ---------------------------------------------------------------------------------------------------------

def test_hotswap_bert_forward_and_predict(tmp_path, fast_switching):
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    model.add_adapter("lora4", LoRA(r=4), labels=LABELS2)
    model.add_adapter("lora8", LoRA(r=8, target_modules="all-linear"), labels=["a", "b", "c"], pooling="cls")
    model.add_adapter("bn", Bottleneck(reduction_factor=4), labels=LABELS2)
    model.add_adapter("ada", AdaLoRA(init_r=6, target_r=4), task="token-classification", labels=TAGS)
    for i, n in enumerate(["lora4", "lora8", "bn", "ada"]):
        randomize(model, n, 100 + i)
    # adapters the main thread will load / delete over and over (they touch the same modules and new ones)
    model.add_adapter("x_lora", LoRA(r=2, target_modules="all-linear"), labels=LABELS2)
    model.add_adapter("x_bn", Bottleneck(reduction_factor=8, placement="pfeiffer"), task="token-classification",
                      labels=TAGS)
    randomize(model, "x_lora", 7)
    randomize(model, "x_bn", 8)
    d_lora = model.save_adapter("x_lora", tmp_path / "x_lora")
    d_bn = model.save_adapter("x_bn", tmp_path / "x_bn")
    model.delete_adapter("x_lora")
    model.delete_adapter("x_bn")
    model.eval()

    tok = make_tokenizer()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    routes = ["lora4", "bn", ["lora4", "bn", "lora8", "ada", "bn", "lora4"], ["ada"] * 6,
              ["lora8", "lora8", "lora4", "lora4", "bn", "bn"], ["ada", "lora4", "ada", "bn", "lora8", "ada"]]
    with torch.no_grad():
        ref_fwd = [model(ids, mask, adapters=r) for r in routes]
    ref_pred = [model.predict(TEXTS, adapters=r) for r in routes]
    assert len({str(p) for p in ref_pred}) > 2  # the references differ per route
    ref_single = [model.predict(t, adapters="ada") for t in TEXTS]

    def serve_round(k: int) -> None:
        for j in range(len(routes)):
            r = routes[(j + k) % len(routes)]
            ref = ref_fwd[(j + k) % len(routes)]
            with torch.no_grad():
                out = model(ids, mask, adapters=r)
            assert set(out.logits) == set(ref.logits)
            for n in ref.logits:
                assert torch.equal(out.rows[n], ref.rows[n])
                torch.testing.assert_close(out.logits[n], ref.logits[n], atol=1e-5, rtol=0)
            assert model.predict(TEXTS, adapters=r) == ref_pred[(j + k) % len(routes)]
            # a single text with one adapter (the uniform, gather-free path)
            assert model.predict(TEXTS[j], adapters="ada") == ref_single[j]

    weak: list[weakref.ref] = []

    def churn_once(i: int) -> None:
        a = model.load_adapter(d_lora, name=f"tmp{i}").name
        b = model.load_adapter(d_bn, name=f"tmpbn{i}").name
        c = model.add_adapter(f"new{i}", LoRA(r=3, target_modules=["key", "intermediate.dense"]), labels=LABELS2).name
        model.activate(a)  # changes the default only; the workers pass adapters= explicitly
        with torch.no_grad():
            model(ids, mask, adapters=[a, b, c, "lora4", a, b])
        assert model.entry(a).banked and model.entry(b).banked  # loaded: the inference layout
        weak.extend(weakref.ref(p) for p in model.adapter_parameters(c))
        weak.append(weakref.ref(model.entry(a).head))
        for n in (a, b, c):
            model.delete_adapter(n)

    errors, rounds, swaps = run_under_churn(serve_round, churn_once)
    if errors:
        raise errors[0]
    assert min(rounds) >= 1 and swaps >= 1
    # nothing of the churned adapters is left, and their memory is freed
    assert model.adapters == ["lora4", "lora8", "bn", "ada"]
    live = {model.entry(n).key for n in model.adapters}
    assert all(k in live for m in model.base.modules() if isinstance(m, AdaptedLinear) for k in m.units)
    assert banked_rows(model) == 0  # every loaded (banked) adapter's rows were given back
    gc.collect()
    assert weak and all(r() is None for r in weak), "deleted adapters' parameters are still referenced"
    with torch.no_grad():
        for r, ref in zip(routes, ref_fwd):
            out = model(ids, mask, adapters=r)
            for n in ref.logits:
                torch.testing.assert_close(out.logits[n], ref.logits[n], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# decoder: generate with per-row adapters while adapters come and go
# ---------------------------------------------------------------------------------------------------------

def test_hotswap_llama_generate(tmp_path, fast_switching):
    model = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    model.add_adapter("lora4", LoRA(r=4), task="causal-lm")
    model.add_adapter("bn", Bottleneck(reduction_factor=4), task="causal-lm")
    model.add_adapter("ada", AdaLoRA(init_r=6, target_r=4), task="causal-lm")
    # a classifier on the same base: its predict tokenizes with other settings than generate, concurrently
    model.add_adapter("cls", LoRA(r=4), labels=["a", "b", "c"], pooling="last")
    model.add_adapter("tags", LoRA(r=2), task="token-classification", labels=TAGS)
    for i, n in enumerate(["lora4", "bn", "ada", "cls", "tags"]):
        randomize(model, n, 200 + i, std=0.3)
    model.add_adapter("x", LoRA(r=8, target_modules="all-linear"), task="causal-lm")
    randomize(model, "x", 9, std=0.3)
    d = model.save_adapter("x", tmp_path / "x")
    model.delete_adapter("x")
    model.eval()
    texts = TEXTS[:4]
    routes = [["lora4", "bn", "ada", "lora4"], "ada", ["bn", "bn", "lora4", "ada"]]
    ref_gen = [model.generate(texts, adapters=r, max_new_tokens=4) for r in routes]
    mixed = ["cls", "lora4", "tags", "ada"]
    ref_mixed = model.predict(texts, adapters=mixed, max_new_tokens=4)
    assert ref_mixed[0] in ("a", "b", "c") and isinstance(ref_mixed[1], str) and len(ref_mixed[2]) == len(texts[2].split())
    tok = model.tokenizer
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref_logits = [model(enc["input_ids"], enc["attention_mask"], adapters=r) for r in routes]

    def serve_round(k: int) -> None:
        for j in range(len(routes)):
            i = (j + k) % len(routes)
            assert model.generate(texts, adapters=routes[i], max_new_tokens=4) == ref_gen[i]
            assert model.predict(texts, adapters=mixed, max_new_tokens=4) == ref_mixed
            with torch.no_grad():
                out = model(enc["input_ids"], enc["attention_mask"], adapters=routes[i])
            for n in ref_logits[i].logits:
                torch.testing.assert_close(out.logits[n], ref_logits[i].logits[n], atol=1e-5, rtol=0)

    weak: list[weakref.ref] = []

    def churn_once(i: int) -> None:
        a = model.load_adapter(d, name=f"tmp{i}", trainable=i % 2 == 0).name  # both layouts
        model.activate(a)
        if i % 2 == 0:
            weak.extend(weakref.ref(p) for p in model.adapter_parameters(a))
        weak.append(weakref.ref(model.entry(a).head))
        model.delete_adapter(a)

    errors, rounds, swaps = run_under_churn(serve_round, churn_once)
    if errors:
        raise errors[0]
    assert min(rounds) >= 1 and swaps >= 1
    gc.collect()
    assert weak and all(r() is None for r in weak)
    assert banked_rows(model) == 0


# ---------------------------------------------------------------------------------------------------------
# delete frees memory (no thread involved): units, head and cached stacks
# ---------------------------------------------------------------------------------------------------------

def test_delete_frees_units_head_and_caches():
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    model.add_adapter("keep", LoRA(r=4), labels=LABELS2)
    model.add_adapter("gone", LoRA(r=8, target_modules="all-linear"), labels=LABELS2)
    model.add_adapter("gone_bn", Bottleneck(reduction_factor=4), labels=LABELS2)
    for i, n in enumerate(model.adapters):
        randomize(model, n, i)
    model.eval()
    enc = make_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():  # fill the stack caches with every adapter
        model(enc["input_ids"], enc["attention_mask"], adapters=["keep", "gone", "gone_bn", "keep", "gone", "gone_bn"])
    for victim in ("gone", "gone_bn"):
        refs = [weakref.ref(p) for p in model.adapter_parameters(victim)]
        units = [weakref.ref(u) for u in model.adapter_units(victim).values()] + [weakref.ref(model.heads[victim])]
        model.delete_adapter(victim)
        gc.collect()
        assert all(r() is None for r in refs), f"{victim}: parameters still referenced"
        assert all(r() is None for r in units), f"{victim}: unit / head modules still referenced"
    assert model.adapters == ["keep"]
    assert all(isinstance(p, nn.Parameter) for p in model.adapter_parameters("keep"))


# ---------------------------------------------------------------------------------------------------------
# deterministic replays of the races the copy-on-write view in AdaptedLinear closes
# ---------------------------------------------------------------------------------------------------------

class _DeleteOnFirstLookup(frozenset):
    """A route's name set that, on the first membership test (while the layer picks its slots), runs
    ``action``: the exact moment another thread's delete_adapter can land in the middle of a forward."""

    def __new__(cls, names, action):
        self = super().__new__(cls, names)
        self.action = action
        return self

    def __contains__(self, item):
        if self.action is not None:
            action, self.action = self.action, None
            action()
        return frozenset.__contains__(self, item)


@pytest.mark.parametrize("victim", ["early", "b"])
def test_layer_forward_sees_one_view_while_adapters_are_deleted(bert_model, victim):
    """``early`` was added before the routed adapters: deleting it mid-forward used to shift the slot list under
    the iteration and silently skip adapter ``a``. ``b`` is routed: deleting it mid-forward used to raise
    KeyError. The forward now completes on the view it started with."""
    from adapterhub import routing

    model = bert_model
    for n, r in (("early", 2), ("a", 4), ("b", 3)):
        model.add_adapter(n, LoRA(r=r, target_modules=["query"]), labels=LABELS2)
        randomize(model, n, r)
    model.eval()
    layer = model.base.encoder.layer[0].attention.self.query
    key = {n: model.entry(n).key for n in ("early", "a", "b")}  # the instance keys the layer holds units under
    assert isinstance(layer, AdaptedLinear) and list(layer.units) == [key["early"], key["a"], key["b"]]
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(0))
    names = [key[n] for n in ["a", "b", "a"]]
    with torch.no_grad():
        with routing.routed(names):
            ref = layer(x)
        with routing.routed([key["a"]]):
            assert not torch.allclose(layer(x[:1]), layer.base_layer(x[:1]))  # a is not a no-op here
        route = routing.Route(names)
        route.name_set = _DeleteOnFirstLookup(route.name_set, lambda: layer.remove(key[victim]))
        with routing.routed(route):
            out = layer(x)
    assert key[victim] not in layer.units and len(layer) == 2
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    if victim == "early":  # the next forward uses the new view
        with torch.no_grad(), routing.routed(names):
            torch.testing.assert_close(layer(x), ref, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# hot reload: a new version swapped in under the same name while requests run
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("trainable", [False, True])
def test_replace_while_serving_never_mixes_versions(tmp_path, fast_switching, trainable):
    """Workers run forwards and predicts routing ``v`` beside ``w`` while the main thread swaps versions 1 and 2
    of ``v`` in and out with ``replace=True``: every call sees one version for all its ``v`` rows and layers
    (its logits equal that version's reference), never a mix, never an error; the replaced versions are freed."""
    model = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    model.add_adapter("w", LoRA(r=4), labels=LABELS2)
    randomize(model, "w", 1, std=0.3)
    dirs = []
    for version, seed in ((1, 11), (2, 22)):
        model.add_adapter(f"v{version}", LoRA(r=4, target_modules="all-linear"), labels=LABELS2)
        randomize(model, f"v{version}", seed, std=0.5)
        dirs.append(model.save_adapter(f"v{version}", tmp_path / f"v{version}"))
        model.delete_adapter(f"v{version}")
    model.eval()
    enc = make_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    route = ["v", "w", "v", "v", "w", "v"]
    refs, preds = [], []
    for d in dirs:
        model.load_adapter(d, name="v", replace=True, trainable=trainable)
        with torch.no_grad():
            refs.append(model(ids, mask, adapters=route).logits["v"])
        preds.append(model.predict(TEXTS, adapters=route))
    assert not torch.allclose(refs[0], refs[1], atol=1e-3) and preds[0] != preds[1]  # the versions differ
    seen = set()

    def serve_round(k: int) -> None:
        with torch.no_grad():
            got = model(ids, mask, adapters=route).logits["v"]
        hits = [i for i, ref in enumerate(refs) if torch.allclose(got, ref, atol=1e-5, rtol=0)]
        assert len(hits) == 1, f"v rows match neither version alone: {got} vs {refs}"
        seen.add(hits[0])
        assert model.predict(TEXTS, adapters=route) in preds

    def churn_once(i: int) -> None:
        model.load_adapter(dirs[i % 2], name="v", replace=True, trainable=trainable)

    errors, rounds, swaps = run_under_churn(serve_round, churn_once)
    if errors:
        raise errors[0]
    assert min(rounds) >= MIN_ROUNDS and swaps >= MIN_SWAPS and seen == {0, 1}
    assert model.adapters == ["w", "v"]
    live = {model.entry(n).key for n in model.adapters}
    holders = [m for m in model.base.modules() if isinstance(m, AdaptedLinear)]
    assert all(m.holds(k) is (k in live) for m in holders for k in list(m.units) + list(m._banked))
    assert banked_rows(model) == (0 if trainable else len(model.adapter_units("v")))
