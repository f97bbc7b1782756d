"""The self-hosted hub server, old vs new, in one run:

1. ``hf_hub_download`` of a 1 MB file (HEAD + GET, ``force_download``, a cache of its own per call): p50 / p95 of
   40 concurrent calls, over ``--rounds`` rounds;
2. ``HfApi.model_info`` of a repo with a README (card metadata): the same;
   (with each server process's CPU time per call: utime + stime from /proc);
3. peak RSS of the server process while 8 anonymous clients each send a 60 MiB request body to
   ``POST /api/validate-yaml`` (once with ``Content-Length``, once chunked), minus its RSS before (target: flat,
   < 100 MiB).

"old" is the ``http.server`` hub of commit ``d436447`` (extracted with ``git archive``), "new" this checkout's
Starlette + uvicorn hub with its default limits. Both run as subprocesses (one process each) on loopback; rounds
alternate old/new (order reversed every other round) and the client side is the same huggingface_hub in this
process. Figures from different runs are never compared.

    .venv/bin/python benchmarks/hub_server.py                # 7 rounds, writes results/hub_server.json
    .venv/bin/python benchmarks/hub_server.py --rounds 3 --name hub_server_quick
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TOKEN = "ahub_bench_token_3b7f"
REPO = "alice/bench"
MiB = 1 << 20
README = ("---\nlicense: apache-2.0\nlibrary_name: peft\nbase_model: tiny-bert\ntags: [adapterhub, lora, "
          "text-classification]\nmodel-index:\n- name: bench\n  results: []\n---\n# bench\n\nA card.\n")
LAUNCH = """
import sys
from adapterhub.hub.server import HubServer
server = HubServer(sys.argv[1], tokens={sys.argv[2]: "alice"}, quiet=True)
print(server.url, flush=True)
server.serve_forever()
"""


class Server:
    def __init__(self, name: str, tree: Path, root: Path):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(root), TOKEN],
                                     env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree,  # cwd: `-c` imports from it
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"{name} server did not start: {self.proc.stderr.read()[-2000:]}")
        self.port = int(self.url.rsplit(":", 1)[1])

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads

    def stop(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)


def old_tree(commit: str, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(C.ROOT), "archive", commit, "adapterhub"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def setup(server: Server, payload: bytes) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=server.url, token=TOKEN)
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=README.encode(), path_in_repo="README.md", repo_id=REPO)
    api.upload_file(path_or_fileobj=payload, path_in_repo="w.bin", repo_id=REPO)


def burst(n: int, call) -> list[float]:
    """``n`` calls at once; each one's latency in seconds."""
    start = threading.Barrier(n)

    def timed(i: int) -> float:
        start.wait(60)
        t0 = time.perf_counter()
        call(i)
        return time.perf_counter() - t0

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(timed, range(n)))


def download_call(server: Server, cache: Path, sha: str):
    from huggingface_hub import hf_hub_download

    def call(i: int) -> None:
        path = hf_hub_download(REPO, "w.bin", endpoint=server.url, cache_dir=cache / f"{server.name}-{i}",
                               force_download=True)
        if i == 0 and hashlib.sha256(Path(path).read_bytes()).hexdigest() != sha:
            raise RuntimeError(f"{server.name}: downloaded bytes differ")

    return call


def info_call(server: Server):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=server.url)

    def call(i: int) -> None:
        info = api.model_info(REPO)
        if info.library_name != "peft" or len(info.siblings) != 3:
            raise RuntimeError(f"{server.name}: unexpected model info")

    return call


