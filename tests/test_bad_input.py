"""Bad input: every refusal is a clear adapterhub error naming the problem, and leaves the model's registry,
its parameters, the store and the files on disk exactly as they were."""
from __future__ import annotations

import hashlib
import json
import re
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from adapterhub import AdaLoRA, AdapterModel, Bottleneck, LoRA
from adapterhub import paths
from adapterhub.errors import (AdapterFileError, AdapterHubError, AdapterNameError, BaseMismatchError,
                               StoreError)
from adapterhub.routing import AdaptedLinear
from conftest import resign, make_tokenizer, tiny_bert, tiny_llama

LABELS = ["neg", "pos"]


# ---------------------------------------------------------------------------------------------------------
# helpers / fixtures
# ---------------------------------------------------------------------------------------------------------

def registry(model: AdapterModel) -> dict:
    """Everything a failed operation must leave as it was."""
    return {
        "names": list(model.adapters),
        "active": model.active,
        "param_ids": [id(p) for p in model.parameters()],
        "state_keys": list(model.state_dict().keys()),
        "adapted": sorted((n, tuple(m.units.keys())) for n, m in model.base.named_modules()
                          if isinstance(m, AdaptedLinear)),
        "heads": list(model.heads.keys()),
        "training": model.training,
    }


def tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 (dirs -> 'dir') of everything under ``root``."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def randomize(model: AdapterModel, name: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


class Guard:
    """Snapshot a model, the store and some directories; ``check()`` asserts nothing changed."""

    def __init__(self, model: AdapterModel, *dirs: Path):
        self.model = model
        self.dirs = [paths.home(), *dirs]
        self.reg = registry(model)
        self.files = [tree(d) for d in self.dirs]
        ids = torch.tensor([[2, 5, 10, 12, 3]])
        self.ids = ids
        self.outs = self._outputs()

    def _outputs(self):
        with torch.no_grad():
            return {n: self.model(self.ids, adapters=n).hidden_states.clone() for n in self.model.adapters}

    def check(self) -> None:
        assert registry(self.model) == self.reg
        assert [tree(d) for d in self.dirs] == self.files
        now = self._outputs()
        assert set(now) == set(self.outs)
        for n in now:
            assert torch.equal(now[n], self.outs[n]), n


@pytest.fixture
def model():
    """The target model: already holds two adapters (so a failed load must neither add nor drop wrappers)."""
    m = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    m.add_adapter("keep", LoRA(r=4), labels=LABELS)
    m.add_adapter("keep_bn", Bottleneck(reduction_factor=4), labels=LABELS)
    randomize(m, "keep", 1)
    randomize(m, "keep_bn", 2)
    m.activate("keep")
    m.eval()
    return m


@pytest.fixture
def saved(tmp_path) -> Path:
    """A good adapter directory made on an identical base (LoRA on all linears, so it shares wrappers)."""
    src = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    src.add_adapter("sent", LoRA(r=4, target_modules="all-linear"), labels=LABELS)
    randomize(src, "sent", 3)
    return src.save_adapter("sent", tmp_path / "adapters" / "sent")


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def failed_load(model: AdapterModel, source, exc, match: str, *dirs: Path, **kwargs):
    """``load_adapter(source)`` raises ``exc`` matching ``match`` and changes nothing."""
    guard = Guard(model, *dirs)
    with pytest.raises(exc, match=match):
        model.load_adapter(source, **kwargs)
    guard.check()


# ---------------------------------------------------------------------------------------------------------
# adapters made for another base
# ---------------------------------------------------------------------------------------------------------

def _bert(hidden: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64)).eval()


def test_adapter_for_other_hidden_size_refused(model, saved, tmp_path):
    other = AdapterModel(_bert(48), make_tokenizer(), base_id="bert-48")
    other.add_adapter("wide", LoRA(r=4), labels=LABELS)
    d = other.save_adapter("wide", tmp_path / "wide")
    failed_load(model, d, BaseMismatchError, r"another architecture", d)
    # allow_base_mismatch only waives a weights difference, never a shape difference
    failed_load(model, d, BaseMismatchError, r"another architecture", d, allow_base_mismatch=True)
    # and the reverse direction
    failed_load(other, saved, BaseMismatchError, r"another architecture.*fingerprint", saved)


