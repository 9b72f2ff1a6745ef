"""Shorter-side resizing with a cap, box rescaling and padding to a multiple."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlparse.processing.resize import pad_to_multiple, resize_with_boxes, resized_size


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((480, 640), (800, 1067)),    # shorter side to 800, longer 1066.67 under the cap
        ((500, 1500), (444, 1333)),   # 800 would make the long side 2400: capped at 1333
        ((800, 800), (800, 800)),
        ((1000, 400), (1333, 533)),   # portrait, capped
    ],
)
def test_resized_size_by_hand(hw, expected):
    assert resized_size(*hw) == expected


def test_resized_size_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        resized_size(0, 10)


def test_boxes_follow_the_image():
    image = Image.new("RGB", (200, 100))  # W=200, H=100
    boxes = torch.tensor([[10.0, 20.0, 110.0, 70.0], [0.0, 0.0, 200.0, 100.0]])
    out, scaled = resize_with_boxes(image, boxes, shorter=50, max_size=1000)
    assert out.size == (100, 50)
    assert torch.allclose(scaled, torch.tensor([[5.0, 10.0, 55.0, 35.0], [0, 0, 100, 50]]))
    same, kept = resize_with_boxes(image, boxes, shorter=100, max_size=1000)
    assert same.size == (200, 100) and torch.equal(kept, boxes)


def test_pad_to_multiple():
    a, b = torch.ones(3, 30, 50), 2 * torch.ones(3, 64, 20)
    batch, mask = pad_to_multiple([a, b], multiple=32)
    assert batch.shape == (2, 3, 64, 64) and mask.shape == (2, 64, 64)
    assert batch[0, :, :30, :50].eq(1).all() and batch[0, :, 30:].eq(0).all()
    assert batch[0, :, :, 50:].eq(0).all()
    assert mask[0].sum() == 30 * 50 and mask[1].sum() == 64 * 20
    assert mask[1, :, :20].all() and not mask[1, :, 20:].any()
    with pytest.raises(ValueError):
        pad_to_multiple([])
