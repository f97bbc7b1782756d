import json
import shutil
from pathlib import Path

import pytest

from adapterhub.files.card import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from adapterhub.errors import AdapterNameError, StoreError
from adapterhub.store import Store, StoreEntry, parse_version, validate_name


def make_adapter(d: Path, name: str = "demo", tag: str = "a") -> Path:
    d.mkdir(parents=True)
    (d / CONFIG_FILE).write_text(json.dumps({"method": "lora"}))
    (d / WEIGHTS_FILE).write_bytes(b"weights-" + tag.encode())
    (d / CARD_FILE).write_text(json.dumps({"name": name, "method": "lora", "task": "classification", "tag": tag}))
    return d


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def test_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path))
    assert Store().root == tmp_path / "store"


def test_put_get_versions(store, tmp_path):
    src = make_adapter(tmp_path / "a", tag="one")
    (src / "extra").mkdir()
    (src / "extra" / "notes.txt").write_text("n")
    e1 = store.put(src, "demo")
    assert (e1.path / "extra" / "notes.txt").read_text() == "n"
    e2 = store.put(make_adapter(tmp_path / "b", tag="two"), "demo")
    assert (e1.version, e2.version) == (1, 2)
    assert e2.path == store.root / "demo" / "v2"
    assert (e2.path / WEIGHTS_FILE).read_bytes() == b"weights-two"
    assert store.versions("demo") == [1, 2]
    assert store.get("demo") == e2
    assert store.get("demo", 1) == e1
    assert store.get("demo", "v1") == e1 and store.get("demo", "1") == e1
    assert store.get("demo").card["tag"] == "two"
    assert "demo" in store and "other" not in store and "../x" not in store


def test_get_missing(store, tmp_path):
    with pytest.raises(StoreError, match="no adapter named 'nope'.*have: \\[\\]"):
        store.get("nope")
    store.put(make_adapter(tmp_path / "a"), "demo")
    with pytest.raises(StoreError, match=r"have: \['demo'\]"):
        store.get("nope")
    with pytest.raises(StoreError, match=r"no version 7 of 'demo'; have \[1\]"):
        store.get("demo", 7)


def test_list_sorted_and_ignores_garbage(store, tmp_path):
    store.put(make_adapter(tmp_path / "a"), "zeta")
    store.put(make_adapter(tmp_path / "b"), "alpha")
    store.put(make_adapter(tmp_path / "c"), "alpha")
    (store.root / "alpha" / ".tmp-v3-deadbeef").mkdir()       # crashed put
    (store.root / ".tmp-trash-x").mkdir()                      # crashed remove
    (store.root / "alpha" / "notes.txt").write_text("hi")      # garbage
    (store.root / "alpha" / "vX").mkdir()
    (store.root / "empty").mkdir()                              # name with no versions
    assert [(e.name, e.version) for e in store.list()] == [("alpha", 1), ("alpha", 2), ("zeta", 1)]
    assert all(isinstance(e, StoreEntry) for e in store.list())
    assert store.put(make_adapter(tmp_path / "d"), "alpha").version == 3


def test_list_empty_store(store):
    assert store.list() == [] and store.names() == []


def test_remove_version_and_all(store, tmp_path):
    for i in range(3):
        store.put(make_adapter(tmp_path / f"s{i}", tag=str(i)), "demo")
    removed = store.remove("demo", "v2")
    assert [e.version for e in removed] == [2]
    assert removed[0].card["tag"] == "1"                        # card still readable after removal
    assert store.versions("demo") == [1, 3]
    assert store.put(make_adapter(tmp_path / "s9"), "demo").version == 4
    assert [e.version for e in store.remove("demo")] == [1, 3, 4]
    assert "demo" not in store and store.list() == []
    # only the record of the numbers issued stays: a version number is never reused, even after removing all
    assert [p.name for p in (store.root / "demo").iterdir()] == [".last-version"]
    with pytest.raises(StoreError, match="no adapter named"):
        store.remove("demo")
    assert store.put(make_adapter(tmp_path / "s10"), "demo").version == 5
    with pytest.raises(StoreError, match="no version 4"):
        store.remove("demo", 4)


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "", "x" * 65, "..", ".hidden", "a b", "-x", "a..b", None])
def test_bad_names(store, tmp_path, bad):
    src = make_adapter(tmp_path / "a")
    with pytest.raises(AdapterNameError):
        validate_name(bad)
    for call in (lambda: store.put(src, bad), lambda: store.get(bad), lambda: store.remove(bad),
                 lambda: store.versions(bad)):
        with pytest.raises(AdapterNameError):
            call()
    assert snapshot(tmp_path / "store") == []