def test_adapter_for_other_hidden_size_with_forged_fingerprint_refused_on_shapes(model, tmp_path):
    """Even with a card claiming our fingerprint, the tensor shapes are checked before anything changes."""
    other = AdapterModel(_bert(48), make_tokenizer(), base_id="bert-48")
    other.add_adapter("wide", LoRA(r=4), labels=LABELS)
    d = other.save_adapter("wide", tmp_path / "wide")
    card = json.loads((d / "adapter_card.json").read_text())
    card["base_fingerprint"] = dict(model.base_fingerprint)
    (d / "adapter_card.json").write_text(json.dumps(card))
    failed_load(model, d, BaseMismatchError, r"shape", d)


def test_adapter_for_other_architecture_refused(model, tmp_path):
    llama = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    llama.add_adapter("gen", LoRA(r=4), task="causal-lm")
    d = llama.save_adapter("gen", tmp_path / "gen")
    failed_load(model, d, BaseMismatchError, r"tiny-llama.*another architecture", d, allow_base_mismatch=True)


def test_adapter_for_same_arch_other_weights(model, tmp_path):
    other = AdapterModel(tiny_bert(seed=1), make_tokenizer(), base_id="tiny-bert-seed1")
    assert other.base_fingerprint["arch"] == model.base_fingerprint["arch"]
    assert other.base_fingerprint["weights"] != model.base_fingerprint["weights"]
    other.add_adapter("s1", LoRA(r=4), labels=LABELS)
    randomize(other, "s1", 4)
    d = other.save_adapter("s1", tmp_path / "s1")
    failed_load(model, d, BaseMismatchError, r"tiny-bert-seed1.*weights differ.*allow_base_mismatch=True", d)
    # allowed explicitly: it loads and computes with its own tensors
    before = tree(d)
    entry = model.load_adapter(d, allow_base_mismatch=True)
    assert entry.name == "s1" and "s1" in model.adapters
    assert tree(d) == before
    ref = other.adapter_state("s1")
    got = model.adapter_state("s1")  # banked: copies of its rows, the same values
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


# ---------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------

def test_unknown_adapter_names(model):
    guard = Guard(model)
    ids = torch.tensor([[2, 5, 3], [2, 6, 3]])
    with pytest.raises(AdapterNameError, match=r"unknown adapter\(s\) \['nope'\]"):
        model(ids, adapters=["keep", "nope"])
    with pytest.raises(AdapterNameError, match=r"unknown adapter 'nope'"):
        model(ids, adapters="nope")
    with pytest.raises(AdapterNameError, match=r"unknown adapter 'nope'.*loaded: \['keep', 'keep_bn'\]"):
        model.activate("nope")
    with pytest.raises(AdapterNameError, match=r"unknown adapter 'nope'"):
        model.delete_adapter("nope")
    with pytest.raises(AdapterNameError, match=r"unknown adapter\(s\) \['nope'\]"):
        model.predict(["the film"], adapters=["nope"])
    with pytest.raises(AdapterNameError, match=r"unknown adapter 'nope'"):
        model.save_adapter("nope", Path(paths.home()) / "x")
    with pytest.raises(AdapterNameError, match=r"unknown adapter 'nope'"):
        model.store_adapter("nope")
    with pytest.raises(AdapterNameError, match=r"unknown adapter 'nope'"):
        model.adapter_parameters("nope")
    guard.check()


def test_no_adapter_given_and_none_active(model):
    model.activate(None)
    guard = Guard(model)
    with pytest.raises(AdapterHubError, match=r"no adapter given and none active"):
        model(torch.tensor([[2, 5, 3]]))
    guard.check()


