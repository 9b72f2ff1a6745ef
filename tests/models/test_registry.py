"""Models and recipes by name, and what importing vlparse costs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vlparse
from vlparse.config import FinetuneConfig, PretrainConfig
from vlparse.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_models_and_recipes_are_listed_apart():
    models, recipes = vlparse.list_models(), vlparse.list_recipes()
    assert {"tiny", "ablation", "paper", "ablation_r50", "ablation_r101", "ablation_patch",
            "fiber_tiny", "fiber_base"} <= set(models)
    assert "quickstart" in recipes and "quickstart" not in models
    assert {"finetune/vqa", "finetune/retrieval_world"} <= set(recipes)
    assert not set(models) & set(recipes)
    for name in recipes:  # every recipe loads as the config it is
        cls = FinetuneConfig if name.startswith("finetune/") else PretrainConfig
        assert isinstance(vlparse.load_config(name), cls), name


def test_create_model_overrides_sections():
    model = vlparse.create_model("tiny", vocab_size=300, text={"num_layers": 1})
    assert len(model.encoder.layers) == 1 and model.cfg.text.hidden_size == 128
    assert model.vocab_size == 300
    with pytest.raises(ConfigError, match=r"text\.layers: unknown key"):
        vlparse.create_model("tiny", vocab_size=300, text={"layers": 1})


def test_importing_vlparse_imports_neither_timm_nor_transformers():
    code = ("import sys, vlparse, vlparse.config, vlparse.errors\n"
            "heavy = [m for m in ('timm', 'transformers') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def _imports(package: str) -> dict[str, set[str]]:
    """``{file: modules it imports}`` over every file of a ``vlparse`` sub-package, imports
    inside functions included."""
    out = {}
    for path in (Path(SRC) / "vlparse" / package).rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        out[str(path.relative_to(SRC))] = found
    return out


@pytest.mark.parametrize("package, forbidden", [
    ("models", ("vlparse.train", "vlparse.data", "vlparse.tasks", "vlparse.probing")),
    ("objectives", ("vlparse.models", "vlparse.data", "vlparse.train", "vlparse.tasks")),
    ("processing", ("vlparse.models", "vlparse.objectives", "vlparse.data", "vlparse.eval")),
    ("data", ("vlparse.objectives", "vlparse.eval", "vlparse.train", "vlparse.tasks")),
    ("probing", ("vlparse.tasks", "vlparse.train")),
])
def test_layers_import_one_way(package, forbidden):
    """No file of a lower layer imports a module of a layer above it, not even inside a
    function (direct imports; the import-linter contracts of pyproject.toml also follow chains,
    tests/test_code_shape.py)."""
    bad = {f: sorted(m for m in mods if m.startswith(forbidden))
           for f, mods in _imports(package).items()}
    assert not {f: m for f, m in bad.items() if m}


def test_the_core_data_path_does_not_know_the_scene_world():
    for name, mods in _imports("data").items():
        if "synthetic" not in name:
            assert not any(m.startswith("vlparse.data.synthetic") for m in mods), name
