"""Fixtures of the task tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vlparse.cli import main

# two steps at the scene world's 64 px: enough to write a run and evaluate it
FAST = ["model.visual.image_size=64", "model.visual.window_size=4", "train.max_steps=2"]

FinetuneAndEvaluate = Callable[[str, str, str], tuple[Path, dict[str, Any], dict[str, Any]]]


@pytest.fixture
def finetune_and_evaluate(scene_world, small_overrides, tmp_path) -> FinetuneAndEvaluate:
    """``run(task, recipe, split)``: ``vlparse finetune`` (2 steps) on the scene world into
    ``tmp_path/ft``, then ``vlparse evaluate`` of that run on ``split``; both must exit 0.
    Returns ``(run folder, its summary.json, the evaluation's JSON)``."""

    def run(task: str, recipe: str, split: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        overrides = [o for o in small_overrides if not o.startswith("objectives.")] + FAST
        out = tmp_path / "ft"
        argv = ["finetune", task, "--data", str(scene_world), "--out", str(out),
                "--config", recipe, *overrides]
        assert main(argv) == 0
        summary = json.loads((out / "summary.json").read_text())
        path = tmp_path / f"{split}.json"
        argv = ["evaluate", task, "--checkpoint", str(out), "--data", str(scene_world),
                "--split", split, "--out", str(path), "--no-progress"]
        assert main(argv) == 0
        return out, summary, json.loads(path.read_text())

    return run
