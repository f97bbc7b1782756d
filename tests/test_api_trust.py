"""The API refuses instead of guessing (issue 13, items 5, 8, 10, 11): predict within the card's max_length and
over long texts in windows, overwrite only adapter directories, crash leftovers swept and overwrites recoverable,
version numbers never reused, one rule for directories vs store names."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapterhub import AdapterModel, LoRA
from adapterhub.model import windows
from adapterhub.store import Store
from conftest import WORDS, make_tokenizer, tiny_bert
from test_bad_input import randomize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model():
    m = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    m.add_adapter("sent", LoRA(r=4), labels=["neg", "pos"])
    m.add_adapter("tags", LoRA(r=4), task="token-classification", labels=["O", "B-x", "I-x"])
    randomize(m, "sent", 1)
    randomize(m, "tags", 2)
    return m.eval()


def _texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


# ------------------------------------------------------------------------------------------- 5. max_length

def test_predict_cuts_where_training_did(model, tmp_path):
    model.save_adapter("sent", tmp_path / "s6", extra={"max_length": 6})
    e = model.load_adapter(tmp_path / "s6", name="s6")
    assert json.loads((tmp_path / "s6" / "adapter_card.json").read_text())["extra"]["max_length"] == 6
    assert windows.max_length_of(model, e) == 6 and windows.max_length_of(model, model.entry("sent")) == 64
    long, head = _texts(40, 20), None
    head = [" ".join(t.split()[:4]) for t in long]  # [CLS] + 4 words + [SEP] = 6 tokens (one token a word)
    assert model.predict(long, adapters="s6") == model.predict(head, adapters="s6")
    assert model.predict(long, adapters="s6") == model.predict(head, adapters="sent")  # same weights, same cut


def test_long_token_text_is_tagged_in_windows(model):
    model.entry("tags").extra["max_length"] = 8
    text = _texts(1, 50, seed=3)[0]
    tags = model.predict(text, adapters="tags")
    assert len(tags) == 50  # every word, none silently dropped
    plan = windows.plan(model, [text], [model.entry("tags")])
    spans = plan.parts[0][1]
    assert spans[0][0] == 0 and spans[-1][1] == 50 and all(e - s <= 6 for s, e in spans)
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # windows overlap
    first = " ".join(text.split()[spans[0][0]:spans[0][1]])
    assert tags[0] == model.predict(first, adapters="tags")[0]  # the text's first word: from the first window
    short = "the film was good"
    model.entry("tags").extra["max_length"] = 64
    assert model.predict([short, text], adapters="tags")[0] == model.predict(short, adapters="tags")


# ------------------------------------------------------------------------------------------- 8. overwrite

def test_overwrite_replaces_an_earlier_save(model, tmp_path):
    d = model.save_adapter("sent", tmp_path / "a")
    model.save_adapter("tags", d, overwrite=True)
    assert json.loads((d / "adapter_card.json").read_text())["name"] == "tags"
    assert not list(tmp_path.glob(".tmp-*"))


# ------------------------------------------------------------------------------------------- 11. names vs paths

def test_bare_name_means_store_path_means_directory(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model.save_adapter("tags", tmp_path / "ts")  # a directory ./ts holding the token adapter
    model.store_adapter("sent", store_name="ts")  # the store entry ts: the sentiment adapter
    assert model.load_adapter("ts", name="ts_store").task == "sequence-classification"
    assert Path(model.entry("ts_store").source) == Store().root / "ts" / "v1"
    assert model.load_adapter("./ts", name="ts_dir").task == "token-classification"
    assert model.load_adapter(tmp_path / "ts", name="ts_path").task == "token-classification"


# ------------------------------------------------------------------------------------------- 10. crash leftovers

def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", **env}, timeout=120)


KILLED_STORE = """
    import os, signal, sys
    from adapterhub.store import Store
    def write(d):
        (d / "adapter_model.safetensors").write_bytes(b"x" * 100000)
        os.kill(os.getpid(), signal.SIGKILL)
    Store().put_with("x", write)
"""

KILLED_SWAP = """
    import os, signal
    from adapterhub import AdapterModel, LoRA
    from conftest import make_tokenizer, tiny_bert
    m = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    m.add_adapter("new", LoRA(r=2), labels=["a", "b"])
    real, calls = os.rename, []
    def rename(a, b):
        real(a, b)
        calls.append(b)
        if ".tmp-old-" in str(b):  # the target moved aside; killed before the new one moves in
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = rename
    m.save_adapter("new", os.environ["TARGET"], overwrite=True)
"""


def test_killed_store_write_is_swept_on_open(tmp_path):
    home = tmp_path / "home"
    r = _run(KILLED_STORE, ADAPTERHUB_HOME=str(home))
    assert r.returncode == -9
    left = list((home / "store" / "x").glob(".tmp-v1-*"))
    assert len(left) == 1
    store = Store(home / "store")  # opening sweeps: the owner is dead
    assert not left[0].exists() and store.versions("x") == []
    mine = home / "store" / "x" / f".tmp-v9-{os.getpid()}-0123456789ab"
    mine.mkdir()
    store.sweep()
    assert mine.exists()  # a live writer's temp dir is left alone


def test_overwrite_killed_between_renames_is_rolled_back(model, tmp_path):
    target = model.save_adapter("sent", tmp_path / "a")
    card = (target / "adapter_card.json").read_bytes()
    r = _run(KILLED_SWAP, TARGET=str(target))
    assert r.returncode == -9, r.stderr[-2000:]
    assert not target.exists() and list(tmp_path.glob(".tmp-old-a-*"))  # what the kill left
    e = model.load_adapter(target, name="back")  # the old version is back in place, whole
    assert e.task == "sequence-classification" and (target / "adapter_card.json").read_bytes() == card
    assert not list(tmp_path.glob(".tmp-*"))


def test_scratch_dirs_live_in_the_store_not_the_system_temp_dir(tmp_path):
    store = Store(tmp_path / "store")
    with store.scratch() as d:
        assert d.parent == store.root and d.name.startswith(".tmp-scratch-")
    assert not d.exists()
    dead = store.root / ".tmp-scratch-99999999-0123456789ab"
    dead.mkdir()
    assert dead in store.sweep() and not dead.exists()


def test_version_numbers_are_never_reused(model, tmp_path):
    store = Store(tmp_path / "store")
    assert [model.store_adapter("sent", store=store).version for _ in range(2)] == [1, 2]
    store.remove("sent", 2)
    assert model.store_adapter("sent", store=store).version == 3
    store.remove("sent")
    assert model.store_adapter("sent", store=store).version == 4
