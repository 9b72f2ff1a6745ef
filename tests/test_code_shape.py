"""The shape of the code: the import-linter contracts of ``pyproject.toml`` hold (the layers run
one way), and no function in ``src/`` is longer than 80 lines. Each check is shown failing on a
planted breach first."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_FUNCTION_LINES = 80


def _lint_imports(*config: str) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed")
    return subprocess.run([exe, "--no-cache", *config], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=300)


def test_lint_imports_finds_a_planted_breach(tmp_path):
    # models does import objectives (its passes build their targets with them): a contract that
    # forbids it must break
    planted = tmp_path / "planted.toml"
    planted.write_text(
        '[tool.importlinter]\nroot_package = "vlparse"\n\n'
        '[[tool.importlinter.contracts]]\nname = "planted"\ntype = "forbidden"\n'
        'source_modules = ["vlparse.models"]\nforbidden_modules = ["vlparse.objectives"]\n'
    )
    done = _lint_imports(str(planted))
    assert done.returncode != 0 and "planted BROKEN" in done.stdout, done.stdout[-2000:]


def test_import_contracts_are_kept():
    done = _lint_imports()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function or method of ``source`` longer than ``limit`` lines
    (from its ``def`` to its last line)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append((node.name, lines))
    return found


def test_long_functions_are_found():
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    assert long_functions(f"def short():\n{body}") == []  # 80 lines
    lines = f"def long(self):\n{body}    y = 0".split("\n")
    method = "".join(f"    {line}\n" for line in lines)
    assert long_functions(f"class A:\n{method}") == [("long", 81)]


def test_no_function_in_src_is_longer_than_80_lines():
    found = [f"{path.relative_to(ROOT)}: {name} ({lines} lines)"
             for path in sorted((SRC / "vlparse").rglob("*.py"))
             for name, lines in long_functions(path.read_text())]
    assert not found, "split these by role:\n" + "\n".join(found)
