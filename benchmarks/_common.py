"""Shared helpers of the benchmark scripts: environment record, interleaved timing, medians, JSON output.

Timing rule (the machines these run on are shared and noisy): every variant of one comparison is timed in the
same process, *interleaved* (one call of each variant per round, the order rotated every round), and we report
medians over rounds plus ratios of medians. Never compare figures taken in different runs.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def env_info(device: str = "cpu") -> dict:
    import peft
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    gpu_sms=p.multi_processor_count, cuda=torch.version.cuda)
    return info


def command_line() -> str:
    return " ".join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else "python",
                     os.path.relpath(sys.argv[0], ROOT) if os.path.isabs(sys.argv[0]) else sys.argv[0], *sys.argv[1:]])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2, inner: int = 1,
                device: str = "cpu", after: Callable[[str], None] | None = None,
                max_seconds: float = 0.0, min_rounds: int = 3) -> dict[str, dict[str, list[float]]]:
    """Time each callable ``rounds`` times, one call of each per round, rotating the order every round.

    ``inner`` calls are timed together (per-call time = total / inner), for sub-millisecond GPU steps.
    ``after(name)`` runs after each call, untimed (e.g. cropping a KV cache back).
    Returns ``{"wall": {name: [s per call]}, "cpu": {name: [s per call]}}``: wall-clock and this process's
    CPU time (``time.process_time``, all threads). On a shared, oversubscribed CPU the CPU time is the
    steadier figure (time spent descheduled is not counted); on a GPU only the wall time means anything.
    ``max_seconds`` (> 0): stop after the round that passes this much time (at least ``min_rounds`` rounds).
    """
    start = time.perf_counter()
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            for _ in range(inner):
                fns[n]()
                if after:
                    after(n)
    sync(device)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        if max_seconds and r >= min_rounds and time.perf_counter() - start > max_seconds:
            print(f"  (time budget {max_seconds:.0f} s reached after {r} rounds)", flush=True)
            break
        k = r % len(names)
        order = names[k:] + names[:k]
        if r % 2:
            order = order[::-1]
        for n in order:
            fn = fns[n]
            tw = tc = 0.0
            for _ in range(inner):
                sync(device)
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                sync(device)
                tw += time.perf_counter() - t0
                tc += time.process_time() - c0
                if after is not None:
                    after(n)
            wall[n].append(tw / inner)
            cpu[n].append(tc / inner)
    return {"wall": wall, "cpu": cpu}


def median(xs) -> float:
    return float(statistics.median(xs))


def summarize(times: dict[str, list[float]]) -> dict[str, dict]:
    out = {}
    for n, xs in times.items():
        s = sorted(xs)
        out[n] = {"median_ms": median(xs) * 1e3, "p10_ms": s[len(s) // 10] * 1e3, "p90_ms": s[(len(s) * 9) // 10] * 1e3,
                  "n": len(xs)}
    return out


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) if j else c.ljust(w) for c, w in zip(r, widths)) + " |")
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.3f}" if abs(c) < 100 else f"{c:.1f}"
    return str(c)


def write_result(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    d = Path(out_dir) if out_dir else RESULTS
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    payload = {"benchmark": name, "command": command_line(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path}")
    return path
