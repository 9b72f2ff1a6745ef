"""The boxes-and-phrases figure: drawn, saved, one colour per phrase."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlparse.eval.draw import draw_grounding


def test_figure_saved_with_a_colour_per_phrase(tmp_path):
    image = Image.new("RGB", (120, 80), (200, 200, 200))
    boxes = torch.tensor([[5.0, 5, 40, 40], [50.0, 10, 100, 60], [60.0, 20, 70, 30]])
    fig = draw_grounding(image, boxes, ["red square", "blue circle", "red square"],
                         scores=[0.9, 0.5, 0.4], path=tmp_path / "out" / "boxes.png",
                         title="a red square and a blue circle")
    out = tmp_path / "out" / "boxes.png"
    assert out.is_file() and Image.open(out).size[0] > 100
    ax = fig.axes[0]
    edges = [tuple(p.get_edgecolor()) for p in ax.patches]
    assert len(edges) == 3 and edges[0] == edges[2] and edges[0] != edges[1]
    assert [t.get_text() for t in ax.texts] == ["red square 0.90", "blue circle 0.50",
                                                "red square 0.40"]


def test_tensor_image_and_mismatched_labels():
    fig = draw_grounding(torch.rand(3, 32, 48), np.array([[1, 1, 10, 10]]), ["a"])
    assert fig.axes[0].get_xlim() == (0.0, 48.0)
    with pytest.raises(ValueError, match="labels"):
        draw_grounding(torch.rand(3, 8, 8), [[0, 0, 1, 1]], [])
