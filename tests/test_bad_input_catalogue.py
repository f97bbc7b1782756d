"""The bad-input catalogue of issue 13: every case with its expected error, run against one model, one store and one
directory of files, each checked unchanged afterwards (registry, parameters, outputs, store and files on disk).
Cases are rows of ``CASES``: (id, what to do, the error class, a pattern its message must match)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from adapterhub import AdapterModel, LoRA
from adapterhub.data import encode_classification, load_examples, load_splits, split_examples
from adapterhub.errors import AdapterFileError, AdapterHubError, StoreError
from adapterhub.recipes import RecipeError, load_recipe
from conftest import make_tokenizer, tiny_bert
from test_bad_input import Guard, randomize

UD_SAMPLE = Path(__file__).resolve().parent / "data" / "ud_sample.conllu"
LABELS = ["neg", "pos"]


class Ctx:
    """What the cases act on: a model holding two adapters, a files directory, a tiny base dir."""

    def __init__(self, tmp: Path):
        self.tmp, self.files = tmp, tmp / "files"
        self.files.mkdir()
        m = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
        m.add_adapter("keep", LoRA(r=4), labels=LABELS)
        m.add_adapter("tags", LoRA(r=4), task="token-classification", labels=["O", "B-x", "I-x"])
        randomize(m, "keep", 1)
        randomize(m, "tags", 2)
        m.eval()
        self.model = m
        self.write("ud.conll", UD_SAMPLE.read_text())
        self.write("ragged.conll", "Obama\tB-PER\nsaid\tVBD\tO\n")
        self.write("nine.conllu", "1\tIl\til\tPRON\tPRP\t_\t0\troot\t_\n")
        self.write("amb.tab", "A\tB\tY\ns\ts\td\n\t\tclass\nx\ty\tz\n")
        self.write("nocls.tab", "A\tY\ns\td\n\t\nx\ty\n")
        self.write("latin1.csv", "text,label\ncaf\u00e9,a\n", "latin-1")
        self.write("d.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(20)) + "oops,c\n")
        self.write("tiny.csv", "text,label\na,x\nb,y\nc,x\n")
        user = self.files / "my-notes"
        user.mkdir()
        (user / "notes.txt").write_text("mine")
        (self.files / "ts").mkdir()  # a same-named directory in the working directory
        self.store_adapter_saved = m.save_adapter("keep", self.files / "saved-keep")
        self.typo_recipe = self.recipe(primary_metric="acuracy")

    def write(self, name: str, text: str, encoding: str = "utf-8") -> Path:
        p = self.files / name
        p.write_bytes(text.encode(encoding))
        return p

    def f(self, name: str) -> str:
        return str(self.files / name)

    def recipe(self, **task) -> Path:
        r = {"name": "r", "base": "tiny", "tasks": {"t": {"type": "sequence-classification", "data": {
            "type": "csv", "path": self.f("d.csv")}, "adapter": {"method": "lora", "r": 2}, **task}},
             "training": {"steps": 1}}
        p = self.tmp / "recipe.yaml"
        p.write_text(yaml.safe_dump(r))
        return p


def _disk_full(monkeypatch):
    from safetensors import SafetensorError

    import adapterhub.files.adapter_dir as ad

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")
    monkeypatch.setattr(ad, "save_file", full)


def _read_only(monkeypatch):
    import adapterhub.atomic as atomic

    def ro(self, *a, **k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(atomic.Path, "mkdir", ro)


def _combine_rank(c):
    c.model.add_adapter("keep2", LoRA(r=4), labels=LABELS)
    try:
        c.model.combine({"keep": 0.5, "keep2": 0.5}, name="ab", rank=33)
    finally:
        c.model.delete_adapter("keep2")


CASES = [
    # 1. CoNLL / CoNLL-U
    ("conll-on-conllu", lambda c, mp: load_examples({"type": "conll", "path": c.f("ud.conll")}),
     AdapterHubError, r"ud\.conll:1: this looks like a CoNLL-U file"),
    ("conll-ragged", lambda c, mp: load_examples({"type": "conll", "path": c.f("ragged.conll")}),
     AdapterHubError, r"ragged\.conll:2: 3 columns, but line 1 has 2"),
    ("conllu-9-columns", lambda c, mp: load_examples({"type": "conllu", "path": c.f("nine.conllu")}),
     AdapterHubError, r"nine\.conllu:1: .*10 tab-separated columns"),
    ("tag_field-on-csv", lambda c, mp: load_examples({"type": "csv", "path": c.f("d.csv"), "tag_field": "upos"}),
     AdapterHubError, r"'tag_field' picks the column of a conllu source"),
    # 2. Orange .tab
    ("tab-ambiguous-text", lambda c, mp: load_examples({"type": "tab", "path": c.f("amb.tab")}),
     AdapterHubError, r"amb\.tab: the text column is ambiguous: 2 string columns with no role \['A', 'B'\]"),
    ("tab-no-class", lambda c, mp: load_examples({"type": "tab", "path": c.f("nocls.tab")}),
     AdapterHubError, r"nocls\.tab: no column is flagged 'class'"),
    # 3. given files
    ("test-path-for-package", lambda c, mp: load_splits({"type": "package", "name": "wnut16"}, 0, test="x.csv"),
     AdapterHubError, r"a file path .* is for file sources"),
    # 6. labels, encodings, tiny data, primary_metric
    ("label-by-file-line", lambda c, mp: [encode_classification(s, make_tokenizer(), ["a", "b"]) for s in
                                          load_splits({"type": "csv", "path": c.f("d.csv")}, 0).values()],
     AdapterHubError, r"d\.csv:22: label 'c' is not one of the labels"),
    ("not-utf8", lambda c, mp: load_examples({"type": "csv", "path": c.f("latin1.csv")}),
     AdapterHubError, r"latin1\.csv:2: not valid utf-8 text .*encoding"),
    ("too-small-to-split", lambda c, mp: load_splits({"type": "csv", "path": c.f("tiny.csv")}, 0),
     AdapterHubError, r"3 example\(s\) are too few to hold out test=0\.1"),
    ("too-small-explicit", lambda c, mp: split_examples([{"text": "a", "label": "x"}] * 3, 0, 0.3, 0.1),
     AdapterHubError, r"too few to hold out test=0\.1"),
    ("primary-metric-typo", lambda c, mp: load_recipe(c.typo_recipe),
     RecipeError, r"tasks\.t\.primary_metric: 'acuracy' is not a metric of sequence-classification"),
    # 9. arguments
    ("labels-string", lambda c, mp: c.model.add_adapter("s", LoRA(r=2), labels="pos"),
     AdapterHubError, r"labels must be a list of label names, got the string 'pos'"),
    ("predict-batch-size-negative", lambda c, mp: c.model.predict(["a film"], adapters="keep", batch_size=-1),
     AdapterHubError, r"batch_size must be a positive integer, got -1"),
    ("predict-batch-size-zero", lambda c, mp: c.model.predict(["a film"], adapters="keep", batch_size=0),
     AdapterHubError, r"batch_size must be a positive integer, got 0"),
    ("predict-none", lambda c, mp: c.model.predict(None, adapters="keep"),
     AdapterHubError, r"texts must be a string or a list of strings, got NoneType"),
    ("predict-max-new-tokens", lambda c, mp: c.model.predict(["x"], adapters="keep", max_new_tokens=0),
     AdapterHubError, r"max_new_tokens must be a positive integer"),
    ("combine-rank-above-layer", lambda c, mp: _combine_rank(c),
     AdapterHubError, r"rank=33 is above the size of layer '.*' \(32 -> 32: at most rank 32\)"),
    ("combine-all-zero", lambda c, mp: c.model.combine({"keep": 0.0}, name="z"),
     AdapterHubError, r"every weight is 0"),
    ("device-cuda-without-cuda", lambda c, mp: AdapterModel.from_pretrained("/nonexistent", device="cuda"),
     AdapterHubError, r"device 'cuda': CUDA is not available here"),
    ("device-not-a-device", lambda c, mp: AdapterModel.from_pretrained("/nonexistent", device="gpu0"),
     AdapterHubError, r"device 'gpu0' is not a device"),
    ("save-disk-full", lambda c, mp: (_disk_full(mp), c.model.save_adapter("keep", c.files / "new"))[1],
     AdapterFileError, r"could not write .*adapter_model\.safetensors.*No space left"),
    ("store-disk-full", lambda c, mp: (_disk_full(mp), c.model.store_adapter("keep"))[1],
     AdapterFileError, r"could not write .*store/keep/\.tmp-v1-.*adapter_model\.safetensors"),
    ("save-read-only", lambda c, mp: (_read_only(mp), c.model.save_adapter("keep", c.files / "sub" / "new"))[1],
     AdapterFileError, r"could not write .*files/sub/new: Read-only file system"),
    # 8. overwrite only an adapter directory
    ("overwrite-user-dir", lambda c, mp: c.model.save_adapter("keep", c.files / "my-notes", overwrite=True),
     AdapterFileError, r"my-notes is not an adapter directory .*refusing to delete it"),
    ("overwrite-cwd", lambda c, mp: (mp.chdir(c.files), c.model.save_adapter("keep", ".", overwrite=True))[1],
     AdapterFileError, r"is the working directory, one of its parents"),
    ("overwrite-parent-of-cwd", lambda c, mp: (mp.chdir(c.files / "my-notes"),
                                               c.model.save_adapter("keep", "..", overwrite=True))[1],
     AdapterFileError, r"is the working directory, one of its parents"),
    # 11. a bare name is the store
    ("bare-name-is-store", lambda c, mp: (mp.chdir(c.files), c.model.load_adapter("ts"))[1],
     AdapterFileError, r"no adapter named 'ts' in the store .*load it as './ts'"),
    ("version-not-in-store", lambda c, mp: c.model.load_adapter("nothing", version=2),
     AdapterFileError, r"no adapter named 'nothing' in the store"),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp("catalogue"))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_catalogue(ctx, case, monkeypatch):
    _id, action, exc, match = case
    if _id.startswith("device-cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    guard = Guard(ctx.model, ctx.files, ctx.tmp)
    with pytest.raises(exc, match=match):
        action(ctx, monkeypatch)
    monkeypatch.undo()
    guard.check()
    assert not [p for p in ctx.files.rglob(".tmp-*")]


def test_the_catalogue_covers_every_item_of_the_issue():
    ids = {c[0] for c in CASES}
    assert len(ids) == len(CASES)
    for needed in ("conll-on-conllu", "tab-ambiguous-text", "label-by-file-line", "not-utf8", "too-small-to-split",
                   "primary-metric-typo", "labels-string", "predict-batch-size-negative", "combine-all-zero",
                   "device-cuda-without-cuda", "save-disk-full", "overwrite-cwd", "bare-name-is-store"):
        assert needed in ids


def test_guard_sees_changes(ctx):
    """The check is not vacuous: a change to a file or the store is seen."""
    guard = Guard(ctx.model, ctx.files)
    (ctx.files / "my-notes" / "notes.txt").write_text("changed")
    with pytest.raises(AssertionError):
        guard.check()
    (ctx.files / "my-notes" / "notes.txt").write_text("mine")
    assert os.path.isdir(ctx.files / "ts")
