"""Image-text retrieval (paper section 4.2, Table 4): fine-tuning and full-ranking evaluation.

Training: binary matching of image-text pairs by the family's retrieval task model
(:func:`~vlparse.models.task_registry.task_model_class`; Visual Parsing: a head on ``[CLS]``
initialised from the pre-trained ITM head). A batch holds ``B`` images, each with one of its
captions (drawn per epoch by a generator keyed by ``(seed, epoch, index)``); the aligned pairs
``(i, i)`` are positives and the unaligned pairs ``(i, i + s mod B)``, ``s = 1 .. num_neg``,
negatives: captions of other images of the mini-batch (the sampler shuffles every epoch, so the
pairing is random). A negative whose caption is word for word the image's own caption is
dropped. The image side (``model.encode_images``, the visual parser) runs once per image.

Evaluation: every image of the split against every caption. The image side runs once per image
(features cached on the model's device), captions are tokenised once and sorted by length so that
each batch of ``task.eval_batch_pairs`` pairs is cut to its longest caption, and the score of a
pair is ``model.match_scores`` (the matching logit margin ``z_1 - z_0``, monotone in the match
probability). TR ranks the captions of each image, IR the images of each caption; Recall@1/5/10
by :func:`vlparse.eval.metrics.recall_at_k`.

``task.rerank_k = K``, retrieval in two stages: a cheap first score (the dot product of
``model.shortlist_embeddings``; FIBER: the dual encoder's ITC similarity) ranks every pair and
picks, for each image, its top-K captions (TR) and, for each caption, its top-K images (IR);
only those pairs go through the full model (FIBER: the fused ITM), the others rank last. With
``K >= max(I, T)`` the result equals the full ranking exactly. The evaluation then also reports
the first stage's own recalls, the pairs the full model scored beside ``I x T`` and the seconds
of each stage (:class:`Ranking`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlparse.config import FinetuneConfig
from vlparse.data.formats.karpathy import read_karpathy
from vlparse.data.formats.records import ImageCaptions
from vlparse.data.manifest import manifest_entry
from vlparse.data.sampler import stable_seed
from vlparse.errors import BadImageError, ConfigError, EmptyDatasetError, ManifestError
from vlparse.eval.metrics import recall_at_k
from vlparse.objectives.itm import itm_accuracy
from vlparse.processing.images import load_image
from vlparse.tasks.base import Task
from vlparse.train.protocol import StepOutput
from vlparse.utils import autocast as precision_autocast

__all__ = [
    "RetrievalTask",
    "build_task",
    "read_retrieval_records",
    "RetrievalTrainDataset",
    "RetrievalEvalDataset",
    "training_pairs",
    "retrieval_step",
    "encode_images",
    "score_matrix",
    "rerank_candidates",
    "Ranking",
    "rank_pairs",
    "retrieval_metrics",
    "chance_recall",
    "evaluate_retrieval",
]

KS = (1, 5, 10)


# --------------------------------------------------------------------------- data


def read_retrieval_records(
    manifest: dict, sets: list[str], splits: list[str]
) -> list[ImageCaptions]:
    """Images with captions of Karpathy-format data sets (``flickr30k``, ``coco``); images
    without captions are left out. Fails (naming what exists) when a set or split is missing."""
    records: list[ImageCaptions] = []
    for name in sets:
        for split in splits:
            roles = manifest_entry(manifest, name, split)
            if "karpathy" not in roles or "image_root" not in roles:
                raise ManifestError(
                    f"manifest {name}.{split}: retrieval needs the roles 'karpathy' and "
                    f"'image_root'; found {', '.join(sorted(roles))}"
                )
            records += read_karpathy(roles["karpathy"], roles["image_root"], split, source=name)
    records = [r for r in records if r.captions]
    if not records:
        raise EmptyDatasetError(f"no captioned images in {sets} x {splits} of the manifest")
    return records


class RetrievalTrainDataset(Dataset):
    """Per image: ``image (3, S, S)``, one of its captions as ``input_ids`` / ``attention_mask``
    ``(L,)`` (both from ``processor``), ``index`` and ``skipped`` (bad images replaced by the
    next good one, or raised with ``on_error='raise'``)."""

    def __init__(self, records: list[ImageCaptions], processor: Any, seed: int = 0,
                 on_error: str = "skip") -> None:
        self.records, self.processor = records, processor
        self.seed, self.on_error, self.epoch = seed, on_error, 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n, skipped = len(self.records), []
        for step in range(n):
            j = (index + step) % n
            try:
                image = self.processor.image_transform(load_image(self.records[j].image_path))
                break
            except BadImageError as e:
                if self.on_error == "raise":
                    raise
                skipped.append((e.path, e.reason))
        else:
            raise BadImageError(self.records[index].image_path, "every image of the set is bad")
        gen = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, index))
        captions = self.records[j].captions
        text = captions[int(torch.randint(len(captions), (1,), generator=gen))]
        ids, mask = self.processor.encode_text([text])
        return {"image": image, "input_ids": ids[0], "attention_mask": mask[0], "index": index,
                "skipped": skipped}


class RetrievalEvalDataset(Dataset):
    """The images of a split (items ``{"image": (3, S, S), "index": i}``) and all their
    captions, tokenised once: ``input_ids``, ``attention_mask`` ``(T, L)``, ``caption_image``
    ``(T,)`` the image index of each caption. A bad image is an error: a ranking needs all."""

    def __init__(self, records: list[ImageCaptions], processor: Any) -> None:
        self.records, self.processor = records, processor
        texts = [c for r in records for c in r.captions]
        self.input_ids, self.attention_mask = processor.encode_text(texts)
        self.caption_image = torch.tensor(
            [i for i, r in enumerate(records) for _ in r.captions], dtype=torch.long
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.processor.image_transform(load_image(self.records[index].image_path)),
                "index": index}


# --------------------------------------------------------------------------- training


def training_pairs(batch_size: int, num_neg: int, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """``(image_index, text_index, label)`` of a batch: ``(i, i)`` aligned (label 1), then
    ``(i, (i + s) mod B)`` for ``s = 1 .. min(num_neg, B - 1)`` unaligned (label 0)."""
    ar = torch.arange(batch_size, device=device)
    shifts = range(1, min(num_neg, batch_size - 1) + 1)
    img = torch.cat([ar] + [ar for _ in shifts])
    txt = torch.cat([ar] + [(ar + s) % batch_size for s in shifts])
    labels = (torch.arange(img.numel(), device=device) < batch_size).long()
    return img, txt, labels


def retrieval_step(model: nn.Module, batch: dict[str, Tensor], reduce_count,
                   num_neg: int) -> StepOutput:
    """Matching loss of one batch (``image (B,3,S,S)``, ``input_ids`` / ``attention_mask``
    ``(B, L)``): two-class cross-entropy over the aligned and unaligned pairs, from the task
    model's ``forward`` on features of :meth:`encode_images` (one image pass per image)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    features = model.encode_images(batch["image"])
    img, txt, labels = training_pairs(ids.shape[0], num_neg, ids.device)
    keep = (labels == 1) | (ids[txt] != ids[img]).any(dim=1)  # drop word-for-word duplicates
    img, txt, labels = img[keep], txt[keep], labels[keep]
    normalizer = reduce_count(torch.tensor(float(labels.numel()), device=ids.device))
    out = model(image_features=features[img], input_ids=ids[txt], attention_mask=mask[txt],
                labels=labels, loss_normalizer=normalizer)
    correct, total = itm_accuracy(out.logits, labels)
    return StepOutput(out.loss, {"loss": float(out.loss.detach())},
                      {"match_correct": correct, "match_total": total})


