"""Recipes: typed models, errors by dotted path (translated from pydantic), method-owned training options, the one
override mechanism."""
from __future__ import annotations

import pytest

from adapterhub.errors import AdapterHubError
from adapterhub.recipes import (RecipeError, Recipe, TaskSpec, TrainingSpec, apply_overrides, load_recipe,
                                parse_override, recipe_from_dict)
from test_training import write_recipe


def test_native_pooling_from_a_recipe(workspace):
    """``head: {pooling: native}``: the architecture's own task head, which a peft task-model export carries."""
    r = load_recipe(write_recipe(workspace), ["tasks.sent.head={pooling: native}"])
    assert r.tasks["sent"].head == {"pooling": "native"}


def test_typed_access(workspace):
    r = load_recipe(write_recipe(workspace), ["output.store_prefix=exp-", "tasks.sent.primary_metric=macro_f1"])
    assert isinstance(r, Recipe) and isinstance(r.training, TrainingSpec) and isinstance(r.tasks["sent"], TaskSpec)
    assert r.training.steps == 12 and r.training.batch_size == 8 and r.training.lr == 5e-3
    assert r.training.mode == "joint" and r.training.max_grad_norm == 1.0  # defaults filled
    assert r.output.store_prefix == "exp-" and r.store_name("sent") == "exp-sent"
    sent = r.tasks["sent"]
    assert sent.name == "sent" and sent.type == "sequence-classification" and sent.max_length == 16
    assert sent.data.type == "csv" and sent.data.path == str(workspace / "sent.csv") and sent.data.label == "sent.csv"
    assert sent.data.source() == {"type": "csv", "path": str(workspace / "sent.csv")}
    assert sent.primary == "macro_f1" and r.tasks["ner"].primary == "f1"
    assert r.run_dir == workspace / "run" and r.raw["training"]["steps"] == 12
    with pytest.raises(Exception):  # validated models are read-only: change a recipe through overrides
        r.training.steps = 3


@pytest.mark.parametrize("override, message", [
    ("training.steps=true", r"^training\.steps: expected int, got bool \(True\)$"),
    ("training.lr=yes", r"^training\.lr: expected int/float, got bool \(True\)$"),
    ("training.lr=0", r"^training\.lr: must be > 0, got 0$"),
    ("training.epochs=2", r"^training: give exactly one of training\.steps or training\.epochs$"),
    ("tasks.sent.primary_metric=acc", r"^tasks\.sent\.primary_metric: 'acc' is not a metric of sequence-classification "
                                      r"\(known: \['accuracy', 'macro_f1'\]\)$"),
    ("tasks.ner.primary_metric=accuracy", r"tasks\.ner\.primary_metric: 'accuracy' is not a metric of "
                                          r"token-classification \(known: \['precision', 'recall', 'f1', "
                                          r"'token_accuracy', 'macro_f1'\]\)"),
    ("tasks.sent.data={path: x.csv}", r"^tasks\.sent\.data\.type: required key is missing$"),
    ("tasks.sent.adapter={r: 4}", r"^tasks\.sent\.adapter\.method: required key is missing$"),
    ("tasks.sent.adapter.method=nope", r"^tasks\.sent\.adapter\.method: unknown method 'nope'"),
    ("tasks.sent.labels=[neg, neg]", r"^tasks\.sent\.labels: labels must be unique"),
    ("tasks.sent.labels=[]", r"^tasks\.sent\.labels: must not be empty$"),
    ("tasks.sent.head.pooling=max", r"^tasks\.sent\.head: pooling must be"),
    ("tasks.sent.head.poolin=mean", r"^tasks\.sent\.head: unknown head option\(s\) \['poolin'\]"),
    ("tasks.sent.data.task=ner", r"^tasks\.sent\.data\.task: 'ner' contradicts the task's type"),
    ("tasks.sent.data.type=package", r"^tasks\.sent\.data\.name: required key is missing \(a package source is one of"),
    ("tasks.sent.data.validation=1", r"^tasks\.sent\.data\.validation: must be < 1, got 1$"),
    ("tasks.sent.max_length=1", r"^tasks\.sent\.max_length: must be >= 2, got 1$"),
    ("training.progressive={zzz: 2}", r"^training\.progressive\.zzz: no such task"),
    ("training.progressive={sent: 2, ner: 1}", r"^training\.progressive: at least one task must start at step 0$"),
    ("output.dir=runs/{nme}", r"^output\.dir: unknown placeholder\(s\) \['nme'\]"),
    ("output.store_prefix=a/", r"^output\.store_prefix: 'a/ner' is no store name"),
    ("output.store=1", r"^output\.store: expected bool, got int \(1\)$"),
    ("tasks.b@d.type=x", r"^tasks\.b@d: bad task name"),
    ("tasks={}", r"^tasks: at least one task is required$"),
    ("training=5", r"^training: expected a mapping, got int \(5\)$"),
])
def test_errors_name_the_key(workspace, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(workspace), [override])


