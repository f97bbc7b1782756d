"""Run every benchmark with ``--quick`` (what ``make bench`` runs), one after another, each in its own process.

Each script prints its tables and writes ``benchmarks/results/<name>_quick.json``. Extra arguments are passed to
every script (e.g. ``--threads 2``). Full runs: call the scripts without ``--quick`` (see benchmarks/README.md).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["mixed_batch.py", "hotswap.py", "merged.py"]


def main(argv=None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    failed = []
    for script in SCRIPTS:
        cmd = [sys.executable, str(HERE / script), "--quick", *extra]
        print(f"\n### {' '.join([Path(sys.executable).name, script, '--quick', *extra])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"### {script}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(script)
    if failed:
        print(f"failed: {failed}")
        return 1
    print(f"\nall benchmarks done; results in {HERE / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
