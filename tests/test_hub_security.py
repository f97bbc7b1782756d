"""Security probes of the self-hosted hub: one or more bounded raw-socket / HTTP probes per finding of issue 14.

The server runs in its own process (tests/hub_probe_server.py), so the probes can abuse it, measure its memory and
look at its files. Every probe is bounded (socket timeouts, capped reads), and each finding's probe fails on the
first server (``http.server``, commit d436447). To see it:

    mkdir -p /tmp/old-hub && git archive d436447 adapterhub | tar -x -C /tmp/old-hub
    ADAPTERHUB_PROBE_TREE=/tmp/old-hub python -m pytest tests/test_hub_security.py

Expected there: 20 failed, 3 passed. The 3 are not findings but checks that nothing regressed, which the first
server passed too: the two header-limit cases (``http.server`` answers 431 itself) and the final "still serving".
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hub_probe_server import ALICE, BOB, HEAD_TIMEOUT, MAX_CONNECTIONS, READER

ROOT = Path(__file__).resolve().parents[1]
TREE = Path(os.environ.get("ADAPTERHUB_PROBE_TREE") or ROOT)
LAUNCHER = Path(__file__).with_name("hub_probe_server.py")
MiB = 1 << 20


# ----------------------------------------------------------------------------------------------------------- server
class Target:
    def __init__(self, root: Path, *extra: str):
        self.root = root
        self.proc = subprocess.Popen([sys.executable, str(LAUNCHER), str(root), *extra],
                                     env=dict(os.environ, PYTHONPATH=str(TREE)), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError(f"server did not start: {self.error}")
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        _, self.error = self.proc.communicate(timeout=10)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = Target(tmp_path_factory.mktemp("probe") / "root")
    yield t
    t.stop()


def api(target, token=ALICE):
    from huggingface_hub import HfApi

    return HfApi(endpoint=target.url, token=token)


def request(target, method, path, body=b"", headers=None, limit=MiB, timeout=10.0):
    """(status, headers, body capped at ``limit`` bytes, total length announced)."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read(limit)
        return r.status, r.headers, data, int(r.headers.get("Content-Length") or len(data))
    finally:
        conn.close()


def exchange(target, raw: bytes, timeout: float = 3.0) -> tuple[int | None, bool]:
    """Send raw bytes; (status of the answer or None if none came in ``timeout``, whether the server then closed)."""
    s = socket.create_connection(("127.0.0.1", target.port), timeout=timeout)
    try:
        try:
            s.sendall(raw)
        except OSError:
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        except (socket.timeout, OSError):
            return None, False
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None
        try:
            s.settimeout(1.0)
            while s.recv(65536):
                pass
            closed = True
        except (socket.timeout, OSError):
            closed = isinstance(sys.exc_info()[1], ConnectionResetError)
        return status, closed
    finally:
        s.close()


def auth(token=ALICE, **extra) -> dict:
    return {"Authorization": f"Bearer {token}", **extra}


# ------------------------------------------------------------------------------------------------ 1. YAML aliases
BOMB = "---\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg")) + "---\n# bomb\n"


def test_yaml_alias_bomb_in_a_readme_stays_small_and_fast(target, hf_env):
    assert len(BOMB) < 500
    api(target).create_repo("alice/bomb", exist_ok=True)
    # huggingface_hub validates a README before committing it (this hub refuses the aliases there too): post the
    # commit as a hostile client would
    status, _, body, _ = request(target, "POST", "/api/models/alice/bomb/commit/main", _commit_body(
        {"key": "file", "value": {"path": "README.md", "content": base64.b64encode(BOMB.encode()).decode(),
                                  "encoding": "base64"}}), auth())
    assert status == 200, body
    t0 = time.monotonic()
    status, _, body, length = request(target, "GET", "/api/models/alice/bomb")
    assert status == 200 and length < 64 * 1024, length  # the first server: ~24 MB
    assert time.monotonic() - t0 < 2.0
    assert "cardData" not in json.loads(body)
    status, _, body, _ = request(target, "POST", "/api/validate-yaml", json.dumps({"content": BOMB}).encode(),
                                 {"Content-Type": "application/json"})
    assert status == 400 and b"aliases" in body


