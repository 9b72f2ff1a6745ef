"""The processor of the Visual Parsing model: its image transform and its tokenizer in one object.

The model's sequence is ``[CLS] v_1 .. v_m [SEP] W``: the model adds ``[CLS]``, the visual
tokens and the middle ``[SEP]``; the text part ``W`` is the word pieces, their own ``[SEP]`` and
padding, with no ``[CLS]``. :class:`VisualParsingProcessor` makes exactly that part, so nobody has
to remember the convention::

    processor = VisualParsingProcessor.from_pretrained("exported/model")
    batch = processor(images=["a.jpg", pil_image], text=["a red circle", "two squares"])
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor

from vlparse.config import ModelConfig
from vlparse.processing.images import load_image, to_rgb
from vlparse.processing.tokenization import build_tokenizer, encode_texts, special_ids
from vlparse.processing.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform

__all__ = ["PROCESSOR_NAME", "ImageLike", "VisualParsingProcessor"]

PROCESSOR_NAME = "processor_config.json"

ImageLike = Image.Image | str | os.PathLike
"""An image: a PIL image (any mode; 16-bit ones are scaled) or the path of an image file."""


class VisualParsingProcessor:
    """Image transform (resize to ``S x S``, ImageNet normalisation) and tokenizer (the text part
    ``W`` of length ``L``).

    Args:
        tokenizer: a BERT-style Hugging Face tokenizer (``[SEP]``, ``[PAD]``, ``[MASK]``).
        image_size: ``S`` (``model.visual.image_size``).
        max_text_len: ``L`` (``model.text.max_text_len``).
    """

    def __init__(self, tokenizer: Any, image_size: int, max_text_len: int) -> None:
        if max_text_len < 2:
            raise ValueError(f"max_text_len must be >= 2 (a word and [SEP]), got {max_text_len}")
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.max_text_len = int(max_text_len)
        self.image_transform = ImageTransform(self.image_size)
        self.special_ids = special_ids(tokenizer)

    def __repr__(self) -> str:
        return (f"VisualParsingProcessor(image_size={self.image_size}, "
                f"max_text_len={self.max_text_len}, vocab_size={self.special_ids['vocab_size']})")

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> VisualParsingProcessor:
        """The processor of a model config (its ``text.tokenizer``, by name or path)."""
        return cls(build_tokenizer(cfg.text.tokenizer), cfg.visual.image_size,
                   cfg.text.max_text_len)

    # ------------------------------------------------------------------ inputs

    def image(self, image: ImageLike) -> Tensor:
        """One image -> ``(3, S, S)`` float."""
        if isinstance(image, Image.Image):
            return self.image_transform(to_rgb(image))
        if isinstance(image, (str, os.PathLike)):
            return self.image_transform(load_image(image))
        raise TypeError(
            f"images must be PIL images or paths of image files, got {type(image).__name__}"
        )

    def encode_text(
        self, texts: Sequence[str], padding: Literal["max_length", "longest"] = "max_length"
    ) -> tuple[Tensor, Tensor]:
        """``T`` texts -> ``input_ids``, ``attention_mask`` ``(T, L)`` long: word pieces, ``[SEP]``,
        padding (no ``[CLS]``); ``padding="longest"`` cuts ``L`` to the longest text."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        ids, mask = encode_texts(self.tokenizer, list(texts), self.max_text_len)
        if padding == "longest":
            cut = max(int(mask.sum(1).max()), 1) if len(texts) else 1
            ids, mask = ids[:, :cut], mask[:, :cut]
        elif padding != "max_length":
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        return ids, mask

    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike] | None = None,
        text: str | Sequence[str] | None = None,
        padding: Literal["max_length", "longest"] = "max_length",
    ) -> dict[str, Tensor]:
        """A batch: ``image (N, 3, S, S)`` from ``images`` and ``input_ids`` /
        ``attention_mask (T, L)`` from ``text`` (one image or one text may be given alone)."""
        if images is None and text is None:
            raise ValueError("VisualParsingProcessor: give images, text or both")
        out: dict[str, Tensor] = {}
        if images is not None:
            many = images if isinstance(images, (list, tuple)) else [images]
            out["image"] = torch.stack([self.image(im) for im in many])
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            out["input_ids"], out["attention_mask"] = self.encode_text(texts, padding)
        return out

    # ------------------------------------------------------------------ files

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the tokenizer's files and ``processor_config.json`` into ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        settings = {"image_size": self.image_size, "max_text_len": self.max_text_len,
                    "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
        (folder / PROCESSOR_NAME).write_text(json.dumps(settings, indent=2) + "\n",
                                             encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VisualParsingProcessor:
        """The processor saved in ``directory`` (by itself or with a model).

        Raises:
            FileNotFoundError: no ``processor_config.json`` there (a model saved without its
                processor).
        """
        folder = Path(directory)
        path = folder / PROCESSOR_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder}: no {PROCESSOR_NAME}; save the model with its processor "
                "(model.save_pretrained(dir, processor=processor))"
            )
        settings = json.loads(path.read_text(encoding="utf-8"))
        return cls(build_tokenizer(str(folder)), settings["image_size"], settings["max_text_len"])
