"""Tests of the one-copy rules: atomic writes (adapterhub.atomic), the pickle refusal, name and repo-id rules."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapterhub import atomic
from adapterhub.atomic import atomic_dir, discard, publish_dir, write_bytes_atomic, write_text_atomic
from adapterhub.errors import TargetExistsError


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------------------------------------ atomic writes
def test_atomic_dir_creates_new(tmp_path):
    target = tmp_path / "sub" / "out"
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".tmp-") and not target.exists()
        (tmp / "f").write_text("x")
        (tmp / "d").mkdir()
        (tmp / "d" / "g").write_text("y")
    assert (target / "f").read_text() == "x" and (target / "d" / "g").read_text() == "y"
    assert listing(target.parent) == ["out"]


def test_atomic_dir_exists_is_an_error(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("old")
    with pytest.raises(TargetExistsError, match="already exists"):
        with atomic_dir(target):
            pytest.fail("nothing is yielded when the target exists")
    empty = tmp_path / "empty"
    empty.mkdir()  # rename(2) would replace an empty directory: still refused
    with pytest.raises(TargetExistsError, match=str(empty)):
        with atomic_dir(empty):
            pass
    assert listing(tmp_path) == ["empty", "out"] and listing(target) == ["keep"]


def test_atomic_dir_target_appears_meanwhile(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(TargetExistsError, match="already exists"):
        with atomic_dir(target) as tmp:
            (tmp / "f").write_text("x")
            target.mkdir()                                       # someone else won the race
    assert listing(tmp_path) == ["out"]
    assert list(target.iterdir()) == []


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as tmp:
            (tmp / "f").write_text("x")
            raise RuntimeError("boom")
    assert listing(tmp_path) == []

    old = tmp_path / "old"
    old.mkdir()
    (old / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(old, replace=True) as tmp:
            (tmp / "f").write_text("new")
            raise RuntimeError("boom")
    assert listing(tmp_path) == ["old"] and (old / "f").read_text() == "old"


def test_atomic_dir_replace(tmp_path):
    target = tmp_path / "out"
    for content in ("one", "two"):
        with atomic_dir(target, replace=True) as tmp:
            (tmp / content).write_text(content)
    assert listing(target) == ["two"]
    assert listing(tmp_path) == ["out"]  # the old copy is gone, no temp names left


def test_atomic_dir_fsyncs_contents_before_rename_and_parent_after(tmp_path, monkeypatch):
    events = []
    real_rename = os.rename
    monkeypatch.setattr(atomic, "fsync_path", lambda p: events.append(("fsync", Path(p).name)))
    monkeypatch.setattr(atomic.os, "rename", lambda a, b: (events.append(("rename", Path(b).name)),
                                                          real_rename(a, b)))
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert events.index(("fsync", "f")) < events.index(("rename", "out")) < events.index(("fsync", tmp_path.name))


def test_publish_dir_replace_puts_old_back_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "f").write_text("old")
    tmp = atomic.make_tmp_dir(target)
    (tmp / "f").write_text("new")
    real_rename = os.rename

    def rename(a, b):
        if Path(a) == tmp:
            raise OSError(28, "No space left on device", str(a))
        return real_rename(a, b)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        publish_dir(tmp, target, replace=True)
    assert (target / "f").read_text() == "old"


def test_write_bytes_atomic(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    write_text_atomic(path, "one")
    write_bytes_atomic(path, b"two")
    assert path.read_bytes() == b"two" and listing(tmp_path) == ["f.json"]

    def fail(*a):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="I/O error"):
        write_text_atomic(path, "three")
    assert path.read_text() == "two" and listing(tmp_path) == ["f.json"]  # no temp file left behind


def test_discard(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    f = tmp_path / "f"
    f.write_text("x")
    trash = tmp_path / "trash"
    trash.mkdir()
    discard(d)
    discard(f, trash_dir=trash)
    assert listing(tmp_path) == ["trash"] and listing(trash) == []
    with pytest.raises(OSError):
        discard(tmp_path / "missing")
