"""Image captioning on the Karpathy caption files (COCO: train + restval, evaluated on val/test).

**Data.** Images with captions of ``data.train_sets`` x ``data.train_splits`` (the Karpathy
reader, as retrieval reads them); each epoch every image comes once with one of its captions,
drawn by a generator keyed by ``(seed, epoch, index)``. Captions are whole sequences from the
model's processor (``[CLS] words [SEP]``, at most ``model.text.max_text_len`` tokens): ``[CLS]``
is the start token, ``[SEP]`` the end token.

**Loss.** Next-token cross-entropy (label smoothing ``task.label_smoothing``) of the family's
captioning model (:class:`~vlparse.models.fiber.captioning.FiberForCaptioning`). With
``task.scst_weight = w > 0`` the step also samples ``task.scst_samples`` captions per image,
scores each and the image's greedy caption by CIDEr-D (:class:`~vlparse.eval.cider.CiderD`,
document frequencies from the training references), and adds the self-critical loss:
``(1 - w) * MLE + w * SCST`` (:func:`~vlparse.objectives.caption.mix_caption_losses`). The
usual recipe runs MLE first, then a second run ``--init MLE_RUN task.scst_weight=0.7``.

**Evaluation.** Beam search (``task.num_beams``; 1 = greedy; length-normalised; at most
``task.max_length`` tokens), then the official metrics (:func:`~vlparse.eval.caption.
caption_scores`: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D; SPICE skipped; the tokenizer recorded).
``vlparse evaluate caption --out X.json`` writes the metrics to ``X.json`` and the COCO results
file ``X_captions.json`` (``[{"image_id", "caption"}]``) beside it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlparse.config import FinetuneConfig
from vlparse.data.formats.records import ImageCaptions
from vlparse.eval.caption import caption_scores, nearest_neighbour_captions
from vlparse.eval.cider import CiderD
from vlparse.io.files import atomic_write_text
from vlparse.objectives.caption import mix_caption_losses, self_critical_loss
from vlparse.objectives.mlm import IGNORE_INDEX
from vlparse.processing.images import load_image
from vlparse.tasks.base import Task
from vlparse.tasks.retrieval import RetrievalTrainDataset, read_retrieval_records
from vlparse.train.protocol import StepOutput
from vlparse.utils import autocast as precision_autocast

__all__ = [
    "CaptionTask",
    "CaptionEvalDataset",
    "build_task",
    "caption_results",
    "evaluate_captioning",
    "nearest_neighbour_results",
    "results_path",
]


class CaptionEvalDataset(Dataset):
    """The images of a split, ``{"image": (3, S, S), "index": i}``; a bad image is an error
    (every image gets a caption)."""

    def __init__(self, records: list[ImageCaptions], processor: Any) -> None:
        self.records, self.processor = records, processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.processor.image_transform(load_image(self.records[index].image_path))
        return {"image": image, "index": index}


def _train_item(dataset: RetrievalTrainDataset, index: int) -> dict[str, Any]:
    """A training item plus ``ref_index``: the record whose image it holds (the next good one
    when the image at ``index`` is bad), whose references score its sampled captions."""
    item = RetrievalTrainDataset.__getitem__(dataset, index)
    j = (index + len(item["skipped"])) % len(dataset.records)
    return {**item, "ref_index": torch.tensor(j)}


class CaptionTrainDataset(RetrievalTrainDataset):
    """Per image: ``image``, one caption as ``input_ids`` / ``attention_mask`` ``(L,)``,
    ``ref_index``, ``index``, ``skipped`` (see :class:`~vlparse.tasks.retrieval.
    RetrievalTrainDataset`)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _train_item(self, index)


@contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


class _Reward:
    """CIDEr-D of decoded captions against the training references (document frequencies of
    the training corpus)."""

    def __init__(self, records: list[ImageCaptions], tokenizer: Any) -> None:
        self.scorer = CiderD({i: r.captions for i, r in enumerate(records)})
        self.tokenizer = tokenizer

    def __call__(self, model: nn.Module, output: Any, keys: list[int]) -> Tensor:
        captions = model.decode(output, self.tokenizer)
        return torch.from_numpy(self.scorer.score(keys, captions)).float()


def _scst_loss(model: nn.Module, memory: Any, keys: list[int], reward: _Reward,
               cfg: FinetuneConfig, reduce_count) -> tuple[Tensor, dict[str, float]]:
    """Self-critical loss of ``task.scst_samples`` sampled captions per image, baseline the
    greedy caption's CIDEr-D (decoded in eval mode, without gradient)."""
    t = cfg.task
    with torch.no_grad(), _eval_mode(model):
        greedy = model.generate(memory=memory, max_length=t.scst_max_length)
    samples = model.generate(memory=memory, do_sample=True, num_return_sequences=t.scst_samples,
                             temperature=t.scst_temperature, max_length=t.scst_max_length)
    sample_keys = [k for k in keys for _ in range(t.scst_samples)]
    rewards = reward(model, samples, sample_keys)
    baseline = reward(model, greedy, keys).repeat_interleave(t.scst_samples)
    mask = samples.token_mask()
    dev = samples.token_logprobs.device
    normalizer = reduce_count(mask.sum().float()).clamp_min(1.0)
    loss = self_critical_loss(samples.token_logprobs, mask, rewards.to(dev), baseline.to(dev),
                              normalizer=normalizer)
    return loss, {"reward_sample": float(rewards.mean()), "reward_greedy": float(
        baseline.mean())}


