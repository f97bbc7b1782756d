"""Deterministic train/validation/test splits.

The same examples and seed give the same split in every process: the shuffle uses ``random.Random(seed)``
(whose seeding of ints and strings does not depend on ``PYTHONHASHSEED``), and labels are grouped in
sorted order, never by set/dict hash order. Classification examples are stratified by label.
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence

from ..errors import AdapterHubError
from .sources import FILE_TYPES, load_examples, source_splits


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise AdapterHubError(f"split fraction {name!r} must be a number in [0, 1), got {value!r}")
    return float(value)


def _count(n: int, frac: float, name: str) -> int:
    """Examples for a held-out fraction, rounded. A fraction > 0 that rounds to no example is refused: a held-out
    split of 0 (or a guessed 1 out of 3) examples gives a metric that means nothing."""
    if frac <= 0:
        return 0
    k = int(round(n * frac))
    if k < 1:
        raise AdapterHubError(f"{n} example(s) are too few to hold out {name}={frac:g} ({n * frac:.2f} examples): "
                              f"give more data, a larger {name} fraction, or a {name} file ({name}: PATH)")
    return k


def _stratified_order(examples: Sequence[dict], rng: random.Random) -> list[int]:
    """A shuffled order of example indices in which every prefix holds each label in about its overall
    proportion (labels interleaved by fractional rank); unlabelled examples are one group."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        key = ex.get("label") if isinstance(ex, dict) else None
        groups.setdefault("" if key is None else str(key), []).append(i)
    keyed = []
    for g, label in enumerate(sorted(groups)):
        idx = groups[label]
        rng.shuffle(idx)
        offset = rng.random()
        n = len(idx)
        keyed.extend(((j + offset) / n, g, i) for j, i in enumerate(idx))
    keyed.sort()
    return [i for _, _, i in keyed]


def split_examples(examples: Sequence[dict], seed: int | str, validation: float = 0.1, test: float = 0.1,
                   existing: dict[str, Sequence[dict]] | None = None) -> dict[str, list[dict]]:
    """Split ``examples`` into ``{"train", "validation", "test"}`` lists.

    ``validation`` / ``test`` are the held-out fractions of ``examples``. ``existing`` holds splits the
    source already provides (``{"test": [...]}`` for 20newsgroups, maybe ``"validation"`` too): those are
    used as given and not carved out of ``examples`` (their fraction is ignored). Classification examples
    are stratified by label; each split keeps the examples' original order. Deterministic in ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, str)):
        raise AdapterHubError(f"split seed must be an int or a string, got {seed!r}")
    validation = _check_fraction("validation", validation)
    test = _check_fraction("test", test)
    existing = dict(existing or {})
    bad = sorted(set(existing) - {"validation", "test"})
    if bad:
        raise AdapterHubError(f"existing splits may be 'validation' and 'test', got {bad}")
    examples = list(examples)
    if not examples:
        raise AdapterHubError("cannot split an empty data set (0 examples)")
    if "validation" in existing:
        validation = 0.0
    if "test" in existing:
        test = 0.0
    if validation + test >= 1:
        raise AdapterHubError(f"validation ({validation}) + test ({test}) fractions must be < 1")
    n = len(examples)
    n_test, n_val = _count(n, test, "test"), _count(n, validation, "validation")
    if n - n_test - n_val < 1:
        raise AdapterHubError(f"{n} example(s) are too few to hold out validation={validation} and test={test} "
                              f"and keep any for training")
    order = _stratified_order(examples, random.Random(seed))
    test_idx = sorted(order[:n_test])
    val_idx = sorted(order[n_test:n_test + n_val])
    train_idx = sorted(order[n_test + n_val:])
    out = {"train": [examples[i] for i in train_idx],
           "validation": [examples[i] for i in val_idx],
           "test": [examples[i] for i in test_idx]}
    for name, given in existing.items():
        given = list(given)
        if not given:
            raise AdapterHubError(f"the source's own {name!r} split is empty")
        out[name] = given
    return out


def load_splits(source: dict, seed: int | str, validation: float | str | os.PathLike = 0.1,
                test: float | str | os.PathLike = 0.1, *, base_dir: str | os.PathLike | None = None,
                task: str | None = None) -> dict[str, list[dict]]:
    """Load a source and split it: its own ``validation``/``test`` splits where it has them (20newsgroups'
    test file, a Hub data set's splits), or the files given as ``validation`` / ``test`` (paths, for file
    sources: read like the source's own ``path``), the rest carved deterministically out of its ``split``
    (default ``train``) by the fractions given."""
    own = source_splits(source, base_dir)
    main = source.get("split", "train")
    existing, fractions = {}, {"validation": validation, "test": test}
    for name, given in fractions.items():
        if isinstance(given, (str, os.PathLike)):
            if source.get("type") not in FILE_TYPES:
                raise AdapterHubError(f"{name}: a file path ({given!r}) is for file sources ({', '.join(FILE_TYPES)})"
                                      f"; a {source.get('type')} source has its own splits or takes a fraction")
            existing[name] = load_examples({**source, "path": given}, base_dir=base_dir, task=task)
            fractions[name] = 0.0
        elif name in own and name != main:
            existing[name] = load_examples({**source, "split": name}, base_dir=base_dir, task=task)
    train = load_examples(source, base_dir=base_dir, task=task)
    return split_examples(train, seed, fractions["validation"], fractions["test"], existing)
