"""What a run prints and writes (issue 13, items 4, 5, 7): validation lines per task, no carriage-return debris in a
redirected log, cut-off words counted, the card's max_length, a fresh metrics.jsonl per run, unfinished runs not
overwritten, a finished run not stored twice on --resume, tag sets scored by their scheme."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adapterhub.recipes import RecipeError, load_recipe
from adapterhub.store import Store
from adapterhub.training import train_recipe
from test_training import write_recipe

UD_SAMPLE = Path(__file__).resolve().parent / "data" / "ud_sample.conllu"


def test_run_output_counts_cuts_and_prints_one_line_per_task(workspace, capsys):
    recipe = load_recipe(write_recipe(workspace, steps=4, extra_training={"eval_every": 2}),
                         ["tasks.ner.max_length=4"])  # [CLS] w w [SEP]: each 4-word sentence loses 2 words
    capsys.readouterr()
    results = train_recipe(recipe)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err  # redirected: no progress-bar redraws
    for step in (2, 4):
        for t in ("sent", "ner"):
            assert sum(line.startswith(f"validation step {step}/4 [joint] {t}: ") for line in err.splitlines()) == 1
    assert "tasks.ner: 120 of 120 examples are longer than max_length=4; 240 of 480 words get no tag" in err
    ner = results["ner"]
    assert ner.test["words_not_scored"] == 2 * ner.test["n"] and ner.primary == "f1"
    report = (workspace / "run" / "report.txt").read_text()
    assert "ner   f1*" in report and "sent  accuracy*" in report and "words_not_scored" in report
    card = Store().get("ner").card
    assert card["extra"]["max_length"] == 4 and card["metrics"]["primary"] == "f1"
    assert card["metrics"]["test"]["scheme"] == "bio"


def test_new_run_starts_a_new_log_and_resume_of_a_finished_run_stores_nothing(workspace, capsys):
    path = write_recipe(workspace, steps=2, extra_training={"eval_every": 2})
    train_recipe(load_recipe(path))
    train_recipe(load_recipe(path))  # the same run dir again, not resumed: a fresh metrics.jsonl
    log = [json.loads(x) for x in (workspace / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["split"] == "validation"] == [2, 2]  # one run's records (2 tasks)
    assert "held a previous run: starting a new one" in capsys.readouterr().err
    assert Store().versions("sent") == [1, 2]
    again = train_recipe(load_recipe(path), resume=True)
    assert Store().versions("sent") == [1, 2]  # nothing stored twice
    assert again["sent"].adapter["version"] == 2
    assert "has finished; nothing to train or store again" in capsys.readouterr().err


def test_unfinished_run_is_not_overwritten(workspace):
    path = write_recipe(workspace, steps=2)
    ckpt = workspace / "run" / "checkpoints" / "joint"
    ckpt.mkdir(parents=True)
    (ckpt / "latest").write_text("step-00000001")
    from adapterhub.training import Trainer

    tr = Trainer(load_recipe(path), show_progress=False)
    with pytest.raises(RecipeError, match=r"holds checkpoints of an unfinished run; continue it with --resume"):
        tr.train()
    assert (ckpt / "latest").is_file()


def _upos_recipe(ws: Path, **task) -> Path:
    tasks = {"pos": {"type": "token-classification", "adapter": {"method": "lora", "r": 2}, "max_length": 32,
                     "data": {"type": "conllu", "path": str(UD_SAMPLE), "validation": str(UD_SAMPLE),
                              "test": str(UD_SAMPLE)}, **task}}
    return write_recipe(ws, steps=2, tasks=tasks, extra_training={"eval_every": 2})


def test_upos_is_scored_per_tag_not_as_entities(workspace, recwarn):
    results = train_recipe(load_recipe(_upos_recipe(workspace)))
    test = results["pos"].test
    assert results["pos"].primary == "token_accuracy" and test["scheme"] == "tags"
    assert set(test) >= {"token_accuracy", "macro_f1"} and "f1" not in test
    labels = Store().get("pos").card["labels"]
    assert "O" not in labels and "ADJ" not in labels and "PRON" in labels  # the sample's tags, none invented
    assert "PRON" in test["report"] and not [w for w in recwarn if "seqeval" in str(w.filename)]


def test_entity_primary_metric_on_upos_is_refused_before_training(workspace):
    from adapterhub.training import Trainer

    tr = Trainer(load_recipe(_upos_recipe(workspace, primary_metric="f1")), show_progress=False)
    with pytest.raises(RecipeError, match=r"tasks\.pos\.primary_metric: 'f1' is not a metric of this task: .*not "
                                          r"entity tags.*\['token_accuracy', 'macro_f1'\]"):
        tr.prepare()
    assert tr.model.adapters == []