def test_duplicate_name(model, saved):
    guard = Guard(model, saved)
    with pytest.raises(AdapterNameError, match=r"'keep' is already loaded"):
        model.add_adapter("keep", LoRA(r=2), labels=LABELS)
    with pytest.raises(AdapterNameError, match=r"'keep' is already loaded"):
        model.add_adapter("keep", Bottleneck(), labels=LABELS)
    guard.check()
    failed_load(model, saved, AdapterNameError, r"'keep' is already loaded", saved, name="keep")
    model.load_adapter(saved)
    failed_load(model, saved, AdapterNameError, r"'sent' is already loaded", saved)


BAD_NAMES = [
    ("a/b", r"path separator"),
    ("a\\b", r"path separator"),
    ("..", r"'\.\.'"),
    ("a..b", r"'\.\.'"),
    ("../etc", r"path separator|'\.\.'"),
    ("", r"empty"),
    ("x" * 65, r"too long: 65 characters.*limit is 64"),
    ("has space", r"may only hold letters"),
    (".hidden", r"may only hold letters"),
]


@pytest.mark.parametrize("bad,match", BAD_NAMES)
def test_bad_names(model, saved, bad, match):
    guard = Guard(model, saved)
    with pytest.raises(AdapterNameError, match=match):
        model.add_adapter(bad, LoRA(r=2), labels=LABELS)
    guard.check()
    failed_load(model, saved, AdapterNameError, match, saved, name=bad)


def test_64_char_name_is_fine(model):
    model.add_adapter("x" * 64, LoRA(r=2), labels=LABELS)
    assert "x" * 64 in model.adapters


def test_non_string_and_reserved_names(model):
    guard = Guard(model)
    with pytest.raises(AdapterNameError, match=r"must be a string"):
        model.add_adapter(3, LoRA(r=2), labels=LABELS)
    with pytest.raises(AdapterNameError, match=r"'train' is reserved"):
        model.add_adapter("train", LoRA(r=2), labels=LABELS)
    guard.check()


def test_bad_configs_and_tasks(model):
    guard = Guard(model)
    with pytest.raises(AdapterHubError, match=r"LoRA\.r must be a positive int"):
        model.add_adapter("x", LoRA(r=0), labels=LABELS)
    with pytest.raises(AdapterHubError, match=r"target_r \(9\) must be <= init_r \(4\)"):
        model.add_adapter("x", AdaLoRA(init_r=4, target_r=9), labels=LABELS)
    with pytest.raises(AdapterHubError, match=r"placement must be 'houlsby' or 'pfeiffer'"):
        model.add_adapter("x", Bottleneck(placement="middle"), labels=LABELS)
    with pytest.raises(AdapterHubError, match=r"needs labels"):
        model.add_adapter("x", LoRA(r=2))
    with pytest.raises(AdapterHubError, match=r"labels must be unique"):
        model.add_adapter("x", LoRA(r=2), labels=["a", "a"])
    with pytest.raises(AdapterHubError, match=r"unknown task 'regression'"):
        model.add_adapter("x", LoRA(r=2), task="regression", labels=LABELS)
    with pytest.raises(AdapterHubError, match=r"causal-lm' needs a base with an LM head"):
        model.add_adapter("x", LoRA(r=2), task="causal-lm")
    with pytest.raises(AdapterHubError, match=r"matches no nn\.Linear"):
        model.add_adapter("x", LoRA(r=2, target_modules=["q_proj"]), labels=LABELS)
    with pytest.raises(AdapterHubError, match=r"unknown head option\(s\) \['poolin'\]"):
        model.add_adapter("x", LoRA(r=2), labels=LABELS, poolin="cls")
    with pytest.raises(AdapterHubError, match=r"config must be a method config"):
        model.add_adapter("x", {"method": "lora"}, labels=LABELS)
    guard.check()


