"""Import weight: ``adapterhub --help`` (and the package itself) must not pull in torch & co; the lazy package
still hands out ``AdapterModel``, ``RoutedOutput`` and every method config."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import adapterhub

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "huggingface_hub", "accelerate", "safetensors", "starlette", "uvicorn",
         "prometheus_client")

# runs main(argv) and reports, on its last stdout line, the exit code and which heavy modules got imported
PROBE = """
import json, sys
from adapterhub.cli import main
rc = main(json.loads(sys.argv[1]))
print(json.dumps({"rc": rc, "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def probe(tmp_path: Path, argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADAPTERHUB_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["push", "--help"], ["pull", "--help"], ["train", "--help"],
                                  ["predict", "--help"], ["tune", "--help"], ["hub", "serve", "--help"],
                                  ["serve", "--help"], ["show", "--help"], ["compress", "--help"], ["--version"]])
def test_help_imports_no_heavy_module(tmp_path, argv):
    assert probe(tmp_path, argv) == {"rc": 0, "heavy": []}


def test_store_commands_import_no_heavy_module(tmp_path):
    assert probe(tmp_path, ["list"]) == {"rc": 0, "heavy": []}
    assert probe(tmp_path, ["show", "nope"]) == {"rc": 2, "heavy": []}


def test_import_adapterhub_is_light(tmp_path):
    code = ("import sys, adapterhub; adapterhub.AdapterHubError; adapterhub.__version__; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_lazy_names_and_all():
    from adapterhub import AdaLoRA, AdapterModel, Bottleneck, LoRA, RoutedOutput
    from adapterhub.methods import AdaLoRA as MAdaLoRA, Bottleneck as MBottleneck, LoRA as MLoRA
    from adapterhub.model import AdapterModel as MAdapterModel, RoutedOutput as MRoutedOutput

    assert (AdapterModel, RoutedOutput) == (MAdapterModel, MRoutedOutput)
    assert (LoRA, AdaLoRA, Bottleneck) == (MLoRA, MAdaLoRA, MBottleneck)
    expected = {"AdapterModel", "RoutedOutput", "LoRA", "AdaLoRA", "Bottleneck", "IA3", "PrefixTuning",
                "AdapterHubError", "AdapterNameError", "AdapterFileError", "BaseMismatchError", "BaseSourceError", "StoreError",
                "__version__"}
    assert set(adapterhub.__all__) == expected and expected <= set(dir(adapterhub))
    star: dict = {}
    exec("from adapterhub import *", star)
    assert expected <= set(star) and star["LoRA"] is LoRA
    with pytest.raises(AttributeError):
        adapterhub.NoSuchThing
    with pytest.raises(AttributeError):
        adapterhub.MethodConfig  # the base class is not a method
    from adapterhub import paths  # submodules still import as before
    assert paths.store_dir


def test_method_configs_come_from_the_methods_package(monkeypatch):
    """A method config the methods package exposes is exported without naming it in adapterhub/__init__."""
    import adapterhub.methods
    from adapterhub.methods.base import MethodConfig

    @dataclasses.dataclass
    class PluginConfig(MethodConfig):
        method = "plugin"

    monkeypatch.setattr(adapterhub.methods, "PluginConfig", PluginConfig, raising=False)
    try:
        assert "PluginConfig" in adapterhub.__all__
        from adapterhub import PluginConfig as exported
        assert exported is PluginConfig
    finally:
        vars(adapterhub).pop("PluginConfig", None)
