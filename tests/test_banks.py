"""Adapter banks (the inference layout) and their bad inputs: ranks above a bank's padded rank, replacements that
would change an adapter's task or labels, and refusals that leave the model as it was."""
from __future__ import annotations

import pytest
import torch

from adapterhub import AdapterModel, Bottleneck, LoRA
from adapterhub.errors import AdapterNameError
from adapterhub.routing import AdaptedLinear
from conftest import make_tokenizer, tiny_bert

LABELS = ["neg", "pos"]


def _model():
    return AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")


def _saved(tmp_path, name, config, labels=LABELS, seed=0, task="sequence-classification"):
    m = _model()
    m.add_adapter(name, config, task=task, labels=labels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.save_adapter(name, tmp_path / f"{name}-{seed}")


def _banks(model) -> list:
    """(module path, group id, bank) of every bank of every module."""
    return [(p, gid, bank) for p, m in model.base.named_modules() if isinstance(m, AdaptedLinear)
            for gid, bank in m._banks.items()]


def test_ranks_grow_into_rank_buckets_and_route_exactly(tmp_path):
    """Ranks 2, 3, 8 and 40 banked on the same modules: each rank bucket (power of two) gets its bank, a rank
    above a bank's padded rank grows it, and a batch mixing all of them equals each row alone."""
    model = _model()
    for r in (2, 3, 8, 40):
        model.load_adapter(_saved(tmp_path, f"r{r}", LoRA(r=r), seed=r), name=f"r{r}")
    assert all(model.entry(f"r{r}").banked for r in (2, 3, 8, 40))
    groups = {gid[1] for _p, gid, _b in _banks(model)}
    assert groups == {2, 4, 8, 64}  # rank buckets: 2 | 3 -> 4 | 8 | 40 -> 64
    ids = torch.randint(5, 30, (8, 7), generator=torch.Generator().manual_seed(1))
    route = ["r2", "r40", "r3", "r8", "r8", "r2", "r40", "r3"]
    with torch.no_grad():
        mixed = model(ids, adapters=route).hidden_states
        for i, n in enumerate(route):
            torch.testing.assert_close(mixed[i:i + 1], model(ids[i:i + 1], adapters=n).hidden_states, atol=1e-5,
                                       rtol=0)
    # a rank-3 adapter after a rank-4 one in the same bucket: the bucket's rows grow from 3 to 4 in place
    model.load_adapter(_saved(tmp_path, "r4", LoRA(r=4), seed=4), name="r4")
    with torch.no_grad():
        torch.testing.assert_close(model(ids, adapters="r3").hidden_states,
                                   model(ids, adapters=["r3"] * 8).hidden_states, atol=1e-6, rtol=0)
        mixed2 = model(ids, adapters=["r3", "r4"] * 4).hidden_states
        torch.testing.assert_close(mixed2[0:1], model(ids[0:1], adapters="r3").hidden_states, atol=1e-5, rtol=0)


def test_bottleneck_activations_bank_apart(tmp_path):
    model = _model()
    model.load_adapter(_saved(tmp_path, "relu", Bottleneck(reduction_factor=4)), name="relu")
    model.load_adapter(_saved(tmp_path, "gelu", Bottleneck(reduction_factor=4, non_linearity="gelu"), seed=1),
                       name="gelu")
    assert {gid[1] for _p, gid, _b in _banks(model)} == {"relu", "gelu"}
    ids = torch.randint(5, 30, (4, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mixed = model(ids, adapters=["relu", "gelu", "gelu", "relu"]).hidden_states
        for i, n in enumerate(["relu", "gelu", "gelu", "relu"]):
            torch.testing.assert_close(mixed[i:i + 1], model(ids[i:i + 1], adapters=n).hidden_states, atol=1e-5,
                                       rtol=0)


def test_replacement_that_changes_task_or_labels_is_named_and_refused_without_replace(tmp_path):
    model = _model()
    model.load_adapter(_saved(tmp_path, "v", LoRA(r=2)), name="v")
    before = (model.adapters, model.entry("v").key, [(p, g, len(b)) for p, g, b in _banks(model)])
    other_labels = _saved(tmp_path, "v", LoRA(r=2), labels=["a", "b", "c"], seed=5)
    with pytest.raises(AdapterNameError, match=r"'v' is already loaded; it would change labels \['neg', 'pos'\] -> "
                                               r"\['a', 'b', 'c'\]; pass replace=True"):
        model.load_adapter(other_labels, name="v")
    tagger = _saved(tmp_path, "v", LoRA(r=2), labels=["O", "B-X"], seed=6, task="token-classification")
    with pytest.raises(AdapterNameError, match=r"task 'sequence-classification' -> 'token-classification'"):
        model.load_adapter(tagger, name="v")
    assert (model.adapters, model.entry("v").key, [(p, g, len(b)) for p, g, b in _banks(model)]) == before
    entry = model.load_adapter(other_labels, name="v", replace=True)  # asked for: the new version, its labels
    assert entry.head.labels == ["a", "b", "c"] and model.adapters == ["v"]
    assert sum(len(b) for _p, _g, b in _banks(model)) == len(entry.targets)  # the old rows were given back