# ------------------------------------------------------------------------- 2. anonymous bodies, connections, backlog
def test_anonymous_oversized_bodies_are_refused_before_they_are_read(target):
    head = (b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (60 * MiB))
    assert exchange(target, head + b"{" * 65536) == (413, True)  # answered at once, not after 60 MiB
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b"x" * 256 * 1024)
    chunked = (b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    assert exchange(target, chunked + chunk * 8) == (413, True)  # 2 MiB sent, no end: refused past 1 MiB


def test_memory_stays_flat_under_big_anonymous_bodies(target):
    """4 concurrent anonymous 60 MiB bodies: the first server grew by ~360 MiB."""
    idle, peak, stop = target.rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], target.rss())
            time.sleep(0.01)

    def send():
        try:
            s = socket.create_connection(("127.0.0.1", target.port), timeout=10)
            s.sendall(b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % (60 * MiB))
            piece = b'{"content": "' + b"a" * (MiB - 13)
            for _ in range(60):
                s.sendall(piece)
            s.recv(100)
            s.close()
        except OSError:
            pass

    watcher = threading.Thread(target=sample)
    watcher.start()
    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(60)
    time.sleep(0.2)
    stop.set()
    watcher.join()
    assert peak[0] - idle < 100 * MiB, (idle, peak[0])


def test_listen_backlog_is_not_tiny(target):
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    out = subprocess.run(["ss", "-Hltn", f"sport = :{target.port}"], capture_output=True, text=True).stdout.split()
    assert int(out[2]) >= 1024, out  # Send-Q of a listening socket: its backlog (the first server: 5)


def test_idle_and_trickling_connections_are_closed(target):
    idle = socket.create_connection(("127.0.0.1", target.port), timeout=HEAD_TIMEOUT + 2)
    trickle = socket.create_connection(("127.0.0.1", target.port), timeout=HEAD_TIMEOUT + 2)
    try:
        trickle.sendall(b"GET / HTTP/1.1\r\n")
        t0 = time.monotonic()
        for s in (idle, trickle):
            try:
                data = s.recv(4096)
                if data:
                    assert data.startswith(b"HTTP/1.1 408")
            except socket.timeout:
                pytest.fail("the server kept a connection with no complete request open")
        assert time.monotonic() - t0 < HEAD_TIMEOUT + 2
    finally:
        idle.close()
        trickle.close()