def caption_results(model: nn.Module, dataset: CaptionEvalDataset, cfg: FinetuneConfig,
                    device: torch.device, progress: bool = True,
                    num_beams: int | None = None) -> list[dict[str, Any]]:
    """``[{"image_id", "caption"}]``: one caption per image of ``dataset`` by beam search
    (``num_beams``, default ``task.num_beams``)."""
    t = cfg.task
    beams = t.num_beams if num_beams is None else num_beams
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers)
    if progress:
        loader = tqdm(loader, desc="evaluate caption", unit="batch", leave=False)
    autocast = precision_autocast(cfg.train.precision, device)
    results = []
    for batch in loader:
        with autocast:
            out = model.generate(batch["image"].to(device), num_beams=beams,
                                 max_length=t.max_length, length_alpha=t.length_alpha)
        captions = model.decode(out, dataset.processor.tokenizer)
        for i, caption in zip(batch["index"].tolist(), captions, strict=True):
            results.append({"image_id": dataset.records[i].image_id, "caption": caption})
    return results


@torch.no_grad()
def evaluate_captioning(model: nn.Module, dataset: CaptionEvalDataset, cfg: FinetuneConfig,
                        device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Caption every image of ``dataset`` and score the captions against its references.

    Returns:
        The metrics (``Bleu_1`` .. ``Bleu_4``, ``METEOR`` when Java runs, ``ROUGE_L``,
        ``CIDEr``; 0-1 scale), ``tokenizer``, ``skipped``, ``num_examples``, ``num_beams`` and
        ``results`` (the COCO results, removed by ``write_outputs``).
    """
    model.eval()
    results = caption_results(model, dataset, cfg, device, progress)
    refs = {r.image_id: r.captions for r in dataset.records}
    scores = caption_scores(results, refs)
    return {**scores.metrics, "tokenizer": scores.tokenizer, "skipped": scores.skipped,
            "num_examples": len(results), "num_beams": cfg.task.num_beams, "results": results}


@torch.no_grad()
def nearest_neighbour_results(model: nn.Module, train: CaptionEvalDataset,
                              test: CaptionEvalDataset, cfg: FinetuneConfig,
                              device: torch.device) -> list[dict[str, Any]]:
    """The retrieval baseline of captioning: each image of ``test`` gets the first caption of
    the image of ``train`` whose dual-encoder (ITC) image embedding is the most cosine-similar
    (``model.encode_image(images).embeds``, e.g. a pre-trained FIBER model)."""

    def embed(dataset: CaptionEvalDataset) -> Tensor:
        loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False,
                            num_workers=cfg.data.num_workers)
        return torch.cat([model.encode_image(b["image"].to(device)).embeds.float().cpu()
                          for b in loader])

    captions = nearest_neighbour_captions(embed(test), embed(train),
                                          [r.captions[0] for r in train.records])
    return [{"image_id": r.image_id, "caption": c}
            for r, c in zip(test.records, captions, strict=True)]


def results_path(out_json: Path) -> Path:
    """Where the COCO results file of ``out_json`` goes: ``<stem>_captions.json`` beside it."""
    return out_json.with_name(f"{out_json.stem}_captions.json")


class CaptionTask(Task):
    """Image captioning; see the module docstring."""

    name = "caption"
    recipe = "caption"
    default_split = "test"
    metric_keys = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "tokenizer")

    def __init__(self) -> None:
        self._reward: _Reward | None = None

    def dataset(self, manifest, sets, splits, cfg, processor, labels, train) -> Dataset:
        records = read_retrieval_records(manifest, sets, splits)
        if train:
            self._reward = _Reward(records, processor.tokenizer)
            return CaptionTrainDataset(records, processor, seed=cfg.train.seed,
                                       on_error=cfg.data.on_error)
        if cfg.task.eval_max_images:
            records = records[: cfg.task.eval_max_images]
        return CaptionEvalDataset(records, processor)

    def texts(self, dataset) -> list[str]:
        return [c for r in dataset.records for c in r.captions]

    def step(self, model, batch, reduce_count, cfg) -> StepOutput:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        targets = (labels[:, 1:] != IGNORE_INDEX).sum().float()
        memory = model.encode_images(batch["image"])
        out = model(None, ids, mask, labels=labels, memory=memory,
                    loss_normalizer=reduce_count(targets).clamp_min(1.0),
                    label_smoothing=cfg.task.label_smoothing)
        scalars = {"mle": float(out.loss.detach())}
        loss, w = out.loss, cfg.task.scst_weight
        if w > 0:
            if self._reward is None:
                raise RuntimeError("caption: the SCST reward needs the training data set first")
            keys = batch["ref_index"].tolist()
            rl, extra = _scst_loss(model, memory, keys, self._reward, cfg, reduce_count)
            loss = mix_caption_losses(out.loss, rl, w)
            scalars |= {"scst": float(rl.detach()), **extra}
        return StepOutput(loss, {"loss": float(loss.detach()), **scalars})

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        return evaluate_captioning(model, dataset, cfg, device, progress)

    def write_outputs(self, result, out_json):
        result = dict(result)
        results = result.pop("results", None)
        if out_json is not None and results is not None:
            path = results_path(Path(out_json))
            atomic_write_text(path, json.dumps(results) + "\n")
            result["results_file"] = str(path)
        return result


def build_task() -> CaptionTask:
    """The captioning task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return CaptionTask()