# ---------------------------------------------------------------------------------------------------------
# broken files
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fname", ["adapter_model.safetensors", "adapterhub_head.safetensors"])
@pytest.mark.parametrize("how", ["half", "garbage", "empty"])
def test_corrupt_safetensors(model, saved, tmp_path, fname, how):
    d = copy_dir(saved, tmp_path / f"bad-{how}")
    f = d / fname
    data = f.read_bytes()
    f.write_bytes({"half": data[: len(data) // 2], "garbage": b"\x9f\x00garbage" * 50, "empty": b""}[how])
    failed_load(model, d, AdapterFileError, rf"{fname}: sha256 .*corrupted or tampered file, refused", d)
    resign(d)  # the card now vouches for the broken bytes: the parser must still refuse them
    failed_load(model, d, AdapterFileError, rf"{fname}.*corrupt or truncated", d)


@pytest.mark.parametrize("fname", ["adapter_model.safetensors", "adapterhub_head.safetensors"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_refused(model, saved, tmp_path, fname, value):
    from safetensors.torch import load_file, save_file

    d = copy_dir(saved, tmp_path / "nonfinite")
    st = load_file(str(d / fname))
    k = sorted(st)[0]
    st[k] = st[k].clone()
    st[k].view(-1)[0] = value
    save_file(st, str(d / fname))
    resign(d)  # a signed file, but one that would give NaN outputs
    failed_load(model, d, AdapterFileError, rf"{fname}: tensor '{re.escape(k)}' holds NaN or Inf values", d)


def test_bit_flip_refused_from_directory_store_and_cli(model, saved, tmp_path, capsys):
    """One flipped bit in the weights: refused by load_adapter(dir), load_adapter(store name) and the CLI."""
    from adapterhub.cli import main

    d = copy_dir(saved, tmp_path / "flip")
    data = bytearray((d / "adapter_model.safetensors").read_bytes())
    data[-3] ^= 0x10
    (d / "adapter_model.safetensors").write_bytes(bytes(data))
    failed_load(model, d, AdapterFileError, r"adapter_model\.safetensors: sha256 .*tampered", d)
    entry = model.store_adapter("keep")
    stored = bytearray((entry.path / "adapter_model.safetensors").read_bytes())
    stored[-3] ^= 0x10
    (entry.path / "adapter_model.safetensors").write_bytes(bytes(stored))
    failed_load(model, "keep", AdapterFileError, r"sha256 .*tampered", name="keep2")
    base_dir = tmp_path / "base"  # the same tiny base on disk, for the CLI
    tiny_bert().save_pretrained(base_dir)
    make_tokenizer().save_pretrained(base_dir)
    capsys.readouterr()
    assert main(["predict", "keep", "a fine film", "--base", str(base_dir)]) == 2
    err = capsys.readouterr().err
    assert "adapter_model.safetensors: sha256" in err and "tampered" in err


def test_corrupt_json_files(model, saved, tmp_path):
    for fname, match in [("adapter_config.json", r"adapter_config\.json: not valid JSON"),
                         ("adapter_card.json", r"adapter_card\.json: not valid JSON"),
                         ("adapterhub_head.json", r"adapterhub_head\.json: not valid JSON")]:
        d = copy_dir(saved, tmp_path / f"bad-{fname}")
        (d / fname).write_text('{"peft_type": "LORA", ')
        failed_load(model, d, AdapterFileError, match, d)
    d = copy_dir(saved, tmp_path / "list-config")
    (d / "adapter_config.json").write_text("[1, 2]")
    failed_load(model, d, AdapterFileError, r"expected a JSON object", d)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything tries to unpickle."""
    calls = []

    def boom(*a, **k):
        calls.append(a)
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(torch.serialization, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)

    class NoUnpickler:
        def __init__(self, *a, **k):
            boom()

    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    return calls


def _write_pickle(path: Path, state: dict) -> None:
    torch.save(state, str(path))  # (written before the guard is installed)


def test_pickle_only_directory_refused_unopened(model, tmp_path, no_unpickling):
    d = tmp_path / "pickled"
    d.mkdir()
    _write_pickle(d / "adapter_model.bin", {"base_model.model.encoder.layer.0.attention.self.query.lora_A.weight":
                                            torch.zeros(4, 32)})
    failed_load(model, d, AdapterFileError, r"pickle.*adapter_model\.bin.*never loads pickles", d)
    assert no_unpickling == []


def test_peft_dir_with_pickle_weights_refused_unopened(model, saved, tmp_path, no_unpickling):
    """A full directory whose weights are a pickle instead of safetensors."""
    d = copy_dir(saved, tmp_path / "pickled")
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
    failed_load(model, d, AdapterFileError, r"pickle.*adapter_model\.bin.*never loads pickles", d)
    # a peft-style directory (config + pickle, no card) names the pickle problem too
    (d / "adapter_card.json").unlink()
    failed_load(model, d, AdapterFileError, r"pickle.*adapter_model\.bin", d)
    assert no_unpickling == []


@pytest.mark.parametrize("fname,match", [
    ("adapter_card.json", r"missing adapter_card\.json"),
    ("adapter_config.json", r"missing adapter_config\.json"),
    ("adapter_model.safetensors", r"missing adapter_model\.safetensors"),
    ("adapterhub_head.json", r"missing adapterhub_head\.json"),
    ("adapterhub_head.safetensors", r"missing adapterhub_head\.safetensors"),
])
def test_missing_files(model, saved, tmp_path, fname, match):
    d = copy_dir(saved, tmp_path / "partial")
    (d / fname).unlink()
    failed_load(model, d, AdapterFileError, match, d)


def test_card_missing_fields_and_method_mismatch(model, saved, tmp_path):
    d = copy_dir(saved, tmp_path / "nocardfield")
    card = json.loads((d / "adapter_card.json").read_text())
    del card["task"], card["base_fingerprint"]
    (d / "adapter_card.json").write_text(json.dumps(card))
    failed_load(model, d, AdapterFileError, r"missing card field\(s\) \['base_fingerprint', 'task'\]", d)

    d = copy_dir(saved, tmp_path / "methodmismatch")
    card = json.loads((d / "adapter_card.json").read_text())
    card["method"] = "bottleneck"
    (d / "adapter_card.json").write_text(json.dumps(card))
    failed_load(model, d, AdapterFileError, r"card says method 'bottleneck', config says 'lora'", d)

    d = copy_dir(saved, tmp_path / "badpeft")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["peft_type"] = "LOHA"
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    failed_load(model, d, AdapterFileError, r"unsupported peft_type 'LOHA'", d)

    d = copy_dir(saved, tmp_path / "badr")
    cfg = json.loads((d / "adapter_config.json").read_text())
    del cfg["r"]
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    failed_load(model, d, AdapterFileError, r"bad adapter config", d)


def test_weights_not_matching_config(model, saved, tmp_path):
    from safetensors.torch import load_file, save_file

    # a tensor for a module the config does not target
    d = copy_dir(saved, tmp_path / "extra")
    st = load_file(str(d / "adapter_model.safetensors"))
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["target_modules"] = [t for t in cfg["target_modules"] if "layer.1." not in t]
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    failed_load(model, d, BaseMismatchError, r"weights for modules not in adapter_config", d)

    # a targeted module with no tensors
    d = copy_dir(saved, tmp_path / "missing")
    st2 = {k: v for k, v in st.items() if "layer.1.output.dense" not in k}
    save_file(st2, str(d / "adapter_model.safetensors"))
    resign(d)
    failed_load(model, d, AdapterFileError, r"no weights for target module 'encoder\.layer\.1\.output\.dense'", d)

    # a tensor of the wrong rank
    d = copy_dir(saved, tmp_path / "shape")
    st3 = dict(st)
    k = next(k for k in st3 if k.endswith("lora_A.weight"))
    st3[k] = torch.zeros(7, st3[k].shape[1])
    save_file(st3, str(d / "adapter_model.safetensors"))
    resign(d)
    failed_load(model, d, BaseMismatchError, r"has shape \(7, 32\)", d)

    # a key outside the peft layout
    d = copy_dir(saved, tmp_path / "prefix")
    st4 = dict(st)
    st4["model.weird"] = torch.zeros(1)
    save_file(st4, str(d / "adapter_model.safetensors"))
    resign(d)
    failed_load(model, d, AdapterFileError, r"'model\.weird' does not start with 'base_model\.model\.'", d)


def test_target_module_missing_from_base(model, saved, tmp_path):
    d = copy_dir(saved, tmp_path / "nomod")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["target_modules"] = cfg["target_modules"] + ["encoder.layer.9.attention.self.query"]
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    failed_load(model, d, BaseMismatchError, r"target_modules \['encoder\.layer\.9\.attention\.self\.query'\] match no "
                r"module of this base", d)
    # peft-style suffix names, one of which this base lacks
    d = copy_dir(saved, tmp_path / "suffix")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["target_modules"] = ["query", "value", "q_proj"]
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    failed_load(model, d, BaseMismatchError, r"target_modules \['q_proj'\] match no module", d)
    # a path reaching into another adapter's unit
    d = copy_dir(saved, tmp_path / "intounit")
    cfg = json.loads((d / "adapter_config.json").read_text())
    key = model.entry("keep").key  # the instance key 'keep' is held under in the modules
    cfg["target_modules"] = [f"encoder.layer.0.attention.self.query.units.{key}.lora_A"]
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    failed_load(model, d, BaseMismatchError, rf"units\.{re.escape(key)}\.lora_A' is part of another adapter", d)


def test_labels_count_not_matching_head(model, saved, tmp_path):
    # head config says 3 labels, card says 2 (and the tensors hold 2)
    d = copy_dir(saved, tmp_path / "headlabels")
    hc = json.loads((d / "adapterhub_head.json").read_text())
    hc["labels"] = ["neg", "pos", "neutral"]
    (d / "adapterhub_head.json").write_text(json.dumps(hc))
    failed_load(model, d, AdapterFileError, r"head labels \['neg', 'pos', 'neutral'\] != card labels \['neg', 'pos'\]", d)

    # head config and card agree on 3 labels; the classifier tensors hold 2
    card = json.loads((d / "adapter_card.json").read_text())
    card["labels"] = ["neg", "pos", "neutral"]
    (d / "adapter_card.json").write_text(json.dumps(card))
    failed_load(model, d, AdapterFileError, r"classifier\.weight has shape \(2, 32\), expected \(3, 32\) \(3 labels", d)

    # only the card disagrees (other names, same count)
    d = copy_dir(saved, tmp_path / "cardlabels")
    card = json.loads((d / "adapter_card.json").read_text())
    card["labels"] = ["bad", "good"]
    (d / "adapter_card.json").write_text(json.dumps(card))
    failed_load(model, d, AdapterFileError, r"head labels \['neg', 'pos'\] != card labels \['bad', 'good'\]", d)

    # head task disagrees with card task
    d = copy_dir(saved, tmp_path / "task")
    hc = json.loads((d / "adapterhub_head.json").read_text())
    hc["task"] = "token-classification"
    (d / "adapterhub_head.json").write_text(json.dumps(hc))
    failed_load(model, d, AdapterFileError, r"head task 'token-classification' != card task 'sequence-classification'", d)

    # head made for another hidden size
    d = copy_dir(saved, tmp_path / "hidden")
    hc = json.loads((d / "adapterhub_head.json").read_text())
    hc["hidden_size"] = 48
    (d / "adapterhub_head.json").write_text(json.dumps(hc))
    failed_load(model, d, AdapterHubError, r"hidden size 48, the base has 32", d)


def test_missing_source_and_store_version(model, saved, tmp_path):
    failed_load(model, tmp_path / "nowhere", AdapterFileError, r"no adapter directory .*nowhere")
    failed_load(model, "not-stored", AdapterFileError, r"no adapter named 'not-stored' in the store")
    f = tmp_path / "afile"
    f.write_text("x")
    failed_load(model, f, AdapterFileError, r"is not a directory", tmp_path)
    # store: unknown version
    model.store_adapter("keep")
    failed_load(model, "keep", StoreError, r"no version 5 of 'keep'; have \[1\]", name="keep2", version=5)
    failed_load(model, "keep", StoreError, r"bad version 'latest'", name="keep2", version="latest")
    # a valid store entry for a duplicate name
    failed_load(model, "keep", AdapterNameError, r"'keep' is already loaded")


# ---------------------------------------------------------------------------------------------------------
# forward / predict / generate input
# ---------------------------------------------------------------------------------------------------------

def test_per_row_list_length_mismatch(model):
    guard = Guard(model)
    ids = torch.tensor([[2, 5, 3], [2, 6, 3], [2, 7, 3]])
    with pytest.raises(AdapterHubError, match=r"adapters has 2 names but the batch has 3 rows"):
        model(ids, adapters=["keep", "keep_bn"])
    with pytest.raises(AdapterHubError, match=r"adapters has 4 names but the batch has 3 rows"):
        model(ids, adapters=["keep"] * 4)
    with pytest.raises(AdapterHubError, match=r"adapters has 1 names but the batch has 2 rows"):
        model.predict(["the film", "a plot"], adapters=["keep"])
    with pytest.raises(AdapterHubError, match=r"adapters has 0 names but the batch has 1 rows"):
        model.predict(["the film"], adapters=[])
    guard.check()


def test_generate_bad_input():
    model = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    model.add_adapter("gen", LoRA(r=2), task="causal-lm")
    model.add_adapter("cls", LoRA(r=2), labels=LABELS)
    guard = Guard(model)
    with pytest.raises(AdapterHubError, match=r"adapters has 1 names but the batch has 2 rows"):
        model.generate(["the film", "a plot"], adapters=["gen"])
    with pytest.raises(AdapterHubError, match=r"\['cls'\] are not causal-lm adapters"):
        model.generate(["the film", "a plot"], adapters=["gen", "cls"])
    with pytest.raises(AdapterNameError, match=r"unknown adapter\(s\) \['nope'\]"):
        model.generate(["the film", "a plot"], adapters=["gen", "nope"])
    guard.check()
    bert = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    with pytest.raises(AdapterHubError, match=r"generate needs a causal-LM base"):
        bert.generate(["the film"])


def test_predict_non_string(model):
    guard = Guard(model)
    with pytest.raises(AdapterHubError, match=r"texts\[0\] must be a string, got int"):
        model.predict([3, "the film"], adapters="keep")
    guard.check()
    assert not model.training


# ---------------------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------------------

def test_save_to_non_empty_dir_without_overwrite(model, tmp_path):
    d = tmp_path / "occupied"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    guard = Guard(model, tmp_path)
    with pytest.raises(AdapterFileError, match=r"occupied exists and is not empty; pass overwrite=True"):
        model.save_adapter("keep", d)
    f = tmp_path / "afile"
    f.write_text("x")
    guard = Guard(model, tmp_path)
    with pytest.raises(AdapterFileError, match=r"afile exists and is not a directory"):
        model.save_adapter("keep", f)
    guard.check()
    # an earlier save is not clobbered either
    good = model.save_adapter("keep", tmp_path / "good")
    guard = Guard(model, tmp_path)
    with pytest.raises(AdapterFileError, match=r"good exists and is not empty"):
        model.save_adapter("keep_bn", good)
    guard.check()
    assert json.loads((good / "adapter_card.json").read_text())["name"] == "keep"


def test_failed_loads_leave_store_unchanged(model, saved, tmp_path):
    """A broken store entry is refused and the store is left as it was."""
    model.store_adapter("keep")
    entry_dir = paths.store_dir() / "keep" / "v1"
    (entry_dir / "adapter_model.safetensors").write_bytes(b"\x00" * 20)
    failed_load(model, "keep", AdapterFileError, r"sha256 .*corrupted or tampered", name="other")
    resign(entry_dir)
    failed_load(model, "keep", AdapterFileError, r"corrupt or truncated", name="other")
