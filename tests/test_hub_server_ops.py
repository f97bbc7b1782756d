"""The self-hosted hub's operations: tokens (CLI, scopes, revocation), namespaces and the orgs file, quotas,
concurrent commits (one process and several uvicorn workers), the ``hf`` CLI, revisions with a slash, README
metadata, timeouts, roots written by the first server, and the light core install."""
from __future__ import annotations

import ast
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adapterhub.cli import main as cli
from adapterhub.errors import HubError
from adapterhub.hub.server import HubServer
from adapterhub.hub.server.limits import Limits
from adapterhub.hub.server.storage import HubStorage

ROOT = Path(__file__).resolve().parents[1]
ALICE, BOB = "ahub_ops_alice_1f3e", "ahub_ops_bob_8c2d"


@pytest.fixture
def hub(tmp_path, hf_env, monkeypatch):
    srv = HubServer(tmp_path / "hubroot", tokens={ALICE: "alice", BOB: "bob"}).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    yield srv
    srv.stop()


def api(srv, token=ALICE):
    from huggingface_hub import HfApi

    return HfApi(endpoint=srv.url, token=token)


def status_of(fn) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        fn()
    except HfHubHTTPError as e:
        return e.response.status_code
    return 200


def add_token(root: Path, user: str, scope: str, capsys) -> str:
    capsys.readouterr()
    assert cli(["hub", "token", "add", user, "--scope", scope, "--root", str(root)]) == 0
    return capsys.readouterr().out.strip()


