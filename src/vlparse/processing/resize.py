"""Variable image sizes for box tasks: shorter side resized with a cap on the longer side, boxes
rescaled with the image, and batches padded to a multiple of the backbone's total stride.

FIBER's fine-grained stage trains with the shorter side drawn from 480-800 and the longer side at
most 1,333 pixels, and tests at 800 / 1,333. Padding goes right and bottom, so box coordinates
stay valid in the padded image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

__all__ = ["pad_to_multiple", "resize_with_boxes", "resized_size"]


def resized_size(height: int, width: int, shorter: int = 800, max_size: int = 1333
                 ) -> tuple[int, int]:
    """``(H', W')``: the aspect ratio kept, the shorter side ``shorter`` unless that would make
    the longer side exceed ``max_size``, in which case the longer side is ``max_size``."""
    if min(height, width) <= 0 or shorter <= 0 or max_size <= 0:
        raise ValueError(f"sizes must be positive: image {height}x{width}, shorter={shorter}, "
                         f"max_size={max_size}")
    scale = min(shorter / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_with_boxes(image: Image.Image, boxes: Tensor, shorter: int = 800,
                      max_size: int = 1333) -> tuple[Image.Image, Tensor]:
    """Resize ``image`` (bicubic) to :func:`resized_size` and scale ``(N, 4)`` xyxy ``boxes``
    by the same per-axis factors."""
    width, height = image.size
    new_h, new_w = resized_size(height, width, shorter, max_size)
    scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height],
                         dtype=boxes.dtype if boxes.is_floating_point() else torch.float32)
    resized = image if (new_w, new_h) == (width, height) else image.resize(
        (new_w, new_h), Image.Resampling.BICUBIC)
    return resized, boxes.to(scale.dtype) * scale


def pad_to_multiple(images: Sequence[Tensor], multiple: int = 32) -> tuple[Tensor, Tensor]:
    """Stack ``(C, H_i, W_i)`` images into ``(B, C, H, W)``, zero-padded right and bottom to the
    largest size rounded up to ``multiple``; also return the ``(B, H, W)`` bool mask of real
    pixels."""
    if not images:
        raise ValueError("pad_to_multiple: no images")
    height = -(-max(x.shape[1] for x in images) // multiple) * multiple
    width = -(-max(x.shape[2] for x in images) // multiple) * multiple
    batch = images[0].new_zeros(len(images), images[0].shape[0], height, width)
    mask = torch.zeros(len(images), height, width, dtype=torch.bool)
    for i, x in enumerate(images):
        batch[i, :, : x.shape[1], : x.shape[2]] = x
        mask[i, : x.shape[1], : x.shape[2]] = True
    return batch, mask
