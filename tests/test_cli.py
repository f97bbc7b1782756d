import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from adapterhub import AdapterModel, LoRA, __version__
from adapterhub.files.card import CARD_FILE
from adapterhub.cli import main
from adapterhub.store import Store

from conftest import make_tokenizer, tiny_bert, tiny_llama

TEXTS = ["a fine film", "the plot was awful", "i love paris", "new york city won"]


def randomize(model: AdapterModel, name: str, seed: int = 1) -> None:
    """Fresh LoRA B factors are zero; make the adapter actually change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def run(capsys, *argv):
    capsys.readouterr()  # drop what fixtures printed (e.g. save_pretrained progress bars)
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def stocked(bert_model):
    """sentiment (2 versions, LoRA), ner (1 version, token classification)."""
    m = bert_model
    m.add_adapter("sentiment", LoRA(r=4), labels=["negative", "positive"])
    m.store_adapter("sentiment")
    randomize(m, "sentiment")
    m.store_adapter("sentiment")
    m.add_adapter("ner", LoRA(r=2), task="token-classification", labels=["O", "LOC", "PER"])
    m.store_adapter("ner")
    return m


@pytest.fixture
def saved_base(tmp_path):
    """A tiny BERT saved as a local directory, and an AdapterModel on it whose base_id is that directory."""
    d = tmp_path / "tiny-bert-base"
    base, tok = tiny_bert(), make_tokenizer()
    base.save_pretrained(d)
    tok.save_pretrained(d)
    return d, AdapterModel(base, tok, base_id=str(d.resolve()))


# ----------------------------------------------------------------------------------------------------
# basics
# ----------------------------------------------------------------------------------------------------
def test_version(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.strip() == f"adapterhub {__version__}"


def test_no_command_prints_help(capsys):
    rc, out, err = run(capsys)
    assert rc == 2 and "usage: adapterhub" in err


def test_bad_usage_exits_2(capsys):
    rc, _, err = run(capsys, "show")
    assert rc == 2 and "NAME" in err
    rc, _, err = run(capsys, "predict", "x", "t", "--batch-size", "0")
    assert rc == 2 and "positive integer" in err


@pytest.mark.parametrize("cmd", [[sys.executable, "-m", "adapterhub"],
                                 [str(Path(sys.executable).parent / "adapterhub")]])
def test_console_entry_points(cmd):
    if not Path(cmd[0]).exists():
        pytest.skip(f"{cmd[0]} not installed")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"adapterhub {__version__}"
    r = subprocess.run(cmd + ["show", "nope"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2
    assert r.stderr.startswith("error: no adapter named 'nope'") and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------------
# list
# ----------------------------------------------------------------------------------------------------
def test_list_empty(capsys):
    rc, out, _ = run(capsys, "list")
    assert rc == 0 and out.startswith("no adapters in ")
    rc, out, _ = run(capsys, "list", "--json")
    assert rc == 0 and json.loads(out) == []


def test_list_table(capsys, stocked):
    rc, out, err = run(capsys, "list")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "LATEST", "VERSIONS", "METHOD", "TASK", "LABELS", "BASE", "PARAMS", "CREATED"]
    assert [ln.split()[0] for ln in lines[1:]] == ["ner", "sentiment"]
    ner, sentiment = lines[1].split(), lines[2].split()
    assert sentiment[:7] == ["sentiment", "v2", "2", "lora", "sequence-classification", "2", "tiny-bert"]
    assert ner[:7] == ["ner", "v1", "1", "lora", "token-classification", "3", "tiny-bert"]
    n = stocked.num_parameters("sentiment", include_head=False)
    assert n == 1024 and sentiment[7] == "1.0K"


def test_list_all_and_json(capsys, stocked):
    rc, out, _ = run(capsys, "list", "--all")
    assert rc == 0
    rows = [ln.split()[:2] for ln in out.splitlines()[1:]]
    assert rows == [["ner", "v1"], ["sentiment", "v1"], ["sentiment", "v2"]]

    rc, out, _ = run(capsys, "list", "--json")
    items = json.loads(out)
    assert [(i["name"], i["version"], i["versions"]) for i in items] == [("ner", 1, [1]), ("sentiment", 2, [1, 2])]
    s = items[1]
    assert s["method"] == "lora" and s["task"] == "sequence-classification"
    assert s["labels"] == ["negative", "positive"] and s["num_labels"] == 2
    assert s["base_model"] == "tiny-bert"
    assert s["num_parameters"] == stocked.num_parameters("sentiment", include_head=False)
    assert s["num_head_parameters"] == 32 * 2 + 2
    assert Path(s["path"]) == Store().get("sentiment").path

    rc, out, _ = run(capsys, "list", "--all", "--json")
    assert [(i["name"], i["version"]) for i in json.loads(out)] == [("ner", 1), ("sentiment", 1), ("sentiment", 2)]
    assert "versions" not in json.loads(out)[0]


def test_list_survives_a_broken_card(capsys, stocked):
    (Store().get("ner").path / CARD_FILE).write_text("{not json")
    rc, out, err = run(capsys, "list")
    assert rc == 0
    assert "sentiment" in out and out.splitlines()[1].split()[:4] == ["ner", "v1", "1", "?"]
    assert "warning: ner@v1" in err


def test_store_option(capsys, stocked, tmp_path):
    rc, out, _ = run(capsys, "list", "--store", str(tmp_path / "elsewhere"))
    assert rc == 0 and out.startswith("no adapters in ") and "elsewhere" in out
    rc, out, _ = run(capsys, "--store", str(Store().root), "list")
    assert rc == 0 and "sentiment" in out


# ----------------------------------------------------------------------------------------------------
# show
# ----------------------------------------------------------------------------------------------------
def test_show(capsys, stocked):
    rc, out, err = run(capsys, "show", "sentiment")
    assert rc == 0 and err == ""
    fields = {}
    for ln in out.splitlines():
        if not ln.startswith(" ") and ":" in ln:
            k, _, v = ln.partition(":")
            fields[k] = v.strip()
    assert fields["name"] == "sentiment@v2  (versions: v1, v2)"
    assert fields["method"] == "lora" and "  r: 4" in out.splitlines()
    assert fields["task"] == "sequence-classification"
    assert fields["labels (2)"] == "negative, positive"
    assert fields["base model"] == "tiny-bert"
    fp = stocked.base_fingerprint
    assert f"  fingerprint: arch={fp['arch']}, weights={fp['weights']}" in out
    n = stocked.num_parameters("sentiment", include_head=False)
    assert fields["parameters"] == f"{n:,} adapter + 66 head = {n + 66:,}"
    assert fields["metrics"] == "-"
    assert fields["library"] == f"adapterhub {__version__} (card format 1)"
    for f in ("adapter_config.json", "adapter_model.safetensors", "adapterhub_head.json",
              "adapterhub_head.safetensors"):
        assert f in out
    assert "rank allocation" not in out and "MISSING" not in out


def test_show_version_and_json(capsys, stocked):
    rc, out, _ = run(capsys, "show", "sentiment", "--version", "1", "--json")
    assert rc == 0
    d = json.loads(out)
    assert (d["name"], d["version"], d["versions"]) == ("sentiment", 1, [1, 2])
    assert d["card"] == Store().get("sentiment", 1).card
    rc, out, _ = run(capsys, "show", "sentiment@v1", "--json")
    assert json.loads(out)["version"] == 1
    rc, out, _ = run(capsys, "show", "sentiment", "--version", "v1")
    assert rc == 0 and out.startswith("name:         sentiment@v1")


def test_show_rank_allocation_and_metrics(capsys, bert_model, tmp_path):
    bert_model.add_adapter("ada", LoRA(r=4), labels=["a", "b"])
    d = tmp_path / "ada"
    d.mkdir()
    bert_model.write_adapter_files("ada", d)
    card = json.loads((d / CARD_FILE).read_text())
    alloc = {"encoder.layer.0.attention.self.query": 3, "encoder.layer.1.attention.self.value": 1}
    card["extra"] = {"rank_allocation": alloc, "seed": 7}
    card["metrics"] = {"accuracy": 0.912345, "epochs": 3}
    (d / CARD_FILE).write_text(json.dumps(card))
    Store().put(d, "ada")

    rc, out, _ = run(capsys, "show", "ada")
    assert rc == 0
    lines = out.splitlines()
    i = lines.index("rank allocation:")
    table = [ln.split() for ln in lines[i + 1:i + 5]]
    assert table == [["MODULE", "RANK"], ["encoder.layer.0.attention.self.query", "3"],
                     ["encoder.layer.1.attention.self.value", "1"], ["total", "4"]]
    assert "extra:" in lines and "  seed: 7" in lines
    assert "  accuracy: 0.9123" in lines and "  epochs: 3" in lines


def test_show_rank_allocation_dict_values(capsys, bert_model, tmp_path):
    bert_model.add_adapter("ada", LoRA(r=4), labels=["a", "b"])
    d = tmp_path / "ada"
    d.mkdir()
    bert_model.write_adapter_files("ada", d)
    card = json.loads((d / CARD_FILE).read_text())
    card["extra"] = {"rank_allocation": {"q": {"init_r": 12, "r": 5}, "v": {"init_r": 12, "r": 2}}}
    (d / CARD_FILE).write_text(json.dumps(card))
    Store().put(d, "ada")
    rc, out, _ = run(capsys, "show", "ada")
    lines = out.splitlines()
    i = lines.index("rank allocation:")
    assert [ln.split() for ln in lines[i + 1:i + 4]] == [["MODULE", "INIT_R", "R"], ["q", "12", "5"], ["v", "12", "2"]]
    assert "extra:" not in lines


def test_show_errors(capsys, stocked):
    rc, out, err = run(capsys, "show", "nope")
    assert rc == 2 and out == ""
    assert err.startswith("error: no adapter named 'nope'") and "have: ['ner', 'sentiment']" in err
    assert "Traceback" not in err
    rc, _, err = run(capsys, "show", "sentiment", "--version", "9")
    assert rc == 2 and err.startswith("error: no version 9 of 'sentiment'; have [1, 2]")
    rc, _, err = run(capsys, "show", "sentiment", "--version", "banana")
    assert rc == 2 and err.startswith("error: bad version 'banana'")
    rc, _, err = run(capsys, "show", "../etc")
    assert rc == 2 and err.startswith("error: adapter name '../etc'")
    rc, _, err = run(capsys, "show", "sentiment@v1", "--version", "2")
    assert rc == 2 and "different versions" in err
    (Store().get("ner").path / CARD_FILE).write_text("[]")
    rc, _, err = run(capsys, "show", "ner")
    assert rc == 2 and "not a JSON object" in err


# ----------------------------------------------------------------------------------------------------
# rm
# ----------------------------------------------------------------------------------------------------
def test_rm(capsys, stocked):
    store = Store()
    v1 = store.get("sentiment", 1).path
    rc, out, _ = run(capsys, "rm", "sentiment", "--version", "1")
    assert rc == 0
    assert out.splitlines() == [f"removed sentiment@v1 ({v1})", "sentiment: v2 remain"]
    assert store.versions("sentiment") == [2]

    rc, out, _ = run(capsys, "rm", "sentiment", "--yes")
    assert rc == 0 and out.splitlines()[0].startswith("removed sentiment@v2 ")
    assert "sentiment" not in store

    rc, out, _ = run(capsys, "rm", "ner@v1")
    assert rc == 0 and out.startswith("removed ner@v1 ")
    rc, out, _ = run(capsys, "list")
    assert out.startswith("no adapters in ")


def test_rm_errors(capsys, stocked):
    rc, out, err = run(capsys, "rm", "nope")
    assert rc == 2 and out == "" and err.startswith("error: no adapter named 'nope'")
    rc, _, err = run(capsys, "rm", "sentiment", "--version", "7")
    assert rc == 2 and err.startswith("error: no version 7 of 'sentiment'")
    assert Store().versions("sentiment") == [1, 2]


def test_every_command_refuses_an_empty_version_reference(capsys, stocked):
    """One NAME@vN parser for all commands: ``NAME@`` is an error everywhere (push too), before any work."""
    for argv in (["show", "sentiment@"], ["rm", "sentiment@"], ["predict", "sentiment@", "a fine film"],
                 ["push", "sentiment@", "alice/x", "--no-progress"]):
        rc, out, err = run(capsys, *argv)
        assert (rc, out) == (2, ""), argv
        assert err == "error: bad adapter reference 'sentiment@': expected NAME or NAME@vN\n", argv
    assert Store().versions("sentiment") == [1, 2]


# ----------------------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------------------
def test_predict_matches_model(capsys, saved_base):
    _, m = saved_base
    m.add_adapter("sentiment", LoRA(r=4), labels=["negative", "positive", "neutral"])
    randomize(m, "sentiment")
    m.store_adapter("sentiment")
    expected = m.predict(TEXTS, adapters="sentiment")

    rc, out, err = run(capsys, "predict", "sentiment", "a fine film")
    assert rc == 0, err
    assert out.splitlines() == [expected[0]]

    rc, out, err = run(capsys, "predict", "sentiment", *TEXTS, "--batch-size", "3")
    assert rc == 0, err
    assert out.splitlines() == expected

    rc, out, _ = run(capsys, "predict", "sentiment", *TEXTS, "--json")
    assert json.loads(out) == [{"text": t, "adapter": "sentiment", "prediction": p} for t, p in zip(TEXTS, expected)]


def test_predict_with_explicit_base_and_version(capsys, saved_base):
    d, m = saved_base
    # stored from a model whose card names an unloadable base ("tiny-bert") but with the same weights
    other = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    other.add_adapter("s", LoRA(r=4), labels=["x", "y", "z"])
    randomize(other, "s", seed=3)
    other.store_adapter("s")
    randomize(other, "s", seed=4)
    other.store_adapter("s")
    rc, _, err = run(capsys, "predict", "s", "a fine film")
    assert rc == 2 and err.startswith("error: ") and "tiny-bert" in err and "Traceback" not in err

    want_v2 = other.predict(TEXTS, adapters="s")
    rc, out, err = run(capsys, "predict", "s", *TEXTS, "--base", str(d))
    assert rc == 0, err
    assert out.splitlines() == want_v2

    other.delete_adapter("s")
    other.load_adapter("s", version=1)
    want_v1 = other.predict(TEXTS, adapters="s")
    for argv in (["s", *TEXTS, "--version", "1"], ["s@v1", *TEXTS]):
        rc, out, err = run(capsys, "predict", *argv, "--base", str(d))
        assert rc == 0, err
        assert out.splitlines() == want_v1


def test_predict_token_classification_and_mixed_batch(capsys, saved_base):
    _, m = saved_base
    m.add_adapter("sent", LoRA(r=4), labels=["neg", "pos"])
    m.add_adapter("ner", LoRA(r=2), task="token-classification", labels=["O", "LOC", "PER"])
    randomize(m, "sent", seed=5)
    randomize(m, "ner", seed=6)
    m.store_adapter("sent")
    m.store_adapter("ner")

    tags = m.predict(TEXTS, adapters="ner")
    rc, out, err = run(capsys, "predict", "ner", *TEXTS)
    assert rc == 0, err
    assert out.splitlines() == [" ".join(f"{w}/{t}" for w, t in zip(x.split(), tg)) for x, tg in zip(TEXTS, tags)]
    rc, out, _ = run(capsys, "predict", "ner", *TEXTS, "--json")
    assert [r["prediction"] for r in json.loads(out)] == tags

    routing = ["sent", "ner", "sent", "ner"]
    mixed = m.predict(TEXTS, adapters=routing)
    rc, out, err = run(capsys, "predict", "sent", *TEXTS, "--adapters", ",".join(routing), "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["adapter"] for r in rows] == routing and [r["prediction"] for r in rows] == mixed
    rc, out, _ = run(capsys, "predict", "sent", *TEXTS, "--adapters", ",".join(routing))
    assert out.splitlines()[0] == f"sent\t{mixed[0]}"

    # several adapters without --adapters: every text through each
    rc, out, err = run(capsys, "predict", "sent,ner", TEXTS[0], TEXTS[1])
    assert rc == 0, err
    sent = m.predict(TEXTS[:2], adapters="sent")
    assert out.splitlines() == [f"sent\t{sent[0]}", f"ner\t{' '.join(f'{w}/{t}' for w, t in zip(TEXTS[0].split(), tags[0]))}",
                                f"sent\t{sent[1]}", f"ner\t{' '.join(f'{w}/{t}' for w, t in zip(TEXTS[1].split(), tags[1]))}"]


def test_predict_from_directory_and_stdin(capsys, saved_base, tmp_path, monkeypatch):
    _, m = saved_base
    m.add_adapter("sent", LoRA(r=4), labels=["neg", "pos"])
    randomize(m, "sent", seed=8)
    m.save_adapter("sent", tmp_path / "sent-dir")
    want = m.predict(TEXTS, adapters="sent")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS) + "\n\n"))
    rc, out, err = run(capsys, "predict", str(tmp_path / "sent-dir"), "-")
    assert rc == 0, err
    assert out.splitlines() == want


def test_predict_causal_lm(capsys, tmp_path):
    d = tmp_path / "tiny-llama"
    base, tok = tiny_llama(), make_tokenizer(causal=True)
    base.save_pretrained(d)
    tok.save_pretrained(d)
    m = AdapterModel(base, tok, base_id=str(d.resolve()))
    m.add_adapter("chat", LoRA(r=2), task="causal-lm")
    randomize(m, "chat", seed=9)
    m.store_adapter("chat")
    prompts = ["i love", "the film was"]
    want = m.predict(prompts, adapters="chat", max_new_tokens=5)
    rc, out, err = run(capsys, "predict", "chat", *prompts, "--max-new-tokens", "5", "--json")
    assert rc == 0, err
    assert [r["prediction"] for r in json.loads(out)] == want


def test_predict_errors(capsys, saved_base):
    d, m = saved_base
    m.add_adapter("sent", LoRA(r=4), labels=["neg", "pos"])
    m.store_adapter("sent")
    rc, out, err = run(capsys, "predict", "nope", "a fine film")
    assert rc == 2 and out == "" and err.startswith("error: no adapter named 'nope'")
    rc, _, err = run(capsys, "predict", "sent", "a", "b", "--adapters", "sent")
    assert rc == 2 and "one adapter per text" in err
    rc, _, err = run(capsys, "predict", "sent,nope", "a")
    assert rc == 2 and "no adapter named 'nope'" in err
    rc, _, err = run(capsys, "predict", "sent,", "a")
    assert rc == 2 and "comma-separated" in err
    rc, _, err = run(capsys, "predict", "sent", "a", "--base", str(d / "missing"))
    assert rc == 2 and "no such directory" in err
    rc, _, err = run(capsys, "predict", "./no-such-dir", "a")
    assert rc == 2 and "no adapter directory" in err
    # same architecture, other weights: refused unless --allow-base-mismatch
    d2 = d.parent / "other-base"
    tiny_bert(seed=1).save_pretrained(d2)
    make_tokenizer().save_pretrained(d2)
    rc, _, err = run(capsys, "predict", "sent", "a fine film", "--base", str(d2))
    assert rc == 2 and "allow_base_mismatch" in err
    rc, out, err = run(capsys, "predict", "sent", "a fine film", "--base", str(d2), "--allow-base-mismatch")
    assert rc == 0 and out.strip() in ("neg", "pos")


# ----------------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------------
def test_train_help_lists_arguments(capsys):
    rc, out, _ = run(capsys, "train", "--help")
    assert rc == 0 and "RECIPE" in out and "--resume" in out and "KEY=VALUE" in out


def test_train_not_available(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "adapterhub.training.run", None)  # import fails as if missing
    rc, out, err = run(capsys, "train", "recipe.yaml")
    assert rc == 2 and err.strip() == "error: training is not available in this build"


def test_train_dispatches_to_training_module(capsys, monkeypatch):
    import adapterhub.recipes

    seen = {}

    def fake_load_recipe(path, overrides):
        seen.update(recipe=path, overrides=overrides)
        return "the recipe"

    def fake_train_recipe(recipe, resume, run_dir):
        seen.update(loaded=recipe, resume=resume, run_dir=run_dir)
        return seen.get("results")

    monkeypatch.setattr(adapterhub.recipes, "load_recipe", fake_load_recipe)
    monkeypatch.setitem(sys.modules, "adapterhub.training.run", types.SimpleNamespace(train_recipe=fake_train_recipe))
    seen["results"] = {"sentiment": {}}
    rc, _, _ = run(capsys, "train", "r.yaml", "train.lr=1e-4", "r=8", "--resume")
    assert rc == 0
    assert seen == {"recipe": "r.yaml", "overrides": ["train.lr=1e-4", "r=8"], "loaded": "the recipe", "resume": True,
                    "run_dir": None, "results": {"sentiment": {}}}
    seen["results"] = None  # no results (training did not run to the end): exit 1
    rc, _, _ = run(capsys, "train", "r.yaml", "--run-dir", "runs/x")
    assert rc == 1 and seen["overrides"] == [] and seen["resume"] is False and seen["run_dir"] == Path("runs/x")


def test_train_missing_recipe_is_a_clean_error(capsys, tmp_path):
    pytest.importorskip("adapterhub.training.run")
    rc, out, err = run(capsys, "train", str(tmp_path / "missing.yaml"))
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------
# export (for plain peft users)
# ----------------------------------------------------------------------------------------------------
def test_export_peft_task_model(capsys, saved_base, tmp_path):
    """``adapterhub export NAME DIR --peft-task-model``: plain peft's AutoPeftModelForSequenceClassification loads
    DIR alone and gives our logits; a mean-pooling head is refused, and --lora-only exports it without the head."""
    from peft import AutoPeftModelForSequenceClassification

    d, m = saved_base
    m.add_adapter("native", LoRA(r=4), labels=["negative", "positive"], pooling="native")
    m.add_adapter("mean", LoRA(r=4), labels=["negative", "positive"])
    for n in ("native", "mean"):
        randomize(m, n)
        m.store_adapter(n)
    rc, out, err = run(capsys, "export", "native", str(tmp_path / "out"), "--peft-task-model", "--json")
    assert rc == 0, err
    assert json.loads(out)["peft_task_model"] is True
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and cfg["base_model_name_or_path"] == str(d.resolve())
    assert cfg["modules_to_save"] == ["bert.pooler", "classifier"]
    enc = m.tokenizer(TEXTS, padding=True, return_tensors="pt")
    peft_model = AutoPeftModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    with torch.no_grad():
        ours = m(enc["input_ids"], enc["attention_mask"], adapters="native").logits["native"]
        theirs = peft_model(**enc).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)

    rc, out, err = run(capsys, "export", "mean", str(tmp_path / "mean"), "--peft-task-model")
    assert rc == 2 and "plain peft cannot reproduce it" in err and "lora_only=True" in err
    assert not (tmp_path / "mean").exists()
    rc, out, err = run(capsys, "export", "mean", str(tmp_path / "mean"), "--lora-only")
    assert rc == 0, err
    assert json.loads((tmp_path / "mean" / "adapter_config.json").read_text())["task_type"] == "FEATURE_EXTRACTION"