# --------------------------------------------------------------------------- scoring


@torch.no_grad()
def encode_images(model: nn.Module, loader, device: torch.device, autocast=None) -> Tensor:
    """Features ``(I, ...)`` of every image of ``loader`` (batches with ``image``) by
    ``model.encode_images``, in order, on ``device``; the image side runs once per image."""
    parts = []
    for batch in loader:
        with autocast or nullcontext():
            parts.append(model.encode_images(batch["image"].to(device, non_blocking=True)))
    return torch.cat(parts)


def _pair_chunks(candidates: Tensor | None, n_img: int, order: Tensor, batch_pairs: int):
    """Pairs ``(image_index, text_index)`` in chunks of at most ``batch_pairs``, text-major in
    ``order`` (captions of similar length together)."""
    device = order.device
    per_block = max(1, batch_pairs // n_img)
    buf_i: list[Tensor] = []
    buf_t: list[Tensor] = []
    size = 0
    for start in range(0, order.numel(), per_block):
        block = order[start : start + per_block]
        if candidates is None:
            ii = torch.arange(n_img, device=device).repeat(block.numel())
            tt = block.repeat_interleave(n_img)
        else:
            nz = candidates[:, block].t().nonzero()  # (pairs, 2): (text in block, image)
            ii, tt = nz[:, 1], block[nz[:, 0]]
        buf_i.append(ii)
        buf_t.append(tt)
        size += ii.numel()
        while size >= batch_pairs:
            all_i, all_t = torch.cat(buf_i), torch.cat(buf_t)
            yield all_i[:batch_pairs], all_t[:batch_pairs]
            buf_i, buf_t, size = [all_i[batch_pairs:]], [all_t[batch_pairs:]], size - batch_pairs
    if size:
        yield torch.cat(buf_i), torch.cat(buf_t)


@torch.no_grad()
def score_matrix(
    model: nn.Module,
    features: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    candidates: Tensor | None = None,
    batch_pairs: int = 1024,
    autocast=None,
    progress: bool = False,
    length_multiple: int = 8,
) -> Tensor:
    """Scores of image-caption pairs (``model.match_scores``) from cached image features.

    Args:
        features: ``(I, ...)`` from :func:`encode_images`.
        input_ids, attention_mask: ``(T, L)``.
        candidates: ``(I, T)`` bool, the pairs to score (default all).
        batch_pairs: pairs per forward pass; each pass is cut to its longest caption, rounded
            up to a multiple of ``length_multiple`` (at most ``L``), so that the passes take a
            few shapes only (compiled graphs and kernels are reused; the padding is masked, so
            the scores are the same).

    Returns:
        ``(I, T)`` float32 scores; ``-inf`` for pairs not in ``candidates``.
    """
    n_img, n_txt = features.shape[0], input_ids.shape[0]
    device = features.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    lengths = attention_mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    out = torch.full((n_img, n_txt), float("-inf"), device=device)
    total = n_img * n_txt if candidates is None else int(candidates.sum())
    if candidates is not None:
        candidates = candidates.to(device)
    bar = tqdm(total=total, desc="scoring pairs", unit="pair", disable=not progress, leave=False)
    for ii, tt in _pair_chunks(candidates, n_img, order, batch_pairs):
        longest = int(lengths[tt].max())
        cut = min(-(-longest // length_multiple) * length_multiple, input_ids.shape[1])
        with autocast or nullcontext():
            out[ii, tt] = model.match_scores(features[ii], input_ids[tt, :cut],
                                             attention_mask[tt, :cut])
        bar.update(ii.numel())
    bar.close()
    return out


def rerank_candidates(cheap: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(I, T)`` bool masks: each image's top-``k`` captions (TR) and each caption's top-``k``
    images (IR) by the ``(I, T)`` cheap score."""
    n_img, n_txt = cheap.shape
    tr = torch.zeros_like(cheap, dtype=torch.bool)
    tr.scatter_(1, cheap.topk(min(k, n_txt), dim=1).indices, True)
    ir = torch.zeros_like(cheap, dtype=torch.bool)
    ir.scatter_(0, cheap.topk(min(k, n_img), dim=0).indices, True)
    return tr, ir


def retrieval_metrics(scores_tr: Tensor, scores_ir: Tensor, caption_image: Tensor) -> dict:
    """``tr_r1, tr_r5, tr_r10`` (queries = images over ``scores_tr (I, T)``) and ``ir_r*``
    (queries = captions over ``scores_ir (I, T)``); caption ``t`` belongs to image
    ``caption_image[t]``."""
    device = scores_tr.device
    images = torch.arange(scores_tr.shape[0], device=device)
    pos = caption_image.to(device)[None, :] == images[:, None]  # (I, T)
    tr = recall_at_k(scores_tr, pos, KS)
    ir = recall_at_k(scores_ir.t(), pos.t(), KS)
    return {**{f"tr_r{k}": tr[k] for k in KS}, **{f"ir_r{k}": ir[k] for k in KS}}


def chance_recall(caption_image: Tensor, num_images: int) -> dict[str, float]:
    """Expected recall of a random ranking: TR ``1 - C(T-p, k) / C(T, k)`` for an image with
    ``p`` of the ``T`` captions, averaged; IR ``min(k, I) / I``."""
    n_txt = caption_image.numel()
    per_image = torch.bincount(caption_image, minlength=num_images).tolist()
    out = {}
    for k in KS:
        kk = min(k, n_txt)
        tr = [1 - math.comb(n_txt - p, kk) / math.comb(n_txt, kk) for p in per_image]
        out[f"chance_tr_r{k}"] = sum(tr) / len(tr)
        out[f"chance_ir_r{k}"] = min(k, num_images) / num_images
    return out


@dataclass
class Ranking:
    """What :func:`rank_pairs` returns.

    Attributes:
        scores_tr: ``(I, T)`` scores that rank the captions of each image (TR).
        scores_ir: ``(I, T)`` scores that rank the images of each caption (IR); both are the
            full model's scores, ``-inf`` outside the shortlist of the direction.
        pairs: image-caption pairs the full model scored.
        shortlist: ``(I, T)`` first-stage scores (``None`` for the full ranking).
        shortlist_s: seconds of the first stage; full_s: seconds of the full model's scoring.
    """

    scores_tr: Tensor
    scores_ir: Tensor
    pairs: int
    shortlist: Tensor | None = None
    shortlist_s: float = 0.0
    full_s: float = 0.0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def rank_pairs(model: nn.Module, features: Tensor, input_ids: Tensor, attention_mask: Tensor,
               rerank_k: int = 0, batch_pairs: int = 1024, autocast=None,
               progress: bool = False) -> Ranking:
    """Rank captions per image (TR) and images per caption (IR) with the full model's scores
    (``model.match_scores``) of every pair, or, with ``rerank_k = K > 0``, in two stages: the
    dot product of ``model.shortlist_embeddings`` ranks everything and the full model re-scores
    the top-K candidates of each query in each direction (``-inf`` elsewhere). ``K >= max(I,
    T)`` re-scores every pair: the full ranking by another path."""
    kw = {"batch_pairs": batch_pairs, "autocast": autocast, "progress": progress}
    device = features.device
    t0 = time.perf_counter()
    if rerank_k <= 0:
        scores = score_matrix(model, features, input_ids, attention_mask, **kw)
        _synchronize(device)
        return Ranking(scores, scores, scores.numel(), full_s=time.perf_counter() - t0)
    if not hasattr(model, "shortlist_embeddings"):
        raise ConfigError(f"task.rerank_k={rerank_k}: {type(model).__name__} has no cheap "
                          "first-stage score (shortlist_embeddings); use task.rerank_k=0")
    with autocast or nullcontext():
        img_emb, txt_emb = model.shortlist_embeddings(features, input_ids, attention_mask)
    cheap = img_emb.float() @ txt_emb.float().t()
    tr, ir = rerank_candidates(cheap, rerank_k)
    _synchronize(device)
    t1 = time.perf_counter()
    scores = score_matrix(model, features, input_ids, attention_mask, candidates=tr | ir, **kw)
    _synchronize(device)
    inf = torch.tensor(float("-inf"), device=scores.device)
    return Ranking(torch.where(tr, scores, inf), torch.where(ir, scores, inf),
                   int((tr | ir).sum()), cheap, t1 - t0, time.perf_counter() - t1)


@torch.no_grad()
def evaluate_retrieval(
    model: nn.Module, dataset: RetrievalEvalDataset, cfg: FinetuneConfig,
    device: torch.device, progress: bool = True,
) -> dict[str, Any]:
    """Full ranking (or top-``task.rerank_k`` re-ranking) of a split: TR and IR Recall@1/5/10,
    chance levels, counts and timings. With re-ranking also the first stage's own recalls
    (``shortlist_tr_r1`` ...), its seconds (``shortlist_s``) and those of the full model
    (``rerank_s``), and ``pairs_all`` (``I x T``, what the full ranking scores)."""
    autocast = precision_autocast(cfg.train.precision, device)
    loader = DataLoader(dataset, batch_size=64, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda")
    t0 = time.perf_counter()
    if progress:
        loader = tqdm(loader, desc="image features", unit="batch", leave=False)
    features = encode_images(model, loader, device, autocast)
    t1 = time.perf_counter()
    n_img, n_txt = features.shape[0], dataset.input_ids.shape[0]
    k = cfg.task.rerank_k
    ids, mask = dataset.input_ids.to(device), dataset.attention_mask.to(device)
    ranking = rank_pairs(model, features, ids, mask, k, cfg.task.eval_batch_pairs, autocast,
                         progress)
    t2 = time.perf_counter()
    result = {
        **retrieval_metrics(ranking.scores_tr, ranking.scores_ir, dataset.caption_image),
        "num_examples": n_img,
        "num_images": n_img,
        "num_captions": n_txt,
        "rerank_k": k,
        "pairs_scored": ranking.pairs,
        "pairs_all": n_img * n_txt,
        "parser_s": t1 - t0,
        "scoring_s": t2 - t1,
        "pairs_per_s": ranking.pairs / max(ranking.full_s, 1e-9),
        **chance_recall(dataset.caption_image, n_img),
    }
    if ranking.shortlist is not None:
        first = retrieval_metrics(ranking.shortlist, ranking.shortlist, dataset.caption_image)
        result.update({f"shortlist_{key}": v for key, v in first.items()})
        result.update(shortlist_s=ranking.shortlist_s, rerank_s=ranking.full_s)
    return result


# --------------------------------------------------------------------------- the task


class RetrievalTask(Task):
    """Image-text retrieval; see the module docstring."""

    name = "retrieval"
    recipe = "retrieval"
    default_split = "test"
    metric_keys = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10")
    zero_shot = True

    def dataset(self, manifest, sets, splits, cfg, processor, labels, train) -> Dataset:
        records = read_retrieval_records(manifest, sets, splits)
        if train:
            return RetrievalTrainDataset(records, processor, cfg.train.seed, cfg.data.on_error)
        if cfg.task.eval_max_images:
            records = records[: cfg.task.eval_max_images]
        return RetrievalEvalDataset(records, processor)

    def texts(self, dataset) -> list[str]:
        return [c for r in dataset.records for c in r.captions]

    def step(self, model, batch, reduce_count, cfg) -> StepOutput:
        return retrieval_step(model, batch, reduce_count, cfg.task.num_neg)

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        return evaluate_retrieval(model, dataset, cfg, device, progress)


def build_task() -> RetrievalTask:
    """The retrieval task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return RetrievalTask()
