"""Inference API: ``model = vlparse.load(path)``, then score, rank, answer, entail, reason.

``path`` is a run folder written by ``vlparse pretrain`` or ``vlparse finetune TASK`` (or one of
its ``checkpoints/step_*`` folders). What a loaded model can do depends on the run:

============================  =======================================================
method                        needs a run of
============================  =======================================================
``score``, ``rank``           ``pretrain`` (ITM head) or ``finetune retrieval``
``answer``                    ``finetune vqa``
``entail``                    ``finetune snli-ve``
``reason``                    ``finetune nlvr2``
============================  =======================================================

Images are PIL images or paths to image files; they go through the evaluation transform of the
run (resize to ``model.visual.image_size``, ImageNet normalisation). The model is in eval mode
and every call runs without gradients. Example::

    import vlparse
    vqa = vlparse.load("ft/vqa", device="cuda")
    vqa.answer("photo.jpg", "what color is the square?", topk=3)
    # [('red', 0.91), ('orange', 0.07), ('purple', 0.01)]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from vlparse.errors import WrongTaskError

__all__ = ["VLModel", "WrongTaskError", "load"]

ImageLike = Image.Image | str | os.PathLike
"""An image: a PIL image or the path of an image file."""

PRETRAIN = "pretrain"


class VLModel:
    """A loaded vlparse run for inference; build it with :func:`load`.

    Attributes:
        task: ``"pretrain"``, ``"retrieval"``, ``"vqa"``, ``"nlvr2"`` or ``"snli-ve"``.
        model: the :class:`~vlparse.models.single_stream.VisualParsingModel` (pre-training run)
            or :class:`~vlparse.tasks.finetune.FinetuneModel`.
        cfg: the run's config; ``state`` its task state (e.g. the VQA ``answers``).
        path: where it was loaded from.
        batch_size: pairs per forward pass in :meth:`score` and :meth:`rank`.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Any,
        tokenizer: Any,
        task: str,
        state: dict | None = None,
        path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        from vlparse.processing.transforms import image_transform

        self.model = model.eval()
        self.cfg, self.tokenizer, self.task = cfg, tokenizer, task
        self.state = dict(state or {})
        self.path = str(path) if path is not None else None
        self.batch_size = batch_size
        self.transform = image_transform(cfg.model.visual.image_size)
        self.device = torch.device("cpu")
        self.to(device)

    def __repr__(self) -> str:
        return f"VLModel(task={self.task!r}, path={self.path!r}, device={str(self.device)!r})"

    def to(self, device: str | torch.device) -> VLModel:
        """Move the model to ``device``; returns ``self``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # ------------------------------------------------------------------ inputs

    @property
    def backbone(self) -> nn.Module:
        """The multi-modal model (without the task head)."""
        return self.model if self.task == PRETRAIN else self.model.backbone

    def _require(self, method: str, *tasks: str) -> None:
        if self.task not in tasks:
            needs = " or ".join(
                "a pre-training run ('vlparse pretrain')" if t == PRETRAIN
                else f"a run fine-tuned with 'vlparse finetune {t}'" for t in tasks
            )
            raise WrongTaskError(
                f"{method}() needs {needs}; {self.path or 'this model'} is a {self.task} run. "
                f"Load such a run with vlparse.load(...)"
            )

    def _image(self, image: ImageLike) -> Tensor:
        """One image -> ``(3, S, S)``."""
        from vlparse.processing.images import load_image

        if isinstance(image, Image.Image):
            return self.transform(image.convert("RGB"))
        if isinstance(image, (str, os.PathLike)):
            return self.transform(load_image(image))
        raise TypeError(
            f"images must be PIL images or paths of image files, got {type(image).__name__}"
        )

    def _images(self, images: Sequence[ImageLike]) -> Tensor:
        """``N`` images -> ``(N, 3, S, S)`` on the model's device."""
        return torch.stack([self._image(im) for im in images]).to(self.device)

    def _texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``T`` texts -> ``input_ids``, ``attention_mask`` ``(T, L)`` on the device, cut to
        the longest."""
        from vlparse.processing.tokenization import encode_texts

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        ids, mask = encode_texts(self.tokenizer, list(texts), self.cfg.model.text.max_text_len)
        cut = max(int(mask.sum(1).max()), 1) if len(texts) else 1
        return ids[:, :cut].to(self.device), mask[:, :cut].to(self.device)

    def _cls(self, images: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """``[CLS]`` states ``(B, D)`` of ``images (B, 3, S, S)`` with texts ``(B, L)``."""
        return self.backbone(images, ids, mask).cls

    def _match_head(self) -> nn.Module:
        return self.model.itm_head if self.task == PRETRAIN else self.model.head

    # ------------------------------------------------------------------ matching

    @torch.no_grad()
    def score(self, images: Sequence[ImageLike] | ImageLike, texts: Sequence[str] | str) -> Tensor:
        """Matching scores of aligned lists: ``images[i]`` with ``texts[i]``.

        One image (or one text) is paired with every text (image). The score is the matching
        head's margin ``z_1 - z_0`` (ITM head of a pre-training run, the retrieval head of a
        retrieval run): higher means a better match.

        Returns:
            ``(N,)`` float32 on the CPU.
        """
        self._require("score", PRETRAIN, "retrieval")
        images = [images] if isinstance(images, (Image.Image, str, os.PathLike)) else list(images)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(images) == 1 and len(texts) > 1:
            images = images * len(texts)
        if len(texts) == 1 and len(images) > 1:
            texts = texts * len(images)
        if len(images) != len(texts):
            raise ValueError(
                f"score: {len(images)} images but {len(texts)} texts; pass aligned lists of "
                f"the same length (or one image / one text)"
            )
        head, out = self._match_head(), []
        for s in range(0, len(texts), self.batch_size):
            ids, mask = self._texts(texts[s : s + self.batch_size])
            logits = head(self._cls(self._images(images[s : s + self.batch_size]), ids, mask))
            out.append((logits[:, 1] - logits[:, 0]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def rank(self, image: ImageLike, texts: Sequence[str]) -> list[tuple[str, float]]:
        """``texts`` sorted by their :meth:`score` with ``image``, best first; the visual
        parser runs once. Returns ``[(text, score), ...]``."""
        self._require("rank", PRETRAIN, "retrieval")
        texts = [texts] if isinstance(texts, str) else list(texts)
        tokens = self.backbone.encode_image(self._images([image])).tokens  # (1, m, c)
        head, scores = self._match_head(), []
        for s in range(0, len(texts), self.batch_size):
            ids, mask = self._texts(texts[s : s + self.batch_size])
            cls = self.backbone.fuse(tokens.expand(ids.shape[0], -1, -1), ids, mask).cls
            logits = head(cls).float()
            scores += (logits[:, 1] - logits[:, 0]).tolist()
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        return [(texts[i], float(scores[i])) for i in order]

    # ------------------------------------------------------------------ tasks

    @torch.no_grad()
    def answer(self, image: ImageLike, question: str, topk: int = 5) -> list[tuple[str, float]]:
        """The ``topk`` most likely answers with their probabilities (sigmoid of each answer's
        logit, as trained by the VQA binary cross-entropy), best first."""
        from vlparse.tasks.vqa import top_answers

        self._require("answer", "vqa")
        ids, mask = self._texts([question])
        logits = self.model.head(self._cls(self._images([image]), ids, mask))
        return top_answers(logits, self.state["answers"], topk)[0]

    @torch.no_grad()
    def entail(self, image: ImageLike, hypothesis: str) -> dict[str, float]:
        """``{"entailment": p, "neutral": p, "contradiction": p}`` (softmax, sums to 1) of the
        image as premise and ``hypothesis``."""
        from vlparse.data.formats.snli_ve import SNLI_VE_LABELS

        self._require("entail", "snli-ve")
        ids, mask = self._texts([hypothesis])
        logits = self.model.head(self._cls(self._images([image]), ids, mask))
        probs = logits.float().softmax(-1)[0].tolist()
        return dict(zip(SNLI_VE_LABELS, probs, strict=True))

    @torch.no_grad()
    def reason(self, image_left: ImageLike, image_right: ImageLike, sentence: str) -> float:
        """Probability that ``sentence`` is true of the image pair (NLVR2 pair method)."""
        from vlparse.tasks.nlvr2 import pair_logits

        self._require("reason", "nlvr2")
        ids, mask = self._texts([sentence])
        images = self._images([image_left, image_right])[None]  # (1, 2, 3, S, S)
        logits = pair_logits(self.model, images, ids, mask)
        return float(logits.float().softmax(-1)[0, 1])


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> VLModel:
    """Load a pre-training or fine-tuning run for inference.

    Args:
        path: a run folder (its latest checkpoint) or a ``checkpoints/step_*`` folder.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available, else the CPU.

    Returns:
        A :class:`VLModel` in eval mode on ``device``.

    Raises:
        FileNotFoundError: no run folder or checkpoint at ``path``.
    """
    from vlparse.io.runs import run_task
    from vlparse.models.loading import find_run_dir, load_run
    from vlparse.tasks.finetune import load_finetuned

    run_dir = find_run_dir(path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if run_task(run_dir) is not None:
        model, cfg, tokenizer, state = load_finetuned(path)
        return VLModel(model, cfg, tokenizer, cfg.task.name, state, Path(path), device)
    model, cfg, tokenizer = load_run(path)
    return VLModel(model, cfg, tokenizer, PRETRAIN, {}, Path(path), device)
