"""Held-out evaluation of a pre-trained model through its own passes: ITM and MLM accuracy beside
their chance levels, MLM with a wrong image, zero-shot image-to-text retrieval by ITM score, and
the IMF / NMI probes."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vlparse.eval.metrics import majority_fraction, recall_at_k
from vlparse.objectives.itm import itm_accuracy, itm_labels
from vlparse.probing import IMFAccumulator, NMIAccumulator
from vlparse.processing.tokenization import IGNORE_INDEX

__all__ = ["evaluate_pretrain", "format_report", "itm_scores"]


@torch.no_grad()
def itm_scores(
    model,
    images: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    batch_pairs: int = 1024,
    progress: bool = False,
) -> Tensor:
    """Match probability of every image with every text.

    The visual parser runs once per image; pairs are scored in chunks of ``batch_pairs``.

    Args:
        images: ``(I, 3, S, S)``; ``input_ids``, ``attention_mask``: ``(T, L)``.

    Returns:
        ``(I, T)`` probabilities that the pair matches.
    """
    tokens = model.encode_image(images).tokens
    n_img, n_txt = tokens.shape[0], input_ids.shape[0]
    out = torch.empty(n_img, n_txt, device=tokens.device)
    # chunk over texts for each image, several images per call when the text set is small
    per_call = max(1, batch_pairs // max(1, n_txt))
    it = range(0, n_img, per_call)
    for start in tqdm(it, desc="itm scores", disable=not progress, leave=False):
        stop = min(n_img, start + per_call)
        k = stop - start
        for j0 in range(0, n_txt, batch_pairs):
            j1 = min(n_txt, j0 + batch_pairs)
            t = j1 - j0
            logits = model.itm_logits(
                tokens[start:stop].repeat_interleave(t, 0),
                input_ids[j0:j1].repeat(k, 1),
                attention_mask[j0:j1].repeat(k, 1),
            )
            out[start:stop, j0:j1] = logits.float().softmax(-1)[:, 1].view(k, t)
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


@dataclass
class _Tally:
    """Counts gathered over the evaluation batches."""

    itm_correct: int = 0
    itm_total: int = 0
    mlm_correct: int = 0
    mlm_total: int = 0
    wrong_correct: int = 0
    wrong_total: int = 0
    targets: list[Tensor] = field(default_factory=list)
    images: list[Tensor] = field(default_factory=list)
    captions: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    imf: IMFAccumulator | None = None
    nmi: NMIAccumulator | None = None
    probed: int = 0


def _score_batch(model, batch: dict, tokens: Tensor, num_pos: int, num_neg: int,
                 tally: _Tally) -> None:
    """ITM over all pairs; MLM on the matched pairs, with their image and with the next image of
    the batch (how much MLM uses the image)."""
    bsz, n_txt, seq = batch["input_ids"].shape
    logits = model.itm_logits(tokens.repeat_interleave(n_txt, 0),
                              batch["input_ids"].reshape(-1, seq),
                              batch["attention_mask"].reshape(-1, seq))
    c, t = itm_accuracy(logits, itm_labels(bsz, num_pos, num_neg, device=tokens.device))
    tally.itm_correct, tally.itm_total = tally.itm_correct + c, tally.itm_total + t
    texts = (batch["mlm_input_ids"][:, :num_pos].reshape(-1, seq),
             batch["attention_mask"][:, :num_pos].reshape(-1, seq),
             batch["mlm_labels"][:, :num_pos].reshape(-1, seq))
    logits, targets, _ = model.masked_lm(tokens.repeat_interleave(num_pos, 0), *texts)
    masked = targets != IGNORE_INDEX  # with static shapes: every position, -100 where not masked
    logits, targets = logits[masked], targets[masked]
    tally.mlm_correct += int((logits.argmax(-1) == targets).sum())
    tally.mlm_total += int(targets.numel())
    tally.targets.append(targets.cpu())
    if bsz > 1:
        wrong, _, _ = model.masked_lm(tokens.roll(1, 0).repeat_interleave(num_pos, 0), *texts)
        wrong = wrong[masked]
        tally.wrong_correct += int((wrong.argmax(-1) == targets).sum())
        tally.wrong_total += int(targets.numel())


def _probe_batch(model, batch: dict, tokens: Tensor, probe_images: int, tally: _Tally) -> None:
    """IMF and NMI over the first matched pair of the batch's images, up to ``probe_images``."""
    take = min(tokens.shape[0], probe_images - tally.probed)
    if take <= 0:
        return
    out = model.fuse(tokens[:take].float(), batch["input_ids"][:take, 0],
                     batch["attention_mask"][:take, 0],
                     output_attentions=True, output_hidden_states=True)
    if tally.imf is None or tally.nmi is None:
        tally.imf, tally.nmi = IMFAccumulator(len(out.attentions)), NMIAccumulator(1)
    tally.imf.update([a.float() for a in out.attentions], out.modality)
    tally.nmi.update([out.hidden_states[-1].float()], out.modality)
    tally.probed += take


