"""Held-out evaluation of FIBER's coarse-grained pre-training, each metric beside its chance level:

- ITC retrieval with the dual encoder (fusion off): image-to-text and text-to-image R@1 of ``n``
  images against the first caption of each (chance ``1 / n``);
- ITM with random negatives: each image with its caption and with an unmatched caption of
  another image drawn by the collator (verified against the world's ground truth when it has
  one); chance 0.5;
- ITM with hard negatives, FIBER's training rows: each pair ``(img_i, txt_i)``, the image with
  the text of another image its ITC embedding ranks highest, and the text with the image ranked
  highest, among the ``n`` retrieval pairs; never a caption of the same image, nor one the
  collator rejects for it (its own captions; what the ground truth says may hold). Chance 2/3
  (always "no");
- MLM accuracy on the fused text with the image, and with another image of the batch (the gap is
  how much MLM uses the image); chance: the most frequent masked token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vlparse.eval.metrics import majority_fraction, recall_at_k
from vlparse.models.fiber.pretraining import first_text
from vlparse.objectives.itm import itm_accuracy
from vlparse.processing.tokenization import IGNORE_INDEX

__all__ = ["evaluate_fiber_pretrain"]


@dataclass
class _Tally:
    itm_correct: int = 0
    itm_total: int = 0
    mlm_correct: int = 0
    mlm_total: int = 0
    wrong_correct: int = 0
    wrong_total: int = 0
    targets: list[Tensor] = field(default_factory=list)
    # the retrieval pairs: images (CPU), texts, ITC embeddings, records, image ids, captions
    images: list[Tensor] = field(default_factory=list)
    ids: list[Tensor] = field(default_factory=list)
    mask: list[Tensor] = field(default_factory=list)
    image_emb: list[Tensor] = field(default_factory=list)
    text_emb: list[Tensor] = field(default_factory=list)
    records: list[int] = field(default_factory=list)
    image_ids: list[Tensor] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def _itm_logits(model, images: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """``(T, 2)`` matching logits of ``T`` pairs (fused pass)."""
    return model.itm_logits(model(images, ids, mask).pooler_output)


def _mlm_hits(model, images: Tensor, ids: Tensor, mask: Tensor, labels: Tensor) -> int:
    states = model(images, ids, mask).text_hidden_state
    selected = labels != IGNORE_INDEX
    return int((model.mlm_logits(states[selected]).argmax(-1) == labels[selected]).sum())


def _score_batch(model, batch: dict, tally: _Tally) -> None:
    """ITM with the collator's random negatives; MLM with the image and with the next one."""
    images, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
    b = images.shape[0]
    logits = _itm_logits(model, images.repeat(2, 1, 1, 1),
                         torch.cat([ids[:, 0], ids[:, 1]]), torch.cat([mask[:, 0], mask[:, 1]]))
    labels = torch.cat([torch.ones(b), torch.zeros(b)]).long().to(logits.device)
    c, t = itm_accuracy(logits, labels)
    tally.itm_correct, tally.itm_total = tally.itm_correct + c, tally.itm_total + t
    mlm = (first_text(batch["mlm_input_ids"]), mask[:, 0], first_text(batch["mlm_labels"]))
    targets = mlm[2][mlm[2] != IGNORE_INDEX]
    tally.targets.append(targets.cpu())
    tally.mlm_correct += _mlm_hits(model, images, *mlm)
    tally.mlm_total += int(targets.numel())
    if b > 1:
        tally.wrong_correct += _mlm_hits(model, images.roll(1, 0), *mlm)
        tally.wrong_total += int(targets.numel())


def _keep_pairs(model, batch: dict, tally: _Tally, room: int) -> None:
    """The first ``room`` pairs of the batch for retrieval and hard negatives."""
    take = min(room, batch["image"].shape[0])
    images = batch["image"][:take]
    ids, mask = batch["input_ids"][:take, 0], batch["attention_mask"][:take, 0]
    tally.images.append(images.cpu())
    tally.ids.append(ids)
    tally.mask.append(mask)
    tally.image_emb.append(model.encode_image(images).embeds.float())
    tally.text_emb.append(model.encode_text(ids, mask).embeds.float())
    tally.records += [int(r) for r in batch["record"][:take]]
    tally.image_ids.append(batch["image_id"][:take])
    tally.texts += [t[0] for t in batch["texts"][:take]]


def _hardest(scores: Tensor, allowed) -> list[int | None]:
    """For each row the highest-scoring column that ``allowed(row, column)`` accepts."""
    out: list[int | None] = []
    for i, order in enumerate(scores.argsort(dim=1, descending=True).tolist()):
        out.append(next((j for j in order if allowed(i, j)), None))
    return out