# ------------------------------------------------------------------------------------------------------- tokens
def test_token_cli_scopes_and_revocation(tmp_path, hf_env, capsys):
    root = tmp_path / "root"
    write = add_token(root, "alice", "write", capsys)
    read = add_token(root, "alice", "read", capsys)
    assert cli(["hub", "token", "list", "--root", str(root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((t["user"], t["scope"]) for t in listed) == [("alice", "read"), ("alice", "write")]
    assert write not in json.dumps(listed) and read not in json.dumps(listed)
    with HubServer(root) as srv:
        api(srv, write).create_repo("alice/p", private=True)
        assert api(srv, read).list_repo_files("alice/p") == [".gitattributes"]  # read scope reads private repos
        assert api(srv, read).whoami()["auth"]["accessToken"]["role"] == "read"
        assert status_of(lambda: api(srv, read).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt",
                                                            repo_id="alice/p")) == 403
        read_id = next(t["id"] for t in listed if t["scope"] == "read")
        assert cli(["hub", "token", "revoke", read_id, "--root", str(root)]) == 0  # while the server runs
        assert status_of(lambda: api(srv, read).list_repo_files("alice/p")) == 401
    assert cli(["hub", "token", "revoke", "nope", "--root", str(root)]) == 2
    assert "no token with id 'nope'" in capsys.readouterr().err
    assert cli(["hub", "token", "add", "bad name", "--root", str(root)]) == 2
    assert "bad user name" in capsys.readouterr().err
    assert cli(["hub", "token", "list", "--root", str(tmp_path / "typo")]) == 2  # never creates a root by mistake
    assert not (tmp_path / "typo").exists()


def test_orgs_file_shares_namespaces(tmp_path, hf_env, capsys):
    root = tmp_path / "root"
    alice, bob = add_token(root, "alice", "write", capsys), add_token(root, "bob", "write", capsys)
    orgs = root / "orgs"
    orgs.write_text("# org members\nlab alice\n")
    os.chmod(orgs, 0o644)
    with HubServer(root) as srv:
        api(srv, alice).create_repo("lab/shared", private=True)
        assert status_of(lambda: api(srv, bob).list_repo_files("lab/shared")) == 404
        assert status_of(lambda: api(srv, bob).create_repo("lab/bobs")) == 403
        orgs.write_text("lab alice Bob\n")  # taken up while serving; names are case-insensitive
        assert api(srv, bob).list_repo_files("lab/shared") == [".gitattributes"]
        api(srv, bob).upload_file(path_or_fileobj=b"hi", path_in_repo="hi.txt", repo_id="lab/shared")
        assert [o["name"] for o in api(srv, bob).whoami()["orgs"]] == ["lab"]
    os.chmod(orgs, 0o666)
    with pytest.raises(HubError, match="may be written by group or others"):
        HubServer(root)


def test_case_insensitive_ids_write_to_the_repo_as_created(hub):
    a = api(hub)
    a.create_repo("alice/MixedCase")
    a.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="ALICE/mixedcase")
    assert a.list_repo_files("alice/MixedCase") == [".gitattributes", "x.txt"]
    assert a.model_info("alice/mixedcase").id == "alice/MixedCase"


# ------------------------------------------------------------------------------------------------------- quotas
def test_quotas_per_repo_and_per_file(tmp_path, hf_env, capsys):
    root = tmp_path / "root"
    with HubServer(root, tokens={ALICE: "alice"}, limits=Limits(max_object_bytes=300_000)) as srv:
        a = api(srv)
        a.create_repo("alice/q")
        assert cli(["hub", "quota", "set", "alice/Q", "150K", "--root", str(root)]) == 0
        assert cli(["hub", "quota", "list", "--root", str(root)]) == 0
        assert "alice/q  150.0 KiB" in capsys.readouterr().out
        a.upload_file(path_or_fileobj=os.urandom(100_000), path_in_repo="a.safetensors", repo_id="alice/q")
        with pytest.raises(Exception, match="quota"):  # LFS: refused in the batch answer
            a.upload_file(path_or_fileobj=os.urandom(100_000), path_in_repo="b.safetensors", repo_id="alice/q")
        with pytest.raises(Exception, match="quota") as e:  # inline (.txt): refused as the commit arrives
            a.upload_file(path_or_fileobj=b"t" * 100_000, path_in_repo="c.txt", repo_id="alice/q")
        assert e.value.response.status_code == 413
        assert cli(["hub", "quota", "set", "alice/q", "default", "--root", str(root)]) == 0
        a.upload_file(path_or_fileobj=os.urandom(100_000), path_in_repo="b.safetensors", repo_id="alice/q")
        with pytest.raises(Exception, match="per-file limit"):
            a.upload_file(path_or_fileobj=os.urandom(400_000), path_in_repo="big.safetensors", repo_id="alice/q")
        assert a.list_repo_files("alice/q") == [".gitattributes", "a.safetensors", "b.safetensors"]


# --------------------------------------------------------------------------------------------------- concurrency
def _commit_concurrently(url: str, token: str, n: int, prefix: str, parent: str | None = None) -> list[int]:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    results: list[int] = []
    start = threading.Barrier(n)

    def one(i: int) -> None:
        a = HfApi(endpoint=url, token=token)
        start.wait(30)
        try:
            a.create_commit("alice/race", [CommitOperationAdd(f"{prefix}{i:02d}.txt", f"file {i}".encode())],
                            commit_message=f"commit {i}", parent_commit=parent)
            results.append(200)
        except HfHubHTTPError as e:
            results.append(e.response.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def _check_race(url: str, token: str = ALICE) -> None:
    from huggingface_hub import HfApi

    a = HfApi(endpoint=url, token=token)
    a.create_repo("alice/race")
    assert _commit_concurrently(url, token, 20, "f") == [200] * 20
    assert a.list_repo_files("alice/race") == [".gitattributes"] + [f"f{i:02d}.txt" for i in range(20)]
    assert len(a.list_repo_commits("alice/race")) == 21
    head = a.model_info("alice/race").sha
    assert sorted(_commit_concurrently(url, token, 6, "p", parent=head)) == [200] + [412] * 5  # one wins


def test_twenty_concurrent_commits_lose_nothing(hub):
    _check_race(hub.url)


def _ppid(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_several_workers_share_one_root(tmp_path, hf_env):
    root = tmp_path / "root"
    storage = HubStorage(root)
    _, token = storage.tokens.add("alice", "write")
    storage.close()
    proc = subprocess.Popen([sys.executable, "-m", "adapterhub", "hub", "serve", "--root", str(root), "--port", "0",
                             "--workers", "2", "--quiet"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split(" at ")[-1].strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        from huggingface_hub import HfApi

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                HfApi(endpoint=url, token=token).whoami()
                break
            except Exception:
                time.sleep(0.2)
        children = [p for p in Path("/proc").glob("[0-9]*") if _ppid(p) == proc.pid]
        assert len(children) >= 2, children  # the workers
        _check_race(url, token)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out, err[-2000:]


# ---------------------------------------------------------------------------------------- clients and revisions
def test_hf_cli_upload_and_download(hub, tmp_path):
    hf = Path(sys.executable).with_name("hf")
    if not hf.exists():
        pytest.skip("the hf CLI is not installed")
    api(hub).create_repo("alice/cli")
    f = tmp_path / "weights.safetensors"
    f.write_bytes(os.urandom(50_000))
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN=ALICE, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
               HF_HOME=str(tmp_path / "hf-cli"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    r = subprocess.run([str(hf), "upload", "alice/cli", str(f), "w.safetensors"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(hf), "download", "alice/cli", "w.safetensors", "--local-dir", str(tmp_path / "dl")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl" / "w.safetensors").read_bytes() == f.read_bytes()


def test_branch_names_with_a_slash(hub):
    from huggingface_hub import hf_hub_download

    a = api(hub)
    a.create_repo("alice/b")
    a.create_branch("alice/b", branch="feature/x")
    ci = a.upload_file(path_or_fileobj=b"on a branch", path_in_repo="sub dir/é.txt", repo_id="alice/b",
                       revision="feature/x")
    assert a.model_info("alice/b", revision="feature/x").sha == ci.oid
    assert a.list_repo_files("alice/b", revision="feature/x") == [".gitattributes", "sub dir/é.txt"]
    got = hf_hub_download("alice/b", "sub dir/é.txt", revision="feature/x", endpoint=hub.url)
    assert Path(got).read_bytes() == b"on a branch"
    assert [b.name for b in a.list_repo_refs("alice/b").branches] == ["feature/x", "main"]


def test_readme_metadata_is_json_ready_and_capped(hub):
    a = api(hub)
    a.create_repo("alice/card")
    readme = "---\nlicense: mit\ndate: 2024-01-02\ntags: [a, b]\nlibrary_name: peft\nblob: !!binary aGk=\n---\n# hi\n"
    a.upload_file(path_or_fileobj=readme.encode(), path_in_repo="README.md", repo_id="alice/card")
    info = a.model_info("alice/card")
    assert info.card_data["date"] == "2024-01-02" and info.tags == ["a", "b"] and info.library_name == "peft"
    big = "---\n" + "".join(f"k{i}: {'v' * 100}\n" for i in range(1000)) + "---\n"  # ~100 KiB of metadata
    with pytest.raises(ValueError, match="larger than 65536 bytes"):  # the client asks validate-yaml first
        a.upload_file(path_or_fileobj=big.encode(), path_in_repo="README.md", repo_id="alice/card")
    body = b"".join(json.dumps(x).encode() + b"\n" for x in [  # a client that does not ask
        {"key": "header", "value": {"summary": "big card"}},
        {"key": "file", "value": {"path": "README.md", "content": base64.b64encode(big.encode()).decode()}}])
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    conn.request("POST", "/api/models/alice/card/commit/main", body=body, headers={"Authorization": f"Bearer {ALICE}"})
    assert conn.getresponse().status == 200
    conn.close()
    info = a.model_info("alice/card")
    assert info.card_data is None or not info.card_data.to_dict()  # no cardData: not a truncated one


# -------------------------------------------------------------------------------------------- timeouts, legacy
def test_a_stalled_request_body_times_out(tmp_path, hf_env):
    with HubServer(tmp_path / "root", tokens={ALICE: "alice"}, limits=Limits(body_timeout=0.5)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"content\"")
        t0 = time.monotonic()
        answer = s.recv(4096)
        s.close()
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3


def test_a_root_of_the_first_server_is_imported(tmp_path, hf_env):
    """repos/*/{repo.json, refs.json, commits/*.json} and a plain-text tokens file, as the first server wrote."""
    root = tmp_path / "root"
    content = b"kept across the upgrade"
    blob = HubStorage(root).put_blob([content])[0]  # blobs keep their layout
    (root / "hub.db").unlink()
    repo = root / "repos" / "alice" / "old"
    (repo / "commits").mkdir(parents=True)
    cid = "c" * 40
    files = {"k.txt": {"sha256": blob, "size": len(content), "lfs": False, "oid": "0" * 40}}
    (repo / "repo.json").write_text(json.dumps({"id": "alice/old", "private": True,
                                              "created": "2024-01-01T00:00:00.000Z"}))
    (repo / "commits" / f"{cid}.json").write_text(json.dumps(
        {"id": cid, "parents": [], "title": "t", "message": "", "author": "alice", "date": "2024-01-01T00:00:00.000Z",
         "files": files}))
    (repo / "refs.json").write_text(json.dumps({"branches": {"main": cid}, "tags": {"v1": cid}}))
    tokens = root / "tokens"
    tokens.write_text("# comment\nalice ahub_old_plain_token\n")
    os.chmod(tokens, 0o644)
    with pytest.raises(HubError, match="chmod 600"):
        HubServer(root)
    os.chmod(tokens, 0o600)
    with HubServer(root) as srv:
        a = api(srv, "ahub_old_plain_token")
        assert a.model_info("alice/old").sha == cid and a.model_info("alice/old").private
        assert a.list_repo_files("alice/old", revision="v1") == ["k.txt"]
    assert not tokens.exists() and (root / "legacy-repos-imported").is_dir() and not (root / "repos").exists()


# ------------------------------------------------------------------------------------------------- light install
def test_only_the_server_package_imports_the_web_stack():
    """... and ``adapterhub/serving/`` (``adapterhub serve``), the other server."""
    web = {"starlette", "uvicorn", "httptools", "prometheus_client"}
    hits = []
    for path in sorted((ROOT / "adapterhub").rglob("*.py")):
        if "hub/server/" in path.as_posix() or "adapterhub/serving/" in path.as_posix():
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            hits += [f"{path.name}: {n}" for n in names if n.split(".")[0] in web]
    assert not hits, hits
    code = ("import sys; import adapterhub.hub.server as s; from adapterhub.hub.server import storage, tokens; "
            "s.HubStorage; print([m for m in ('starlette', 'uvicorn', 'httptools') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(
        os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_serve_without_the_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert cli(["hub", "serve", "--root", str(tmp_path / "r"), "--port", "0"]) == 2
    assert "pip install 'adapterhub[hub-server]'" in capsys.readouterr().err


def test_raw_commit_path_checks(hub):
    """paths-info, tree and commits answer with clean JSON for odd inputs (never a 500)."""
    api(hub).create_repo("alice/odd")
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    body = b"".join(json.dumps(x).encode() + b"\n" for x in [
        {"key": "header", "value": {"summary": "s"}},
        {"key": "file", "value": {"path": "a.txt", "content": base64.b64encode(b"a").decode()}},
        {"key": "file", "value": {"path": "a.txt/b", "content": ""}}])
    conn.request("POST", "/api/models/alice/odd/commit/main", body=body, headers={"Authorization": f"Bearer {ALICE}"})
    r = conn.getresponse()
    assert r.status == 400 and b"both a file and a folder" in r.read()
    conn.close()
