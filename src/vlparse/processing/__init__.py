"""Turning raw inputs into tensors: image loading, image transforms and tokenisation.

The lowest layer that touches inputs: :mod:`vlparse.models` (its processors) and
:mod:`vlparse.data` both build on it, and it imports neither.
"""

from vlparse.processing.images import load_image
from vlparse.processing.tokenization import build_tokenizer, encode_texts, special_ids
from vlparse.processing.transforms import denormalize, image_transform

__all__ = [
    "build_tokenizer",
    "denormalize",
    "encode_texts",
    "image_transform",
    "load_image",
    "special_ids",
]