def send_body(port: int, size: int, chunked: bool) -> None:
    head = (b"POST /api/validate-yaml HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % size))
    piece = b'{"content": "' + b"a" * (MiB - 13)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(head)
            for _ in range(size // MiB):
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                s.sendall(b"0\r\n\r\n")
            s.recv(256)
    except OSError:
        pass  # refused early: the server may close while we still send


def peak_rss(server: Server, clients: int, size: int, chunked: bool) -> dict:
    idle, peak, done = server.status("VmRSS"), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.status("VmRSS"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.perf_counter()
    burst(clients, lambda i: send_body(server.port, size, chunked))
    elapsed = time.perf_counter() - t0
    time.sleep(0.3)
    done.set()
    watcher.join()
    return {"idle_mib": idle / MiB, "peak_mib": peak[0] / MiB, "delta_mib": (peak[0] - idle) / MiB,
            "seconds": elapsed}


def percentiles(xs: list[float]) -> dict:
    s = sorted(xs)
    return {"p50_ms": statistics.median(s) * 1e3, "p95_ms": s[min(len(s) - 1, int(len(s) * 0.95))] * 1e3,
            "n": len(s)}


def versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for pkg in ("huggingface_hub", "starlette", "uvicorn", "httptools"):
        out[pkg] = version(pkg)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=40)
    p.add_argument("--old", default="d436447", metavar="COMMIT", help="the old server's commit (d436447)")
    p.add_argument("--bodies", type=int, default=8)
    p.add_argument("--body-mib", type=int, default=60)
    p.add_argument("--name", default="hub_server")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    payload = os.urandom(MiB)
    sha = hashlib.sha256(payload).hexdigest()
    servers = {"old": Server("old", old_tree(args.old, work / "old-tree"), work / "old-root"),
               "new": Server("new", C.ROOT, work / "new-root")}
    try:
        for s in servers.values():
            setup(s, payload)
        calls = {"download_1mb": {n: download_call(s, work / "cache", sha) for n, s in servers.items()},
                 "model_info": {n: info_call(s) for n, s in servers.items()}}
        times = {op: {n: [] for n in servers} for op in calls}
        cpu = {op: {n: 0.0 for n in servers} for op in calls}
        for r in range(args.rounds + 1):  # round 0 warms up
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for op in calls:
                for n in order:
                    c0 = servers[n].cpu_seconds()
                    t = burst(args.concurrency, calls[op][n])
                    if r:
                        times[op][n] += t
                        cpu[op][n] += servers[n].cpu_seconds() - c0
        rss = {f"rss_{kind}": {n: peak_rss(s, args.bodies, args.body_mib * MiB, kind == "chunked")
                               for n, s in servers.items()} for kind in ("content_length", "chunked")}
    finally:
        for s in servers.values():
            s.stop()
    report(args, times, cpu, rss)


def report(args, times: dict, cpu: dict, rss: dict) -> None:
    result: dict = {"env": versions(), "settings": vars(args)}
    rows = []
    for op, by_server in times.items():
        stats = {n: {**percentiles(xs), "server_cpu_ms_per_call": cpu[op][n] * 1e3 / len(xs)}
                 for n, xs in by_server.items()}
        ratios = {f"new/old {q}": stats["new"][q] / stats["old"][q] for q in ("p50_ms", "p95_ms")}
        result[op] = {**stats, **ratios}
        rows.append([f"{op} x{args.concurrency}", stats["old"]["p50_ms"], stats["new"]["p50_ms"],
                     ratios["new/old p50_ms"], stats["old"]["p95_ms"], stats["new"]["p95_ms"],
                     ratios["new/old p95_ms"], stats["old"]["server_cpu_ms_per_call"],
                     stats["new"]["server_cpu_ms_per_call"]])
    print(C.table(rows, ["latency (ms)", "old p50", "new p50", "new/old", "old p95", "new p95", "new/old",
                         "old server CPU ms/call", "new server CPU ms/call"]))
    rows = []
    for kind, by_server in rss.items():
        result[kind] = by_server
        rows.append([f"{args.bodies} x {args.body_mib} MiB, {kind[4:].replace('_', '-')}",
                     by_server["old"]["delta_mib"], by_server["new"]["delta_mib"],
                     by_server["new"]["delta_mib"] < 100])
    print(C.table(rows, ["peak RSS above idle (MiB)", "old", "new", "new < 100 MiB"]))
    C.write_result(args.name, result)


if __name__ == "__main__":
    main()
