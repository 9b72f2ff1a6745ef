"""Inference API: ``model = vlparse.load(path)``, then score, rank, answer, entail, reason,
ground, detect.

``path`` is a folder written by ``save_pretrained`` (e.g. the ``model/`` a training run exports,
moved anywhere), a run folder written by ``vlparse pretrain`` or ``vlparse finetune TASK`` (its
exported ``model/``, else its newest intact checkpoint), or one of its ``checkpoints/step_*``
folders. What a loaded model can do depends on what it was trained for:

============================  =======================================================
method                        needs a model of
============================  =======================================================
``score``, ``rank``           pre-training (ITM head) or ``finetune retrieval``
``answer``                    ``finetune vqa``
``entail``                    ``finetune snli-ve``
``reason``                    ``finetune nlvr2``
``caption``                   ``finetune caption``
``ground``, ``detect``        FIBER's fine-grained stage (``pretrain --config
                              fiber_fine_*``) or ``finetune grounding | refexp |
                              detection``
============================  =======================================================

``rank`` of a FIBER model runs in two stages: the dual encoder's ITC similarity orders every text,
the fused model's ITM re-ranks the top ``rerank_k`` (128 by default).

Every method sits on the family's task model (:mod:`vlparse.models.task_registry`) and takes
batches: lists of images and texts (a single image and text still work, and give a single
result). Images are PIL images (any mode: 16-bit ones are scaled, not clipped) or paths of image
files; images and texts go through the model's processor. The model is in eval mode and every
call runs without gradients. Example::

    import vlparse
    vqa = vlparse.load("ft/vqa/model", device="cuda")
    vqa.answer("photo.jpg", "what color is the square?", topk=3)
    # [('red', 0.91), ('orange', 0.07), ('purple', 0.01)]
    vqa.answer(["a.jpg", "b.jpg"], ["how many circles?", "what shape is red?"])
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from vlparse.errors import WrongTaskError

__all__ = ["BoxResult", "VLModel", "WrongTaskError", "caption_phrases", "load"]

ImageLike = Image.Image | str | os.PathLike
"""An image: a PIL image or the path of an image file."""

PRETRAIN = "pretrain"


def _is_image(value: Any) -> bool:
    return isinstance(value, (Image.Image, str, os.PathLike))


def _pair_up(images: Any, texts: Any, method: str) -> tuple[list, list[str], bool]:
    """Aligned lists of images and texts (one image or one text repeated to the other's
    length), and whether the call was for a single pair."""
    single = _is_image(images) and isinstance(texts, str)
    images = [images] if _is_image(images) else list(images)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if len(images) == 1 and len(texts) > 1:
        images = images * len(texts)
    if len(texts) == 1 and len(images) > 1:
        texts = texts * len(images)
    if len(images) != len(texts):
        raise ValueError(f"{method}: {len(images)} images but {len(texts)} texts; pass aligned "
                         "lists of the same length (or one image / one text)")
    return images, texts, single


class VLModel:
    """A loaded model for inference; build it with :func:`load`.

    Attributes:
        task: ``"pretrain"``, ``"retrieval"``, ``"vqa"``, ``"nlvr2"``, ``"snli-ve"`` or
            ``"caption"``.
        model: the family's model (pre-trained) or its task model (fine-tuned).
        processor: the model's processor (image transform and tokenizer).
        labels: the task model's classes (the VQA answers, the entailment classes ...), empty
            for a pre-trained model.
        path: where it was loaded from; ``config`` the run's config when loaded from a run.
        batch_size: examples per forward pass.
    """

    def __init__(self, model: nn.Module, processor: Any, task: str,
                 path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64, config: Any = None) -> None:
        self.model = model.eval()
        self.processor, self.task, self.config = processor, task, config
        self.labels: list[str] = list(getattr(model, "labels", []))
        self.path = str(path) if path is not None else None
        self.batch_size = batch_size
        self._matcher: nn.Module | None = None
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

    def _require(self, method: str, *tasks: str) -> None:
        if self.task not in tasks:
            needs = " or ".join(
                "a pre-trained model ('vlparse pretrain')" if t == PRETRAIN
                else f"a model fine-tuned with 'vlparse finetune {t}'" for t in tasks
            )
            raise WrongTaskError(
                f"{method}() needs {needs}; {self.path or 'this model'} is a {self.task} model. "
                f"Load such a model with vlparse.load(...)"
            )

    def _images(self, images: Sequence[ImageLike]) -> Tensor:
        """``N`` images -> ``(N, 3, S, S)`` on the model's device."""
        return torch.stack([self.processor.image(im) for im in images]).to(self.device)

    def _texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``T`` texts -> ``input_ids``, ``attention_mask`` ``(T, L)`` on the device, cut to
        the longest."""
        ids, mask = self.processor.encode_text(list(texts), padding="longest")
        return ids.to(self.device), mask.to(self.device)

    def _logits(self, images: list, texts: list[str]) -> Tensor:
        """The task model's float logits of aligned images and texts, in batches."""
        out = []
        for s in range(0, len(texts), self.batch_size):
            ids, mask = self._texts(texts[s : s + self.batch_size])
            batch = images[s : s + self.batch_size]
            pixels = (torch.stack([self._images(pair) for pair in batch])
                      if self.task == "nlvr2" else self._images(batch))
            out.append(self.model(pixels, ids, mask).logits.float().cpu())
        return torch.cat(out)

    def _retrieval_model(self) -> nn.Module:
        """The retrieval task model: the loaded one, or a pre-trained model with its ITM head
        as the matching head."""
        if self.task != PRETRAIN:
            return self.model
        if self._matcher is None:
            from vlparse.config.finetune import RetrievalTaskConfig
            from vlparse.models.task_registry import task_model_class

            cls = task_model_class(self.model.cfg.family, "retrieval")
            self._matcher = cls.from_backbone(self.model, RetrievalTaskConfig(itm_head_init=True),
                                              pretrained=True).eval()
        return self._matcher

    # ------------------------------------------------------------------ matching

    @torch.no_grad()
    def score(self, images: Sequence[ImageLike] | ImageLike,
              texts: Sequence[str] | str) -> Tensor:
        """Matching scores of aligned lists: ``images[i]`` with ``texts[i]``.

        One image (or one text) is paired with every text (image). The score is the matching
        head's margin ``z_1 - z_0`` (the ITM head of a pre-trained model, the retrieval head of
        a retrieval model): higher means a better match.

        Returns:
            ``(N,)`` float32 on the CPU.
        """
        self._require("score", PRETRAIN, "retrieval")
        images, texts, _ = _pair_up(images, texts, "score")
        model, out = self._retrieval_model(), []
        for s in range(0, len(texts), self.batch_size):
            ids, mask = self._texts(texts[s : s + self.batch_size])
            features = model.encode_images(self._images(images[s : s + self.batch_size]))
            out.append(model.match_scores(features, ids, mask).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def rank(self, images: Sequence[ImageLike] | ImageLike, texts: Sequence[str],
             rerank_k: int | None = None
             ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """``texts`` sorted by their :meth:`score` with each image, best first:
        ``[(text, score), ...]`` for one image, a list of those for a list of images. The
        image side runs once per image.

        With ``rerank_k = k > 0`` and more than ``k`` texts, the ranking has two stages: the
        model's cheap first-stage score (FIBER: the dual encoder's ITC similarity) orders every
        text and :meth:`score` re-ranks the top ``k``; the other texts follow in first-stage
        order with the score ``-inf``. Default: the model's ``default_rerank_k`` (FIBER: 128;
        Visual Parsing: 0, every text scored).
        """
        self._require("rank", PRETRAIN, "retrieval")
        single = _is_image(images)
        texts = [texts] if isinstance(texts, str) else list(texts)
        images = [images] if single else list(images)
        model = self._retrieval_model()
        k = getattr(model, "default_rerank_k", 0) if rerank_k is None else rerank_k
        features = torch.cat([model.encode_images(self._images(images[s : s + self.batch_size]))
                              for s in range(0, len(images), self.batch_size)])
        ids, mask = self._texts(texts)
        if 0 < k < len(texts):
            img_emb, txt_emb = model.shortlist_embeddings(features, ids, mask)
            order = (img_emb @ txt_emb.t()).argsort(dim=1, descending=True, stable=True).cpu()
        else:
            k = len(texts)
            order = torch.arange(len(texts)).expand(len(images), -1)
        ranked = []
        for i in range(len(images)):
            shortlist, rest = order[i, :k].tolist(), order[i, k:].tolist()
            scores: list[float] = []
            for s in range(0, len(shortlist), self.batch_size):
                cand = torch.tensor(shortlist[s : s + self.batch_size], device=self.device)
                repeated = features[i : i + 1].expand(cand.numel(), *features.shape[1:])
                scores += model.match_scores(repeated, ids[cand], mask[cand]).tolist()
            best = sorted(range(len(shortlist)), key=lambda j: -scores[j])
            ranked.append([(texts[shortlist[j]], float(scores[j])) for j in best]
                          + [(texts[t], float("-inf")) for t in rest])
        return ranked[0] if single else ranked

    # ------------------------------------------------------------------ tasks

    @torch.no_grad()
    def answer(self, images: Sequence[ImageLike] | ImageLike, questions: Sequence[str] | str,
               topk: int = 5) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """The ``topk`` best answers to each question about its image, best first, each with
        its score: the sigmoid of the answer's logit. The VQA head scores every answer on its
        own (binary cross-entropy against soft scores), so these are independent scores, not
        probabilities over the answers: they need not sum to 1. ``[(answer, score), ...]`` for
        one image and question, a list of those for lists."""
        from vlparse.tasks.vqa import top_answers

        self._require("answer", "vqa")
        images, questions, single = _pair_up(images, questions, "answer")
        top = top_answers(self._logits(images, questions), self.labels, topk)
        return top[0] if single else top

    @torch.no_grad()
    def entail(self, images: Sequence[ImageLike] | ImageLike,
               hypotheses: Sequence[str] | str) -> dict[str, float] | list[dict[str, float]]:
        """``{"entailment": p, "neutral": p, "contradiction": p}`` (softmax probabilities, sum
        1) of each image as premise and its hypothesis; a list of those for lists."""
        self._require("entail", "snli-ve")
        images, hypotheses, single = _pair_up(images, hypotheses, "entail")
        probs = self._logits(images, hypotheses).softmax(-1).tolist()
        out = [dict(zip(self.labels, row, strict=True)) for row in probs]
        return out[0] if single else out

    @torch.no_grad()
    def reason(self, image_left: Sequence[ImageLike] | ImageLike,
               image_right: Sequence[ImageLike] | ImageLike,
               sentence: Sequence[str] | str) -> float | list[float]:
        """Probability (softmax of the NLVR2 head) that each sentence is true of its image pair
        (left, right); one float for one pair, a list for lists."""
        self._require("reason", "nlvr2")
        single = _is_image(image_left) and _is_image(image_right) and isinstance(sentence, str)
        lefts = [image_left] if _is_image(image_left) else list(image_left)
        rights = [image_right] if _is_image(image_right) else list(image_right)
        if len(lefts) != len(rights):
            raise ValueError(f"reason: {len(lefts)} left images but {len(rights)} right ones")
        pairs, sentences, _ = _pair_up(list(zip(lefts, rights, strict=True)), sentence,
                                       "reason")
        true = self._logits(pairs, sentences).softmax(-1)[:, 1].tolist()
        return true[0] if single else true

    @torch.no_grad()
    def caption(self, images: Sequence[ImageLike] | ImageLike, beam: int = 5,
                max_length: int = 50, length_alpha: float = 1.0) -> str | list[str]:
        """A caption of each image: beam search with ``beam`` beams (1 = greedy),
        length-normalised by ``length ** length_alpha``, at most ``max_length`` tokens; one
        string for one image, a list for a list."""
        self._require("caption", "caption")
        single = _is_image(images)
        images = [images] if single else list(images)
        out: list[str] = []
        for s in range(0, len(images), self.batch_size):
            generated = self.model.generate(self._images(images[s : s + self.batch_size]),
                                            num_beams=beam, max_length=max_length,
                                            length_alpha=length_alpha)
            out += self.model.decode(generated, self.processor.tokenizer)
        return out[0] if single else out


    # ------------------------------------------------------------------ boxes

    def _boxes(self, method: str, image: ImageLike, caption: str,
               spans: list[tuple[int, int]]) -> Any:
        if not hasattr(self.model, "find"):
            raise WrongTaskError(
                f"{method}() needs a box model: a fine-grained FIBER run ('vlparse pretrain "
                "--config fiber_fine_tiny ...') or one fine-tuned with 'vlparse finetune "
                f"grounding | refexp | detection'; {self.path or 'this model'} is a {self.task} "
                "model")
        from vlparse.processing.images import load_image

        pil = load_image(image) if not isinstance(image, Image.Image) else image.convert("RGB")
        return self.model.find(pil, caption, [[s] for s in spans], self.processor.tokenizer)

    def ground(self, image: ImageLike, caption: str,
               phrases: Sequence[str | tuple[int, int]] | None = None,
               per_phrase: int = 1) -> BoxResult:
        """Boxes of the phrases of ``caption`` in ``image``.

        Args:
            image: a PIL image or an image file.
            caption: the text.
            phrases: substrings of ``caption`` (their first occurrence) or ``(start, end)``
                character spans; default :func:`caption_phrases` (runs of content words).
            per_phrase: boxes kept per phrase, best first.

        Returns:
            :class:`BoxResult` in the image's pixels, phrase by phrase.
        """
        spans = [_span(caption, p) for p in phrases] if phrases is not None else (
            caption_phrases(caption))
        if not spans:
            raise ValueError(f"ground: no phrase to ground in {caption!r}")
        det = self._boxes("ground", image, caption, spans)
        keep = [int(i) for p in range(len(spans))
                for i in (det.phrases == p).nonzero().flatten()[:per_phrase]]
        return _result(det, keep, caption, spans)

    def detect(self, image: ImageLike, names: Sequence[str], min_score: float = 0.3
               ) -> BoxResult:
        """Objects of the named categories: the names joined into a prompt ``"a. b. c"``
        (as FIBER detects), every box of a name scoring at least ``min_score``."""
        if isinstance(names, str) or not names:
            raise ValueError("detect: pass a list of category names")
        prompt, spans = "", []
        for name in names:
            prompt += ". " if prompt else ""
            spans.append((len(prompt), len(prompt) + len(name)))
            prompt += name
        det = self._boxes("detect", image, prompt, spans)
        keep = [i for i, s in enumerate(det.scores.tolist()) if s >= min_score]
        return _result(det, keep, prompt, spans)


@dataclass
class BoxResult:
    """Boxes found by :meth:`VLModel.ground` / :meth:`VLModel.detect`.

    Attributes:
        boxes: ``(K, 4)`` xyxy in the image's pixels.
        scores: ``(K,)`` in [0, 1].
        phrases: the text each box grounds (the phrase, or the category name).
        spans: its ``(start, end)`` characters in the caption (or prompt).
    """

    boxes: Tensor
    scores: Tensor
    phrases: list[str]
    spans: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.phrases)


_STOP_WORDS = frozenset(
    "a an the this that these those is are was were be there here it its of to and or with "
    "on in at by from for next beside besides near under over above below behind left right "
    "top bottom side middle centre center".split())


def caption_phrases(caption: str) -> list[tuple[int, int]]:
    """The default phrases of :meth:`VLModel.ground`: maximal runs of words (letters and
    digits) that are not in a small list of function and place words, as ``(start, end)``
    spans: ``"a red circle left of a blue square"`` -> ``red circle``, ``blue square``."""
    spans: list[tuple[int, int]] = []
    run: tuple[int, int] | None = None
    for m in re.finditer(r"[A-Za-z0-9]+", caption):
        if m.group().lower() in _STOP_WORDS:
            if run:
                spans.append(run)
            run = None
        else:
            run = (run[0] if run else m.start(), m.end())
    if run:
        spans.append(run)
    return spans


def _span(caption: str, phrase: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(phrase, str):
        start = caption.find(phrase)
        if start < 0 or not phrase:
            raise ValueError(f"phrase {phrase!r} is not in the caption {caption!r}")
        return start, start + len(phrase)
    start, end = phrase
    if not 0 <= start < end <= len(caption):
        raise ValueError(f"span {phrase} is not inside the caption ({len(caption)} characters)")
    return int(start), int(end)


def _result(det: Any, keep: list[int], caption: str, spans: list[tuple[int, int]]
            ) -> BoxResult:
    idx = torch.tensor(keep, dtype=torch.long)
    chosen = [spans[int(p)] for p in det.phrases[idx].tolist()] if keep else []
    return BoxResult(det.boxes[idx].float().cpu().reshape(-1, 4), det.scores[idx].float().cpu(),
                     [caption[a:b] for a, b in chosen], chosen)


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> VLModel:
    """Load a trained model for inference.

    Args:
        path: a ``save_pretrained`` folder (e.g. a run's exported ``model/``, moved anywhere),
            a run folder of ``vlparse pretrain`` / ``vlparse finetune`` (its ``model/``, else its
            newest intact checkpoint) or a ``checkpoints/step_*`` folder.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available, else the CPU.

    Returns:
        A :class:`VLModel` in eval mode on ``device``.

    Raises:
        FileNotFoundError: nothing vlparse wrote is at ``path``.
        CheckpointError: its weights cannot be read or do not match its config.
    """
    from vlparse.tasks.loading import load_model

    loaded = load_model(path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return VLModel(loaded.model, loaded.processor, loaded.task, Path(path), device,
                   config=loaded.config)
