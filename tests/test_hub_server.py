"""The self-hosted hub (``adapterhub hub serve``) against the stock huggingface_hub client, on loopback."""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapterhub.errors import HubError
from adapterhub.names import validate_path_in_repo, validate_repo_id
from adapterhub.cli import main as cli
from adapterhub.hub.server import HubServer, git_blob_sha1

from hub_faults import Stall

TOKEN = "ahub_test_write_token_4f1c9e"
OTHER = "ahub_other_token_9b2d77"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub(tmp_path, hf_env, monkeypatch):
    srv = HubServer(tmp_path / "hubroot", tokens={TOKEN: "alice", OTHER: "bob"}).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    yield srv
    srv.stop()


def api(srv, token=TOKEN):
    from huggingface_hub import HfApi

    return HfApi(endpoint=srv.url, token=token)


def sub_env(srv, tmp_path) -> dict:
    env = dict(os.environ, HF_ENDPOINT=srv.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
               HF_HOME=str(tmp_path / "hf-sub"), PYTHONPATH=str(ROOT), HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.pop("HF_TOKEN", None)
    return env


def wait_for(cond, timeout=15.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.05)
    return False


def raw(srv, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.headers, data  # header names are case-insensitive


# ----------------------------------------------------------------------------------------------------------------
# the stock client, end to end
# ----------------------------------------------------------------------------------------------------------------
def test_stock_client_roundtrip(hub, tmp_path):
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    a = api(hub)
    assert a.whoami()["name"] == "alice"
    url = a.create_repo("alice/demo")
    assert str(url).endswith("/alice/demo")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    weights = os.urandom(200_000)
    (src / "sub" / "w.safetensors").write_bytes(weights)
    ci = a.upload_folder(repo_id="alice/demo", folder_path=src, commit_message="first")
    assert len(ci.oid) == 40

    assert a.list_repo_files("alice/demo") == [".gitattributes", "a.txt", "sub/w.safetensors"]
    info = a.model_info("alice/demo", files_metadata=True)
    assert info.sha == ci.oid
    sib = {s.rfilename: s for s in info.siblings}
    assert sib["sub/w.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()  # went through LFS
    assert sib["a.txt"].lfs is None and sib["a.txt"].blob_id == git_blob_sha1(b"hello")  # went inline

    tree = list(a.list_repo_tree("alice/demo"))
    assert [(type(t).__name__, t.path) for t in tree] == [("RepoFolder", "sub"), ("RepoFile", ".gitattributes"),
                                                          ("RepoFile", "a.txt")]
    rec = {t.path for t in a.list_repo_tree("alice/demo", recursive=True) if isinstance(t, RepoFile)}
    assert rec == {".gitattributes", "a.txt", "sub/w.safetensors"}
    assert [t.path for t in a.list_repo_tree("alice/demo", path_in_repo="sub")] == ["sub/w.safetensors"]
    paths = a.get_paths_info("alice/demo", ["a.txt", "sub", "nope"])
    assert [(type(p).__name__, p.path) for p in paths] == [("RepoFile", "a.txt"), ("RepoFolder", "sub")]
    assert isinstance(paths[1], RepoFolder)

    folder = Path(snapshot_download("alice/demo", endpoint=hub.url))
    assert (folder / "sub" / "w.safetensors").read_bytes() == weights
    assert Path(hf_hub_download("alice/demo", "a.txt", endpoint=hub.url)).read_text() == "hello"
    meta = get_hf_file_metadata(hf_hub_url("alice/demo", "sub/w.safetensors", endpoint=hub.url))
    assert meta.commit_hash == ci.oid and meta.etag == hashlib.sha256(weights).hexdigest()
    assert meta.size == len(weights)

    # branches, tags, commits, revisions by commit id
    a.create_branch("alice/demo", branch="dev")
    (src / "a.txt").write_text("hello dev")
    ci2 = a.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id="alice/demo", revision="dev")
    assert "dev.txt" not in a.list_repo_files("alice/demo")
    assert "dev.txt" in a.list_repo_files("alice/demo", revision="dev")
    assert "dev.txt" in a.list_repo_files("alice/demo", revision=ci2.oid)
    assert Path(hf_hub_download("alice/demo", "dev.txt", revision="dev", endpoint=hub.url)).read_bytes() == b"dev only"
    a.create_tag("alice/demo", tag="v1", revision=ci.oid)
    refs = a.list_repo_refs("alice/demo")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": ci.oid, "dev": ci2.oid}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", ci.oid)]
    assert a.model_info("alice/demo", revision="v1").sha == ci.oid
    assert [c.title for c in a.list_repo_commits("alice/demo", revision="dev")] == [
        "Upload dev.txt with huggingface_hub", "first", "initial commit"]

    # deletions, then the old commit is still readable
    a.delete_file("a.txt", repo_id="alice/demo")
    a.delete_folder("sub", repo_id="alice/demo")
    assert a.list_repo_files("alice/demo") == [".gitattributes"]
    assert a.list_repo_files("alice/demo", revision=ci.oid) == [".gitattributes", "a.txt", "sub/w.safetensors"]
    a.delete_branch("alice/demo", branch="dev")
    assert [b.name for b in a.list_repo_refs("alice/demo").branches] == ["main"]
    a.delete_repo("alice/demo")
    assert not a.repo_exists("alice/demo")


