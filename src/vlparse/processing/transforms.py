"""Image transforms: resize to ``S x S``, to tensor, ImageNet normalisation.

The pre-training transform is deterministic: a square resize to the input resolution (384 x 384 in
the paper, 224 x 224 in its ablation) and ImageNet normalisation, our reading of a paper that states
the resolution and neither augmentation nor an aspect-preserving resize; a deterministic transform
also keeps every item a pure function of ``(seed, epoch, index)``. :class:`ImageTransform` takes an
optional ``augment`` callable (PIL -> PIL) that runs before the resize when ``train=True``, for
experiments that want one (it should then draw its randomness from its own arguments, not global
state).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vlparse.processing.images import to_rgb

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageTransform", "denormalize", "image_transform",
           "normalized_tensor"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalized_tensor(img: Image.Image) -> Tensor:
    """An RGB PIL image ``(W, H)`` -> ``(3, H, W)`` float tensor in ``[0, 1]``, normalised by the
    ImageNet mean and standard deviation (every image the models see goes through here)."""
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    x = x.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class ImageTransform:
    """PIL image -> normalised ``(3, S, S)`` float tensor (a class, so it pickles for workers).

    Args:
        image_size: ``S``; the image is resized to ``S x S`` (bicubic, aspect ratio not kept).
        train: apply ``augment`` (if given) before resizing.
        augment: optional ``PIL.Image -> PIL.Image`` callable.
    """

    def __init__(
        self,
        image_size: int,
        train: bool = False,
        augment: Callable[[Image.Image], Image.Image] | None = None,
    ) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)
        self.train = train
        self.augment = augment

    def __call__(self, img: Image.Image) -> Tensor:
        if img.mode != "RGB":
            img = to_rgb(img)
        if self.train and self.augment is not None:
            img = self.augment(img)
        s = self.image_size
        if img.size != (s, s):
            img = img.resize((s, s), Image.Resampling.BICUBIC)
        return normalized_tensor(img)

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, train={self.train})"


def image_transform(
    image_size: int,
    train: bool = False,
    augment: Callable[[Image.Image], Image.Image] | None = None,
) -> ImageTransform:
    """The transform for images of side ``image_size``: PIL -> ``(3, S, S)`` float tensor."""
    return ImageTransform(image_size, train=train, augment=augment)


def denormalize(images: Tensor) -> Tensor:
    """Undo the ImageNet normalisation for display: ``(..., 3, H, W)`` -> values in ``[0, 1]``."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)
