"""Image-text contrastive loss (ITC, as in FIBER's and ALBEF's coarse-grained pre-training).

Not one of the Visual Parsing paper's objectives: vlparse offers it as an option
(``objectives.lambda_itc``, default 0) because it gives a visual backbone trained from scratch a
direct signal (which of the batch's captions describe this image) that cannot be met by a
collapsed, image-independent output.

Shapes: ``B`` images, ``T`` texts, ``d`` embedding width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["itc_loss"]


def itc_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    temperature: float = 0.07,
) -> Tensor:
    """Symmetric InfoNCE between images and texts, with in-batch negatives.

    Text to image: cross-entropy of each text over the ``B`` images, its own image the target.
    Image to text: ``-log`` of the softmax mass on the image's own texts (an image may have
    several), over all ``T`` texts. The loss is the mean of the two directions. Images without a
    text are left out of the image-to-text term. Under DDP the negatives are those of the process
    (no gathering across processes).

    Args:
        image_emb: ``(B, d)``; text_emb: ``(T, d)`` (both normalised here).
        text_to_image: ``(T,)`` long, the index in ``0..B-1`` of each text's image.
        temperature: softmax temperature of the cosine similarities.

    Returns:
        scalar float32 loss.
    """
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"itc_loss: expected image_emb (B, d) and text_emb (T, d), got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if text_to_image.shape != (text_emb.shape[0],):
        raise ValueError(
            f"itc_loss: text_to_image must be (T,) = ({text_emb.shape[0]},), got "
            f"{tuple(text_to_image.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"itc_loss: temperature must be > 0, got {temperature}")
    img = F.normalize(image_emb.float(), dim=-1)
    txt = F.normalize(text_emb.float(), dim=-1)
    logits = txt @ img.t() / temperature  # (T, B)
    t2i = F.cross_entropy(logits, text_to_image)
    positive = text_to_image[None, :] == torch.arange(img.shape[0], device=img.device)[:, None]
    per_image = logits.t()  # (B, T)
    all_mass = torch.logsumexp(per_image, dim=1)
    pos_mass = torch.logsumexp(per_image.masked_fill(~positive, float("-inf")), dim=1)
    has_text = positive.any(1)
    i2t = (all_mass - pos_mass)[has_text].mean()
    return 0.5 * (t2i + i2t)
