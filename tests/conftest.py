"""Shared fixtures: a small scene world drawn once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

# A model small enough for end-to-end loop tests on 2 CPU cores.
SMALL = [
    "model.visual.embed_dim=16",
    "model.visual.num_heads=[2]",
    "model.text.hidden_size=32",
    "model.text.num_layers=2",
    "model.text.num_heads=2",
    "model.text.intermediate_size=64",
    "model.text.max_text_len=20",
    "train.batch_size=4",
    "train.progress=false",
    "train.log_every=1",
    "train.eval_images=8",
    "data.num_workers=0",
    "objectives.ipot_iters=5",
]


@pytest.fixture(scope="session")
def small_overrides() -> list[str]:
    """Config overrides that shrink the ``tiny`` model further for loop tests."""
    return list(SMALL)


@pytest.fixture(scope="session")
def scene_world(tmp_path_factory) -> Path:
    """Manifest path of a 60-image scene world (64 px)."""
    from vlparse.data.synthetic import generate

    out = tmp_path_factory.mktemp("world")
    return Path(generate(out, 60, seed=3, image_size=64, workers=1, progress=False))