def test_name_error_messages():
    with pytest.raises(AdapterNameError, match="empty"):
        validate_name("")
    with pytest.raises(AdapterNameError, match="too long"):
        validate_name("x" * 65)
    with pytest.raises(AdapterNameError, match="separator"):
        validate_name("a/b")
    with pytest.raises(AdapterNameError, match=r"'\.\.'"):
        validate_name("..")
    assert validate_name("x" * 64) == "x" * 64
    assert validate_name("My_adapter-2") == "My_adapter-2"


def test_parse_version():
    assert parse_version(3) == parse_version("3") == parse_version("v3") == 3
    for bad in (0, -1, "v0", "x", "3.0", True, 1.5):
        with pytest.raises(StoreError):
            parse_version(bad)


@pytest.mark.parametrize("missing", [CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
def test_put_missing_file(store, tmp_path, missing):
    store.put(make_adapter(tmp_path / "ok"), "demo")
    before = snapshot(store.root)
    src = make_adapter(tmp_path / "bad")
    (src / missing).unlink()
    with pytest.raises(StoreError, match=missing):
        store.put(src, "demo")
    assert snapshot(store.root) == before


def test_put_not_a_dir(store, tmp_path):
    with pytest.raises(StoreError, match="not a directory"):
        store.put(tmp_path / "nowhere", "demo")


def test_put_fails_mid_copy(store, tmp_path, monkeypatch):
    store.put(make_adapter(tmp_path / "ok"), "demo")
    before = snapshot(store.root)
    real_copy2, calls = shutil.copy2, []

    def flaky_copy2(src, dst, **kw):
        calls.append(src)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_copy2(src, dst, **kw)

    monkeypatch.setattr(shutil, "copy2", flaky_copy2)
    with pytest.raises(StoreError, match="No space left"):
        store.put(make_adapter(tmp_path / "src"), "demo")
    assert len(calls) == 2
    assert snapshot(store.root) == before                       # no v2, no .tmp-* left behind
    assert store.versions("demo") == [1]


def test_put_retries_when_version_taken(store, tmp_path, monkeypatch):
    store.put(make_adapter(tmp_path / "a"), "demo")
    store.put(make_adapter(tmp_path / "b"), "demo")
    # a concurrent writer made v2 after we looked: put() sees stale versions, must take v3
    real = Store.versions
    monkeypatch.setattr(Store, "versions", lambda self, name: [1])
    e = store.put(make_adapter(tmp_path / "c", tag="c"), "demo")
    monkeypatch.setattr(Store, "versions", real)
    assert e.version == 3 and store.versions("demo") == [1, 2, 3]
    assert (e.path / WEIGHTS_FILE).read_bytes() == b"weights-c"
    assert not [p for p in (store.root / "demo").iterdir() if p.name.startswith(".tmp-")]


def test_put_with_writes_once_in_place_and_refuses_incomplete(tmp_path):
    from adapterhub.errors import StoreError
    from adapterhub.store import Store

    store = Store(tmp_path / "store")
    seen = []

    def write(d):
        seen.append(d)
        for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE):
            (d / f).write_text("{}")

    e = store.put_with("x", write)
    assert e.version == 1 and len(seen) == 1 and seen[0].parent == e.path.parent  # written beside, renamed in
    assert sorted(p.name for p in e.path.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
    with pytest.raises(StoreError, match=f"missing {CARD_FILE}"):
        store.put_with("x", lambda d: (d / CONFIG_FILE).write_text("{}") and (d / WEIGHTS_FILE).write_text("{}"))
    assert store.versions("x") == [1]
    assert sorted(p.name for p in (tmp_path / "store" / "x").iterdir()) == [".last-version", "v1"]  # no temp dir
    assert store.put_with("x", write).version == 2  # a failed write issues no number