def test_every_problem_is_reported(workspace):
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(workspace), ["training.stpes=3", "tasks.sent.max_length=x"])
    lines = str(e.value).splitlines()
    assert lines[0] == "tasks.sent.max_length: expected int, got str ('x')"
    assert lines[1].startswith("training.stpes: unknown key (known: [") and "'steps'" in lines[1]


def test_method_training_options_come_from_the_plug_ins(workspace, monkeypatch):
    from adapterhub.methods import Method, registry

    class Fake(Method):
        name = "fake"
        training_options = {"fake_level": (int, 3)}

        def validate_training_options(self, options, adapters, mode):
            if options["fake_level"] > 5:
                raise AdapterHubError(f"training.fake_level: at most 5, got {options['fake_level']} ({adapters}, {mode})")

    monkeypatch.setitem(registry._METHODS, "fake", Fake())
    path = write_recipe(workspace)
    assert load_recipe(path).training.fake_level == 3
    r = load_recipe(path, ["training.fake_level=4"])
    assert r.training.method_options(Fake) == {"fake_level": 4}
    with pytest.raises(RecipeError, match=r"^training\.fake_level: expected int, got str \('x'\)$"):
        load_recipe(path, ["training.fake_level=x"])
    with pytest.raises(RecipeError, match=r"^training\.fake_level: at most 5, got 9 \(\[\], joint\)$"):
        load_recipe(path, ["training.fake_level=9"])
    monkeypatch.delitem(registry._METHODS, "fake")
    with pytest.raises(RecipeError, match=r"^training\.fake_level: unknown key"):
        load_recipe(path, ["training.fake_level=4"])


def test_recipe_from_dict_and_shape_errors(workspace):
    raw = {"base": "b", "tasks": {"t": {"type": "causal-lm", "data": {"type": "jsonl", "path": "x.jsonl"},
                                        "adapter": {"method": "lora", "r": 2}}}, "training": {"steps": 3}}
    r = recipe_from_dict(raw)
    assert r.name == "run" and r.tasks["t"].primary == "loss" and r.base_dir is None
    with pytest.raises(RecipeError, match=r"^tasks\.t\.labels: a causal-lm task takes no labels$"):
        recipe_from_dict({**raw, "tasks": {"t": {**raw["tasks"]["t"], "labels": ["a"]}}})
    with pytest.raises(RecipeError, match=r"^tasks\.t\.primary_metric: 'exact_match' is not a metric of causal-lm"):
        recipe_from_dict({**raw, "tasks": {"t": {**raw["tasks"]["t"], "primary_metric": "exact_match"}}})
    with pytest.raises(RecipeError, match=r"^tasks\.t\.data\.path: required key is missing"):
        recipe_from_dict({**raw, "tasks": {"t": {**raw["tasks"]["t"], "data": {"type": "jsonl"}}}})
    with pytest.raises(RecipeError, match=r"^recipe: a recipe is a YAML mapping$"):
        recipe_from_dict([1])
    (workspace / "list.yaml").write_text("- 1\n")
    with pytest.raises(RecipeError, match=r"list\.yaml: a recipe is a YAML mapping$"):
        load_recipe(workspace / "list.yaml")


def test_overrides():
    assert parse_override("training.lr=1e-4") == (["training", "lr"], 1e-4)
    assert parse_override("tasks.x.labels=[a, b]") == (["tasks", "x", "labels"], ["a", "b"])
    assert parse_override("output.store_prefix=") == (["output", "store_prefix"], "")
    raw = apply_overrides({"training": {"steps": 1}}, ["training.steps=5", "output.store=false"])
    assert raw == {"training": {"steps": 5}, "output": {"store": False}}
    with pytest.raises(RecipeError, match=r"override 'steps': expected key.path=value"):
        parse_override("steps")
    with pytest.raises(RecipeError, match=r"override 'a\.\.b=1': empty key in 'a\.\.b'"):
        parse_override("a..b=1")
    with pytest.raises(RecipeError, match=r"override 'a=\[': the value '\[' is not valid YAML"):
        parse_override("a=[")
    with pytest.raises(RecipeError, match=r"override 'training\.steps\.x=1': steps is not a mapping"):
        apply_overrides({"training": {"steps": 1}}, ["training.steps.x=1"])


def test_data_spec_keys_are_the_source_keys():
    """A recipe's ``data`` mapping goes to adapterhub.data as is: both must know the same keys."""
    from adapterhub.data import sources
    from adapterhub.recipes import DataSpec

    assert set(DataSpec.model_fields) - {"validation", "test"} == set(sources._KNOWN_KEYS)