def _retrieval(model, tally: _Tally, retrieval_images: int, autocast: AbstractContextManager,
               progress: bool) -> dict[str, float]:
    """Zero-shot R@1 of the kept images against the first caption of each."""
    imgs = torch.cat(tally.images)[:retrieval_images]
    ids = torch.cat([c[0] for c in tally.captions])[:retrieval_images]
    mask = torch.cat([c[1] for c in tally.captions])[:retrieval_images]
    with autocast:
        scores = itm_scores(model, imgs, ids, mask, progress=progress)
    gt = torch.eye(len(imgs), dtype=torch.bool, device=scores.device)
    return {
        "i2t_r1": recall_at_k(scores, gt, (1,))[1],
        "t2i_r1": recall_at_k(scores.t(), gt, (1,))[1],
        "i2t_r1_chance": 1.0 / len(imgs),
        "retrieval_images": len(imgs),
    }


@torch.no_grad()
def evaluate_pretrain(
    model,
    dataset,
    collator,
    device: torch.device | str = "cpu",
    num_images: int = 500,
    batch_size: int = 32,
    retrieval_images: int = 100,
    probe_images: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """ITM accuracy, MLM accuracy and zero-shot image-to-text R@1 on held-out data.

    Args:
        dataset: a :class:`~vlparse.data.pretrain.PretrainDataset` over held-out records.
        collator: its :class:`~vlparse.data.collate.PretrainCollator` (seeded negatives and MLM
            masks make the evaluation deterministic).
        num_images: images for ITM and MLM (each with ``P`` matched and ``N`` unmatched texts).
        retrieval_images: ``n`` images ranked against the first caption of each (``n x n``
            pairs); the chance R@1 is ``1 / n``.

    Returns:
        ``itm_acc`` and ``itm_chance`` (the majority class share), ``mlm_acc`` and ``mlm_chance``
        (always predicting the most frequent masked token), ``mlm_acc_wrong_image`` (the same
        masked texts fused with another image of the batch: the gap to ``mlm_acc`` is how much
        MLM uses the image), ``i2t_r1`` and ``i2t_r1_chance``, ``t2i_r1``, and the counts; with
        ``probe_images > 0`` also the inter-modality flow from the input to the last layer
        ``imf_1L`` (the paper's F^{1,L}) and the NMI of the last layer's 2-means clustering
        against the modality labels ``nmi_last``, over the matched pairs of the first
        ``probe_images`` images.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    n = min(num_images, len(dataset))
    loader = DataLoader(Subset(dataset, list(range(n))), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collator)
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    p, n_neg, tally = collator.num_pos, collator.num_neg, _Tally()
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        batch = _to(batch, device)
        with autocast:
            tokens = model.encode_image(batch["image"]).tokens
            _score_batch(model, batch, tokens, p, n_neg, tally)
        _probe_batch(model, batch, tokens, probe_images, tally)
        if sum(x.shape[0] for x in tally.images) < retrieval_images:
            tally.images.append(batch["image"])
            tally.captions.append((batch["input_ids"][:, 0], batch["attention_mask"][:, 0]))
    result: dict[str, float] = {
        "itm_acc": tally.itm_correct / max(1, tally.itm_total),
        "itm_chance": max(p, n_neg) / (p + n_neg),
        "itm_pairs": tally.itm_total,
        "mlm_acc": tally.mlm_correct / max(1, tally.mlm_total),
        "mlm_chance": majority_fraction(torch.cat(tally.targets)) if tally.targets
        else float("nan"),
        "mlm_tokens": tally.mlm_total,
        "mlm_acc_wrong_image": tally.wrong_correct / max(1, tally.wrong_total),
        "num_images": n,
    }
    if tally.imf is not None and tally.imf.num_samples:
        result["imf_1L"] = float(tally.imf.compute()[0, -1])
        result["nmi_last"] = float(tally.nmi.compute()[-1])
        result["probe_pairs"] = tally.imf.num_samples
    if tally.images:
        result.update(_retrieval(model, tally, retrieval_images, autocast, progress))
    model.train(was_training)
    return result


def format_report(result: dict[str, float]) -> str:
    """Human-readable lines 'metric: value (chance c)'."""
    lines = []
    if "itm_acc" in result:
        lines.append(
            f"ITM accuracy      {result['itm_acc']:.3f}  (chance {result['itm_chance']:.3f})"
        )
    if "mlm_acc" in result:
        lines.append(
            f"MLM accuracy      {result['mlm_acc']:.3f}  "
            f"(majority token {result['mlm_chance']:.3f}"
            + (
                f", with a wrong image {result['mlm_acc_wrong_image']:.3f})"
                if "mlm_acc_wrong_image" in result
                else ")"
            )
        )
    if "imf_1L" in result:
        lines.append(
            f"IMF F^(1,L)       {result['imf_1L']:.3f}  (share of attention flow across "
            f"modalities, {result['probe_pairs']} pairs)"
        )
        lines.append(f"NMI last layer    {result['nmi_last']:.3f}  (2-means vs modality)")
    if "i2t_r1" in result:
        lines.append(
            f"Zero-shot TR R@1  {result['i2t_r1']:.3f}  (chance {result['i2t_r1_chance']:.3f}, "
            f"{result['retrieval_images']} images)"
        )
    return "\n".join(lines)