def _hard_itm(model, tally: _Tally, sims: Tensor, rejects, batch_size: int,
              device: torch.device) -> dict[str, float]:
    """ITM over each pair, its hardest text and its hardest image (see the module docstring)."""
    image_ids = torch.cat(tally.image_ids).tolist()
    recs, texts = tally.records, tally.texts

    def text_ok(i: int, j: int) -> bool:  # text j as a negative of image i
        return image_ids[i] != image_ids[j] and not rejects(recs[i], texts[j])

    def image_ok(i: int, j: int) -> bool:  # image j as a negative of text i
        return image_ids[i] != image_ids[j] and not rejects(recs[j], texts[i])

    rows = [(i, i, 1) for i in range(len(recs))]
    rows += [(i, j, 0) for i, j in enumerate(_hardest(sims, text_ok)) if j is not None]
    rows += [(j, i, 0) for i, j in enumerate(_hardest(sims.t(), image_ok)) if j is not None]
    images, ids, mask = torch.cat(tally.images), torch.cat(tally.ids), torch.cat(tally.mask)
    correct = 0
    for start in range(0, len(rows), batch_size):
        chunk = torch.tensor(rows[start:start + batch_size])
        img, txt, labels = chunk[:, 0], chunk[:, 1], chunk[:, 2]
        logits = _itm_logits(model, images[img].to(device), ids[txt.to(ids.device)],
                             mask[txt.to(mask.device)])
        correct += itm_accuracy(logits, labels.to(logits.device))[0]
    negatives = len(rows) - len(recs)
    return {"itm_hard_acc": correct / len(rows), "itm_hard_pairs": len(rows),
            "itm_hard_chance": max(len(recs), negatives) / len(rows)}


def _retrieval(model, tally: _Tally, rejects, batch_size: int,
               device: torch.device) -> dict[str, float]:
    """ITC R@1 both ways over the kept pairs, then ITM with hard negatives among them."""
    sims = torch.cat(tally.image_emb) @ torch.cat(tally.text_emb).t()
    n = sims.shape[0]
    gt = torch.eye(n, dtype=torch.bool, device=sims.device)
    out = {"i2t_r1": recall_at_k(sims, gt, (1,))[1], "t2i_r1": recall_at_k(sims.t(), gt, (1,))[1],
           "i2t_r1_chance": 1.0 / n, "retrieval_images": n}
    if n > 1:
        out.update(_hard_itm(model, tally, sims, rejects, batch_size, device))
    return out


@torch.no_grad()
def evaluate_fiber_pretrain(
    model,
    dataset,
    collator,
    device: torch.device | str = "cpu",
    num_images: int = 500,
    batch_size: int = 32,
    retrieval_images: int = 100,
    num_workers: int = 0,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """ITC retrieval, ITM (random and hard negatives) and MLM accuracy on held-out data.

    Args:
        model: a :class:`~vlparse.models.fiber.FiberModel`.
        dataset: a :class:`~vlparse.data.pretrain.PretrainDataset` over held-out records.
        collator: its :class:`~vlparse.data.collate.PretrainCollator` with one matched and one
            unmatched caption per image (seeded: the evaluation is deterministic).
        num_images: images for ITM with random negatives and MLM.
        retrieval_images: ``n``, the first images kept for ITC retrieval (``n x n`` pairs) and
            the hard negatives drawn among them.

    Returns:
        ``itm_acc`` / ``itm_chance`` / ``itm_pairs`` (random negatives), ``itm_hard_acc`` /
        ``itm_hard_chance`` / ``itm_hard_pairs``, ``mlm_acc`` / ``mlm_chance`` / ``mlm_tokens``,
        ``mlm_acc_wrong_image``, ``i2t_r1`` / ``t2i_r1`` / ``i2t_r1_chance`` /
        ``retrieval_images``, ``num_images``.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    n = min(num_images, len(dataset))
    loader = DataLoader(Subset(dataset, list(range(n))), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collator)
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    tally = _Tally()
    with autocast:
        for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            _score_batch(model, batch, tally)
            room = retrieval_images - len(tally.records)
            if room > 0:
                _keep_pairs(model, batch, tally, room)
        result: dict[str, float] = {
            "itm_acc": tally.itm_correct / max(1, tally.itm_total), "itm_chance": 0.5,
            "itm_pairs": tally.itm_total,
            "mlm_acc": tally.mlm_correct / max(1, tally.mlm_total),
            "mlm_chance": majority_fraction(torch.cat(tally.targets)) if tally.targets
            else float("nan"),
            "mlm_tokens": tally.mlm_total,
            "mlm_acc_wrong_image": tally.wrong_correct / max(1, tally.wrong_total),
            "num_images": n,
        }
        if tally.records:
            result.update(_retrieval(model, tally, collator.rejects, batch_size, device))
    model.train(was_training)
    return result
