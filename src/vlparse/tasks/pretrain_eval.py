"""Held-out evaluation of a pre-trained model: ITM and MLM accuracy beside their chance levels,
and zero-shot image-to-text retrieval by ITM score."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vlparse.data.collate import collate_pretrain
from vlparse.eval.metrics import majority_fraction, recall_at_k
from vlparse.objectives import itm
from vlparse.probing import IMFAccumulator, NMIAccumulator

__all__ = ["evaluate_pretrain", "itm_scores"]


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
            fused = model.fuse(
                tokens[start:stop].repeat_interleave(t, 0),
                input_ids[j0:j1].repeat(k, 1),
                attention_mask[j0:j1].repeat(k, 1),
            )
            prob = model.itm_head(fused.cls).float().softmax(-1)[:, 1]
            out[start:stop, j0:j1] = prob.view(k, t)
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


@torch.no_grad()
def evaluate_pretrain(
    model,
    dataset,
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
        dataset: a :class:`~vlparse.data.pretrain.PretrainDataset` over held-out records (its
            seeded negatives and MLM masks make the evaluation deterministic).
        num_images: images for ITM and MLM (each with ``P`` matched and ``N`` unmatched texts).
        retrieval_images: ``n`` images ranked against the first caption of each (``n x n``
            pairs); the chance R@1 is ``1 / n``.

    Returns:
        ``itm_acc`` and ``itm_chance`` (the majority class share), ``mlm_acc`` and ``mlm_chance``
        (always predicting the most frequent masked token), ``mlm_acc_wrong_image`` (the same
        masked texts fused with another image of the batch: the gap to ``mlm_acc`` is how much
        MLM uses the image), ``i2t_r1`` and ``i2t_r1_chance``,
        ``t2i_r1``, and the counts; with ``probe_images > 0`` also the inter-modality flow from
        the input to the last layer ``imf_1L`` (the paper's F^{1,L}) and the NMI of the last
        layer's 2-means clustering against the modality labels ``nmi_last``, over the matched
        pairs of the first ``probe_images`` images.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    n = min(num_images, len(dataset))
    subset = Subset(dataset, list(range(n)))
    loader = DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_pretrain,
    )
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    itm_correct = itm_total = mlm_correct = mlm_total = mlm_wrong_correct = mlm_wrong_total = 0
    targets: list[Tensor] = []
    imf = nmi = None
    probed = 0
    first_captions: list[tuple[Tensor, Tensor]] = []
    images_kept: list[Tensor] = []
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        batch = _to(batch, device)
        bsz, n_txt, seq = batch["input_ids"].shape
        p = n_txt - dataset.num_neg
        with autocast:
            tokens = model.encode_image(batch["image"]).tokens
            out = model.fuse(
                tokens.repeat_interleave(n_txt, 0),
                batch["input_ids"].reshape(-1, seq),
                batch["attention_mask"].reshape(-1, seq),
            )
            labels = itm.itm_labels(bsz, p, dataset.num_neg, device=device)
            c, t = itm.itm_accuracy(model.itm_head(out.cls), labels)
            itm_correct, itm_total = itm_correct + c, itm_total + t
            mlm_labels = batch["mlm_labels"][:, :p].reshape(-1, seq)
            mout = model.fuse(
                tokens.repeat_interleave(p, 0),
                batch["mlm_input_ids"][:, :p].reshape(-1, seq),
                batch["attention_mask"][:, :p].reshape(-1, seq),
            )
            sel = mlm_labels != -100
            logits = model.mlm_head(mout.text[sel])
            if bsz > 1:
                # the same masked texts with the next image of the batch: how much MLM uses
                # the image
                wrong = model.fuse(
                    tokens.roll(1, 0).repeat_interleave(p, 0),
                    batch["mlm_input_ids"][:, :p].reshape(-1, seq),
                    batch["attention_mask"][:, :p].reshape(-1, seq),
                )
                logits_wrong = model.mlm_head(wrong.text[sel])
                mlm_wrong_correct += int((logits_wrong.argmax(-1) == mlm_labels[sel]).sum())
                mlm_wrong_total += int(sel.sum())
        c, t = (int((logits.argmax(-1) == mlm_labels[sel]).sum()), int(sel.sum()))
        mlm_correct, mlm_total = mlm_correct + c, mlm_total + t
        targets.append(mlm_labels[sel].cpu())
        if probed < probe_images:
            take = min(bsz, probe_images - probed)
            probe_out = model.fuse(
                tokens[:take].float(), batch["input_ids"][:take, 0],
                batch["attention_mask"][:take, 0],
                output_attentions=True, output_hidden_states=True,
            )
            if imf is None:
                imf = IMFAccumulator(len(probe_out.attentions))
                nmi = NMIAccumulator(1)
            imf.update([a.float() for a in probe_out.attentions], probe_out.modality)
            nmi.update([probe_out.hidden_states[-1].float()], probe_out.modality)
            probed += take
        if sum(x.shape[0] for x in images_kept) < retrieval_images:
            images_kept.append(batch["image"])
            first_captions.append((batch["input_ids"][:, 0], batch["attention_mask"][:, 0]))

    result: dict[str, float] = {
        "itm_acc": itm_correct / max(1, itm_total),
        "itm_chance": max(dataset.num_pos, dataset.num_neg) / (dataset.num_pos + dataset.num_neg),
        "itm_pairs": itm_total,
        "mlm_acc": mlm_correct / max(1, mlm_total),
        "mlm_chance": majority_fraction(torch.cat(targets)) if targets else float("nan"),
        "mlm_tokens": mlm_total,
        "mlm_acc_wrong_image": mlm_wrong_correct / max(1, mlm_wrong_total),
        "num_images": n,
    }
    if imf is not None and imf.num_samples:
        flow = imf.compute()
        result["imf_1L"] = float(flow[0, -1])
        result["nmi_last"] = float(nmi.compute()[-1])
        result["probe_pairs"] = imf.num_samples
    if images_kept:
        imgs = torch.cat(images_kept)[:retrieval_images]
        ids = torch.cat([c[0] for c in first_captions])[:retrieval_images]
        mask = torch.cat([c[1] for c in first_captions])[:retrieval_images]
        with autocast:
            scores = itm_scores(model, imgs, ids, mask, progress=progress)
        gt = torch.eye(len(imgs), dtype=torch.bool, device=scores.device)
        result["i2t_r1"] = recall_at_k(scores, gt, (1,))[1]
        result["t2i_r1"] = recall_at_k(scores.t(), gt, (1,))[1]
        result["i2t_r1_chance"] = 1.0 / len(imgs)
        result["retrieval_images"] = len(imgs)
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
