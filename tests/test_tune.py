"""``adapterhub tune`` (issue 15, item 5): Optuna trials on a tiny model, pruning on intermediate validation metrics,
the best trial's adapters stored, a results table and a PNG; bad search spaces refused before any training."""
from __future__ import annotations

import json

import pytest

from adapterhub.cli import main
from test_training import write_recipe

pytest.importorskip("optuna")


def test_three_trials_store_the_best_and_write_a_table_and_plot(workspace, capsys):
    from adapterhub.store import Store

    path = write_recipe(workspace, steps=6, extra_training={"eval_every": 3})
    study = workspace / "study"
    rc = main(["tune", str(path), "--trials", "3", "training.lr=loguniform:1e-3:3e-2",
               "tasks.sent.adapter.r=choice:2,4", "training.batch_size=4", "--study-dir", str(study)])
    out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    rows = json.loads((study / "trials.json").read_text())
    assert len(rows["trials"]) == 3
    assert all(r["state"] in ("complete", "pruned") for r in rows["trials"])
    best = rows["best_trial"]
    assert (study / "trials.png").stat().st_size > 0
    table = (study / "trials.txt").read_text()
    assert "training.lr" in table and "tasks.sent.adapter.r" in table and f"{best}*" in table
    assert f"best trial {best}" in out
    # the best trial's adapters went into the store, as the recipe names them
    stored = json.loads((study / f"trial-{best}" / "results.json").read_text())
    for t in ("sent", "ner"):
        entry = Store().get(t)
        assert entry.version == 1
        assert entry.card["metrics"]["test"] == {k: v for k, v in stored[t]["test"].items() if k != "report"}
    params = next(r["params"] for r in rows["trials"] if r["trial"] == best)
    assert json.loads((Store().get("sent").path / "adapter_config.json").read_text())["r"] == \
        params["tasks.sent.adapter.r"]


def test_a_trial_worse_than_the_median_is_pruned(workspace, monkeypatch, capsys):
    from adapterhub.training import fit

    order: dict[int, int] = {}

    def scripted(session, task, split="validation", full=False):  # trials 0, 1 good; trial 2 bad from the start
        k = order.setdefault(id(session), len(order))
        good = {0: 0.8, 1: 0.7}.get(k, 0.1)
        if task == "sent":
            return {"accuracy": good, "macro_f1": good, "n": 10}
        return {"precision": good, "recall": good, "f1": good, "token_accuracy": good, "n": 10}

    monkeypatch.setattr(fit, "evaluate", scripted)
    study = workspace / "study"
    rc = main(["tune", str(write_recipe(workspace, steps=6, extra_training={"eval_every": 2})), "--trials", "3",
               "training.lr=uniform:1e-3:2e-3", "output.store=false", "--study-dir", str(study)])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    rows = json.loads((study / "trials.json").read_text())["trials"]
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned"]
    assert rows[2]["intermediate"] == {"2": 0.1} or rows[2]["intermediate"] == {2: 0.1}
    assert "tune: trial 2 pruned at step 2" in err
    assert not (study / "trial-2" / "adapters").exists()  # a pruned trial writes no adapter


@pytest.mark.parametrize("items, message", [
    (["training.lrr=loguniform:1e-4:1e-3"], r"training\.lrr.*unknown key"),
    (["training.lr=loguniform:0:1e-3"], r"need LOW < HIGH and LOW > 0"),
    (["training.lr=uniform:1e-3"], r"expected uniform:LOW:HIGH"),
    (["tasks.sent.adapter.r=choice:4"], r"a choice needs at least two values"),
    (["tasks.sent.adapter.r=choice:4,4"], r"the choices repeat a value"),
    (["tasks.sent.adapter.r=int:a:b"], r"LOW and HIGH must be integers"),
    (["tasks.sent.adapter.r=choice:4,zero"], r"the value 'zero' makes an invalid recipe"),
    (["training.steps=3"], r"give at least one key=space"),
    (["training.lr=loguniform:1e-4:1e-3", "--objective", "nope"], r"--objective 'nope' is not a task"),
])
def test_bad_search_spaces_fail_before_training(workspace, capsys, items, message):
    import re

    rc = main(["tune", str(write_recipe(workspace)), "--trials", "2", "--study-dir", str(workspace / "s"), *items])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(message, err), err
    assert not (workspace / "s" / "trial-0").exists()


def test_a_relative_study_dir_is_under_the_working_directory_not_the_recipes(workspace, tmp_path, monkeypatch,
                                                                              capsys):
    """The recipe lives in another directory than the working one: the trials still train into the study dir the
    user named (relative to where they run), and the best one is found there."""
    (workspace / "recipes").mkdir()
    path = write_recipe(workspace, steps=2, extra_training={"eval_every": 2})
    path = path.rename(workspace / "recipes" / "recipe.yaml")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rc = main(["tune", str(path), "--trials", "2", "training.lr=uniform:1e-3:2e-3", "output.store=false",
               "--study-dir", "study"])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    assert (cwd / "study" / "trials.json").exists() and (cwd / "study" / "trial-0" / "results.json").exists()
    assert not (workspace / "recipes" / "study").exists()