def test_connections_are_capped(target):
    held = []
    try:
        for _ in range(MAX_CONNECTIONS + 4):
            s = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            held.append(s)
        status, _ = exchange(target, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert exchange(target, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


# --------------------------------------------------------------------------------------------- 3. malformed requests
MALFORMED = {
    "over-long request line": (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414,)),
    "huge header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", (431,)),
    "too many headers": (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(300))
                         + b"\r\n", (431,)),
    "bad HTTP version": (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", (400, 505)),
    "garbage": (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", (400,)),
    "two Content-Length": (b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                           b"Content-Length: 30\r\n\r\n{}GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "Content-Length and chunked": (b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", (400,)),
    "gzip, chunked": (b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                      b"2\r\n{}\r\n0\r\n\r\n", (400, 501)),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_get_an_answer_and_a_closed_connection(target, name):
    raw, expected = MALFORMED[name]
    status, closed = exchange(target, raw)
    assert status in expected and closed, (status, closed)


# ------------------------------------------------------------------------------------------ 4. type-confused JSON
def _commit_body(*items, header=None) -> bytes:
    lines = [{"key": "header", "value": header if header is not None else {"summary": "s"}}, *items]
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def _bad_bodies() -> list[tuple[str, str, bytes]]:
    c, pre = "/api/models/alice/types/commit/main", "/api/models/alice/types/preupload/main"
    lfs = "/alice/types.git/info/lfs/objects/"
    return [
        ("POST", c, _commit_body(header=["not", "a", "dict"])),
        ("POST", c, _commit_body(header={"summary": 5, "parentCommit": 7})),
        ("POST", c, _commit_body({"key": "file", "value": []})),
        ("POST", c, _commit_body({"key": "file", "value": {"path": 3, "content": "eA=="}})),
        ("POST", c, _commit_body({"key": "file", "value": {"path": "a", "content": 5}})),
        ("POST", c, _commit_body({"key": "lfsFile", "value": {"path": "w.bin", "oid": 5, "size": "big"}})),
        ("POST", c, _commit_body({"key": 5, "value": {}})),
        ("POST", c, b"[1, 2]\n"),
        ("POST", c, b'"just a string"\n'),
        ("POST", pre, b'{"files": "nope"}'),
        ("POST", pre, b'{"files": [1, 2]}'),
        ("POST", pre, b'{"files": [{"path": ["x"], "size": 1}]}'),
        ("POST", pre, b'{"files": [{"path": "x", "size": "1"}]}'),
        ("POST", pre, b'[]'),
        ("POST", lfs + "batch", b'{"operation": "upload", "objects": "nope"}'),
        ("POST", lfs + "batch", b'{"operation": "upload", "objects": [1, "x", null]}'),
        ("POST", lfs + "batch", b'[1]'),
        ("POST", lfs + "verify", b'{"oid": 5, "size": "x"}'),
        ("POST", lfs + "verify", b'["x"]'),
        ("POST", "/api/repos/create", b'{"name": 5}'),
        ("POST", "/api/repos/create", b'["x"]'),
        ("PUT", "/api/models/alice/types/settings", b'{"private": "yes please"}'),
        ("PUT", "/api/models/alice/types/settings", b'[true]'),
        ("POST", "/api/models/alice/types/branch/dev", b'{"startingPoint": 5}'),
        ("POST", "/api/models/alice/types/tag/main", b'{"tag": ["v1"]}'),
        ("POST", "/api/models/alice/types/paths-info/main", b'{"paths": {"a": 1}}'),
        ("POST", "/api/validate-yaml", b'{"content": ["---"]}'),
        ("POST", "/api/validate-yaml", b'[' * 100000 + b']' * 100000),
    ]


def test_type_confused_json_bodies_get_400_never_500(target, hf_env):
    api(target).create_repo("alice/types", exist_ok=True)
    answers = {}
    for method, path, body in _bad_bodies():
        status, _, text, _ = request(target, method, path, body, auth(**{"Content-Type": "application/json"}))
        answers[(method, path, body[:60])] = (status, text[:120])
    # a 4xx, or (LFS batch) a 200 whose objects each carry their error
    bad = {k: v for k, v in answers.items() if not (400 <= v[0] < 500 or (v[0] == 200 and b'"error"' in v[1]))}
    assert not bad, bad
    assert api(target).list_repo_files("alice/types") == [".gitattributes"]


# -------------------------------------------------------------------------------- 5. private repos, ids, namespaces
def test_private_repos_look_exactly_like_missing_ones(target, hf_env):
    api(target).create_repo("alice/hidden", private=True, exist_ok=True)
    for token in (None, BOB):
        headers = auth(token) if token else {}
        for suffix in ("", "/tree/main", "/refs", "/commits/main", "/revision/main"):
            hidden = request(target, "GET", f"/api/models/alice/hidden{suffix}", headers=headers)
            missing = request(target, "GET", f"/api/models/alice/nothere{suffix}", headers=headers)
            assert hidden[0] == missing[0] == 404, (token, suffix, hidden[0], missing[0])
            assert hidden[1]["X-Error-Code"] == missing[1]["X-Error-Code"] == "RepoNotFound"
            assert hidden[2].replace(b"hidden", b"nothere") == missing[2]
        for path in ("/alice/hidden/resolve/main/.gitattributes", "/alice/nothere/resolve/main/.gitattributes"):
            assert request(target, "GET", path, headers=headers)[0] == 404
    assert request(target, "GET", "/api/models/alice/hidden", headers=auth())[0] == 200


def test_repo_ids_are_case_insensitive(target, hf_env):
    from huggingface_hub.errors import HfHubHTTPError

    a = api(target)
    a.create_repo("alice/Sec", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as e:
        a.create_repo("alice/sec")
    assert e.value.response.status_code == 409
    assert a.model_info("alice/SEC").id == "alice/Sec"
    assert [m.id for m in a.list_models(author="alice") if m.id.lower() == "alice/sec"] == ["alice/Sec"]


def test_tokens_write_only_their_own_namespace(target, hf_env):
    from huggingface_hub.errors import HfHubHTTPError

    api(target).create_repo("alice/owned", exist_ok=True)
    attempts = {
        "bob creates in alice/": lambda: api(target, BOB).create_repo("alice/bobs"),
        "bob commits to alice/": lambda: api(target, BOB).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt",
                                                                      repo_id="alice/owned"),
        "bob deletes alice/": lambda: api(target, BOB).delete_repo("alice/owned"),
        "bob branches alice/": lambda: api(target, BOB).create_branch("alice/owned", branch="b"),
        "a read token creates": lambda: api(target, READER).create_repo("alice/readers"),
        "a read token commits": lambda: api(target, READER).upload_file(path_or_fileobj=b"x", path_in_repo="y.txt",
                                                                        repo_id="alice/owned"),
    }
    statuses = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            statuses[what] = 200
        except HfHubHTTPError as e:
            statuses[what] = e.response.status_code
    assert statuses == {what: 403 for what in attempts}
    assert api(target).list_repo_files("alice/owned") == [".gitattributes"]


# ------------------------------------------------------------------------------------ 6. files on disk, credentials
def test_private_blobs_and_directories_are_owner_only(target, hf_env):
    a = api(target)
    a.create_repo("alice/disk", private=True, exist_ok=True)
    a.upload_file(path_or_fileobj=os.urandom(5000), path_in_repo="w.safetensors", repo_id="alice/disk")
    a.upload_file(path_or_fileobj=b"secret text", path_in_repo="notes.txt", repo_id="alice/disk")
    loose = [f"{p.relative_to(target.root)} {stat.S_IMODE(p.stat().st_mode):o}"
             for p in [target.root, *(target.root / "blobs").rglob("*")]
             if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not loose, loose


def test_a_credentials_file_others_may_read_is_refused(tmp_path):
    root = tmp_path / "root"
    Target(root, "--no-tokens").stop()  # creates the root and its credentials file
    creds = next(p for p in (root / "hub.db", root / "tokens") if p.exists())
    os.chmod(creds, 0o644)
    try:
        t = Target(root, "--no-tokens")
    except RuntimeError as e:
        assert "chmod 600" in str(e)
        return
    t.stop()
    pytest.fail(f"the server started with {creds.name} readable by others")


# --------------------------------------------------------------------------------------------------- 7. quotas
def test_quotas_refuse_huge_announcements_and_inline_lines(target, hf_env):
    api(target).create_repo("alice/quota", exist_ok=True)
    status, _, body, _ = request(target, "POST", "/alice/quota.git/info/lfs/objects/batch", json.dumps(
        {"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
         "objects": [{"oid": "ab" * 32, "size": 10 << 40}]}).encode(), auth(**{"Content-Type": "application/json"}))
    obj = json.loads(body)["objects"][0]
    assert status == 200 and "actions" not in obj and obj["error"]["code"] == 413, obj  # 10 TiB: no upload URL
    content = base64.b64encode(os.urandom(10 * MiB + 1000)).decode()  # over the 10 MiB inline limit
    status, _, body, _ = request(target, "POST", "/api/models/alice/quota/commit/main", _commit_body(
        {"key": "file", "value": {"path": "big.txt", "content": content, "encoding": "base64"}}), auth())
    assert status == 413, body
    assert api(target).list_repo_files("alice/quota") == [".gitattributes"]


# -------------------------------------------------------------------------------------------- 8. no test hooks
def test_no_test_hooks_in_the_server_code():
    server = TREE / "adapterhub" / "hub" / "server"
    sources = sorted(server.rglob("*.py")) if server.is_dir() else [server.with_suffix(".py")]
    hits = [f"{p.name}: {word}" for p in sources for word in ("os._exit", "CRASH", "hooks", "hook(")
            if word in p.read_text()]
    assert not hits, hits


def test_the_server_survived_the_probes(target):
    assert request(target, "GET", "/")[0] == 200
    assert target.proc.poll() is None