def test_noop_upload_creates_no_commit_and_range_requests(hub, tmp_path):
    a = api(hub)
    a.create_repo("alice/r")
    data = bytes(range(256)) * 40
    ci = a.upload_file(path_or_fileobj=data, path_in_repo="x.bin", repo_id="alice/r")
    again = a.upload_file(path_or_fileobj=data, path_in_repo="x.bin", repo_id="alice/r")
    assert again.oid == ci.oid
    status, headers, body = raw(hub, "GET", "/alice/r/resolve/main/x.bin", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert headers["X-Repo-Commit"] == ci.oid
    status, headers, body = raw(hub, "HEAD", "/alice/r/resolve/main/x.bin")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(data)


def test_persisted_and_one_server_per_root(hub, tmp_path, hf_env):
    a = api(hub)
    a.create_repo("alice/keep", private=True)
    a.upload_file(path_or_fileobj=b"kept", path_in_repo="k.txt", repo_id="alice/keep")
    root = hub.storage.root
    with pytest.raises(HubError, match="already serving"):
        HubServer(root, tokens={})
    hub.stop()
    with HubServer(root, tokens={TOKEN: "alice"}) as again:
        assert api(again).list_repo_files("alice/keep") == [".gitattributes", "k.txt"]
        assert api(again).model_info("alice/keep").private is True
    with HubServer(tmp_path / "other", tokens={}) as default:
        assert default.host == "127.0.0.1" and default.url.startswith("http://127.0.0.1:")  # loopback by default


def test_tokens_hashed_private_and_never_logged(tmp_path, hf_env, capsys):
    root = tmp_path / "root"
    assert cli(["hub", "token", "add", "user", "--root", str(root)]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("ahub_") and "shown only this once" in err and token not in err
    db = root / "hub.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600" and oct(root.stat().st_mode & 0o777) == "0o700"
    logs: list[str] = []
    srv = HubServer(root, log=logs.append).start()
    try:
        a = api(srv, token)
        a.create_repo("user/x")
        a.upload_file(path_or_fileobj=os.urandom(1000), path_in_repo="w.safetensors", repo_id="user/x")
        with pytest.raises(Exception):
            api(srv, "wrong-" + token).whoami()
    finally:
        srv.stop()
    text = "\n".join(logs)
    assert "POST /api/models/user/x/commit/main" in text and "lfs-upload/<ticket>" in text
    assert token not in text
    for f in root.rglob("*"):  # hashed at rest: the token is nowhere under the root
        assert not f.is_file() or token.encode() not in f.read_bytes(), f


# ----------------------------------------------------------------------------------------------------------------
# auth and errors
# ----------------------------------------------------------------------------------------------------------------
def test_auth(hub):
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    with pytest.raises(HfHubHTTPError) as e:
        api(hub, False).create_repo("alice/nope")
    assert e.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as e:
        api(hub, "not-a-token").create_repo("alice/nope")
    assert e.value.response.status_code == 401 and "Invalid credentials" in str(e.value)
    api(hub).create_repo("alice/pub")
    with pytest.raises(HfHubHTTPError) as e:  # writing into an existing repo needs a token too
        api(hub, False).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/pub")
    assert e.value.response.status_code == 401
    assert api(hub, False).list_repo_files("alice/pub") == [".gitattributes"]  # public: read without token

    api(hub).create_repo("alice/secret", private=True)
    with pytest.raises(RepositoryNotFoundError):
        api(hub, False).list_repo_files("alice/secret")
    with pytest.raises(RepositoryNotFoundError):  # bob does not own the namespace alice
        api(hub, OTHER).list_repo_files("alice/secret")
    assert api(hub).list_repo_files("alice/secret") == [".gitattributes"]
    status, headers, _ = raw(hub, "GET", "/alice/secret/resolve/main/.gitattributes")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"  # the same answer as a missing repo
    api(hub).update_repo_settings("alice/secret", private=False)
    assert api(hub, False).list_repo_files("alice/secret") == [".gitattributes"]


def test_clear_errors(hub):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    a = api(hub)
    with pytest.raises(RepositoryNotFoundError):
        a.model_info("alice/missing")
    a.create_repo("alice/e")
    with pytest.raises(RevisionNotFoundError):
        a.model_info("alice/e", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        a.list_repo_files("alice/e", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/e", "missing.txt", endpoint=hub.url)
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as e:
        a.create_repo("alice/e")
    assert e.value.response.status_code == 409
    a.create_repo("alice/e", exist_ok=True)
    # Xet is not spoken here: the token endpoint says what to do instead
    status, _, body = raw(hub, "GET", "/api/models/alice/e/xet-write-token/main",
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 501 and b"HF_HUB_DISABLE_XET=1" in body


def test_regular_mode_works_with_xet_enabled(tmp_path, hf_env, monkeypatch):
    """``lfs=False``: every file inline, so a client with hf_xet on never needs a Xet token."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    with HubServer(tmp_path / "root", tokens={TOKEN: "alice"}, lfs=False) as srv:
        a = api(srv)
        a.create_repo("alice/reg")
        payload = os.urandom(50_000)
        a.upload_file(path_or_fileobj=payload, path_in_repo="w.safetensors", repo_id="alice/reg")
        sib = {s.rfilename: s for s in a.model_info("alice/reg", files_metadata=True).siblings}
        assert sib["w.safetensors"].lfs is None
        from huggingface_hub import hf_hub_download

        assert Path(hf_hub_download("alice/reg", "w.safetensors", endpoint=srv.url)).read_bytes() == payload


# ----------------------------------------------------------------------------------------------------------------
# validation, client and server side
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../x", "a/../b", "/abs", "a//b", "./a", "a\\b", ".git/config", "", "a/./b",
                                 "C:/x", "x\x00y"])
def test_validate_path_in_repo(bad):
    with pytest.raises(HubError):
        validate_path_in_repo(bad)


@pytest.mark.parametrize("bad", ["..", "../x", "a/b/c", "a", "/a/b", "a/..", "a/b..c", "a--b/c", "a/b.git",
                                 "api/x", "-a/b", "a/b\\c", "a/" + "x" * 100, 3])
def test_validate_repo_id(bad):
    with pytest.raises(HubError):
        validate_repo_id(bad)


def test_validate_repo_id_ok():
    assert validate_repo_id("user/my-adapter_v1.2") == "user/my-adapter_v1.2"
    assert validate_repo_id("gpt2", require_namespace=False) == "gpt2"
    assert validate_path_in_repo("sent/adapter_model.safetensors")


def _commit_body(*items) -> bytes:
    lines = [{"key": "header", "value": {"summary": "evil", "description": ""}}] + list(items)
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def _inline(path, content=b"x"):
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(),
                                     "encoding": "base64"}}


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b", "a\\b", ".git/hooks/x", "a//b"])
def test_server_refuses_bad_paths(hub, path):
    api(hub).create_repo("alice/v")
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
    status, headers, body = raw(hub, "POST", "/api/models/alice/v/commit/main", _commit_body(_inline(path)), auth)
    assert status == 400, body
    status, _, _ = raw(hub, "POST", "/api/models/alice/v/commit/main", _commit_body(
        {"key": "deletedFolder", "value": {"path": path}}), auth)
    assert status in (400, 404)
    assert api(hub).list_repo_files("alice/v") == [".gitattributes"]
    assert not list(hub.storage.root.rglob("escape.txt"))


def test_server_refuses_bad_repo_ids_and_urls(hub):
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for name, org in (("..", "alice"), ("x", ".."), ("a/b", "alice"), ("ok", "api"), ("x.git", "alice")):
        status, _, body = raw(hub, "POST", "/api/repos/create", json.dumps({"name": name, "organization": org}).encode(),
                              auth)
        assert status == 400, (name, org, body)
    assert not any(p.name in ("..", "x.git") for p in (hub.storage.root / "repos").rglob("*"))
    assert hub.storage.list_repos() == []
    api(hub).create_repo("alice/u")
    status, _, _ = raw(hub, "GET", "/alice/u/resolve/main/..%2F..%2Frepo.json")
    assert status == 400
    status, _, _ = raw(hub, "GET", "/api/models/alice/u/tree/main/..%2F..")
    assert status == 400


def test_commit_of_an_lfs_object_never_uploaded_is_refused(hub):
    api(hub).create_repo("alice/l")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = raw(hub, "POST", "/api/models/alice/l/commit/main", _commit_body(
        {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": "ab" * 32, "size": 3}}), auth)
    assert status == 400 and b"was not uploaded" in body
    assert api(hub).list_repo_files("alice/l") == [".gitattributes"]


def test_parent_commit_conflict(hub):
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    a = api(hub)
    a.create_repo("alice/p")
    first = a.model_info("alice/p").sha
    a.upload_file(path_or_fileobj=b"1", path_in_repo="one.txt", repo_id="alice/p")
    with pytest.raises(HfHubHTTPError) as e:
        a.create_commit("alice/p", [CommitOperationAdd("two.txt", b"2")], commit_message="late", parent_commit=first)
    assert e.value.response.status_code == 412
    assert a.list_repo_files("alice/p") == [".gitattributes", "one.txt"]


# ----------------------------------------------------------------------------------------------------------------
# interruption safety
# ----------------------------------------------------------------------------------------------------------------
UPLOAD_SCRIPT = """
import os, sys
from huggingface_hub import HfApi
HfApi(endpoint=os.environ["HF_ENDPOINT"], token=os.environ["T"]).upload_folder(
    repo_id="alice/big", folder_path=sys.argv[1], commit_message="killed")
print("UPLOADED", flush=True)
"""


def _kill_mid_transfer(hub, tmp_path, monkeypatch, path_part, lfs: bool):
    """Run a real client in a subprocess, stall the server once bytes of the big file arrive, SIGKILL the client,
    let the server go on. Returns the big file's sha256."""
    hub.lfs = lfs
    api(hub).create_repo("alice/big")
    head = api(hub).model_info("alice/big").sha
    src = tmp_path / "big"
    src.mkdir()
    big = os.urandom(24 * 1024 * 1024)  # well over the socket buffers: the server cannot have it all
    (src / "adapter_model.safetensors").write_bytes(big)
    (src / "adapter_config.json").write_text("{}")
    stall = Stall(hub.app, path_part, "request", after=1)
    monkeypatch.setattr(hub, "app", stall)
    proc = subprocess.Popen([sys.executable, "-c", UPLOAD_SCRIPT, str(src)], env={**sub_env(hub, tmp_path), "T": TOKEN},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert stall.stalled.wait(60), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stall.release.set()
    assert proc.returncode == -signal.SIGKILL
    # the server sees the connection drop, discards the partial upload, and the repo never moved
    assert wait_for(lambda: not any(hub.storage.tmp.iterdir()))
    a = api(hub)
    assert a.model_info("alice/big").sha == head
    assert a.list_repo_files("alice/big") == [".gitattributes"]
    assert [c.title for c in a.list_repo_commits("alice/big")] == ["initial commit"]
    return hashlib.sha256(big).hexdigest()


def test_client_killed_mid_lfs_upload(hub, tmp_path, monkeypatch):
    sha = _kill_mid_transfer(hub, tmp_path, monkeypatch, "/lfs-upload/", lfs=True)
    assert not hub.storage.has_blob(sha)  # no half (or whole) blob either


def test_client_killed_mid_commit(hub, tmp_path, monkeypatch):
    sha = _kill_mid_transfer(hub, tmp_path, monkeypatch, "/commit/main", lfs=False)  # everything inline
    assert not hub.storage.has_blob(sha)


def test_truncated_commit_body_commits_nothing(hub):
    api(hub).create_repo("alice/t")
    head = api(hub).model_info("alice/t").sha
    body = _commit_body(_inline("a.txt", b"complete line"), _inline("b.txt", b"y" * 1000))
    cut = body[: len(body) - 500]  # the last line is cut short, as by a killed client
    s = socket.create_connection((hub.host, hub.port))
    s.sendall(b"POST /api/models/alice/t/commit/main HTTP/1.1\r\nHost: x\r\n"
              + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/x-ndjson\r\n".encode()
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + cut)
    s.close()
    time.sleep(0.3)
    assert api(hub).model_info("alice/t").sha == head
    assert api(hub).list_repo_files("alice/t") == [".gitattributes"]


CRASH_SERVER = ROOT / "tests" / "hub_crash_server.py"


@pytest.mark.parametrize("point, committed", [("blob-before-rename", False), ("before-transaction", False),
                                              ("inside-transaction", False), ("after-transaction", True)])
def test_server_killed_mid_commit(tmp_path, hf_env, point, committed):
    """A server SIGKILLed at any point of a commit leaves the repo at its previous commit or at its new one, never
    in between; the next start cleans up and serves on."""
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, str(CRASH_SERVER), str(root), TOKEN, point],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        from huggingface_hub import HfApi

        a = HfApi(endpoint=url, token=TOKEN)
        head = a.model_info("alice/crash").sha
        with pytest.raises(Exception):
            a.upload_file(path_or_fileobj=b"maybe", path_in_repo="x.txt", repo_id="alice/crash")
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    with HubServer(root, tokens={TOKEN: "alice"}) as srv:
        assert not any(srv.storage.tmp.iterdir())
        b = api(srv)
        files = b.list_repo_files("alice/crash")
        if committed:
            assert files == [".gitattributes", "x.txt"] and b.model_info("alice/crash").sha != head
        else:
            assert files == [".gitattributes"] and b.model_info("alice/crash").sha == head
            assert [c.title for c in b.list_repo_commits("alice/crash")] == ["initial commit"]
        b.upload_file(path_or_fileobj=b"now", path_in_repo="y.txt", repo_id="alice/crash")
        assert "y.txt" in b.list_repo_files("alice/crash")


def test_gc_removes_unreferenced_blobs(hub):
    a = api(hub)
    a.create_repo("alice/g")
    a.upload_file(path_or_fileobj=b"keep me", path_in_repo="k.txt", repo_id="alice/g")
    orphan, _ = hub.storage.put_blob([b"orphan"])
    assert hub.storage.gc() == 1
    assert not hub.storage.has_blob(orphan)
    assert Path(__import__("huggingface_hub").hf_hub_download("alice/g", "k.txt", endpoint=hub.url)).read_bytes() \
        == b"keep me"


def test_chunked_lfs_upload_and_bad_ticket(hub):
    api(hub).create_repo("alice/c")
    data = os.urandom(300_000)
    oid = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, _, body = raw(hub, "POST", "/alice/c.git/info/lfs/objects/batch", json.dumps(
        {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}],
         "hash_algo": "sha256"}).encode(), auth)
    assert status == 200
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    path = href[len(hub.url):]
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    conn.request("PUT", path, body=iter([data[:100_000], data[100_000:]]), encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    assert hub.storage.has_blob(oid, len(data))
    status, _, _ = raw(hub, "PUT", path, data)  # a ticket is good for one upload
    assert status == 403
    status, _, body = raw(hub, "POST", "/api/models/alice/c/commit/main", _commit_body(
        {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": oid, "size": len(data)}}),
        {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    from huggingface_hub import hf_hub_download

    assert Path(hf_hub_download("alice/c", "w.safetensors", endpoint=hub.url)).read_bytes() == data
