"""The house rules that keep the architecture: import contracts (import-linter), method plug-ins that nothing
outside ``adapterhub/methods/`` names, and small modules."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "adapterhub"


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else shutil.which("lint-imports") or ""


def test_import_contracts_hold():
    exe = _lint_imports()
    if not exe:
        pytest.skip("import-linter is not installed (pip install 'adapterhub[dev]')")
    res = subprocess.run([exe], cwd=PKG.parent, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and res.stdout.count("KEPT") >= 3


def _string_constants(tree: ast.AST):
    """String literals that are not docstrings, with their line numbers."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_outside_methods_names_a_method():
    from adapterhub.methods import methods

    names = {m.name for m in methods().values()} | {m.peft_type for m in methods().values()}
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "methods":
            continue
        for line, value in _string_constants(ast.parse(path.read_text())):
            if value in names or value.lower() in names:
                hits.append(f"adapterhub/{rel}:{line}: {value!r}")
    assert not hits, "method names outside adapterhub/methods/ (look them up in the registry):\n" + "\n".join(hits)
