"""Pre-training of the Visual Parsing model: the losses of one batch and held-out evaluation.

Batch composition (paper section 4.1): every image comes with ``P = num_pos`` matched captions
and ``N = num_neg`` captions of other images (2 and 2 in the paper). The visual parser runs once
per image and its tokens are reused for the ``P + N`` texts; MLM and MFR are computed on the
matched pairs only. The unmatched captions are drawn by the data set from other images of the
whole data set (not only the mini-batch), with a generator keyed by ``(seed, epoch, index)``, so
that a batch is the same whatever the number of processes.

With ``objectives.itm_pass = "separate"`` (default) ITM and VLA see clean inputs of all ``P + N``
pairs, and a second pass over the ``P`` matched pairs carries the MLM-masked text and the
MFR-masked visual tokens (not run while ``objectives.mlm_delay`` weights MLM 0). With
``"shared"`` one pass over the ``P + N`` pairs carries the masked inputs of all pairs (the masks
then say nothing about the label) and all losses come from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from vlparse.config import ObjectiveConfig
from vlparse.objectives import itc, itm, mfr, mlm, ot

__all__ = ["PretrainLosses", "pretrain_losses", "mfr_visual_mask", "run_pretrain"]


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass
class PretrainLosses:
    """Weighted total and its parts (scalars). ``counts`` hold integer statistics for metrics.
    ``mlm`` and ``mfr`` are ``None`` in a step that did not run the masked pass."""

    loss: Tensor
    mlm: Tensor | None
    itm: Tensor
    vla: Tensor
    mfr: Tensor | None
    counts: dict[str, int] = field(default_factory=dict)
    visual_spread: Tensor | None = None
    itc: Tensor | None = None

    def scalars(self) -> dict[str, float]:
        parts = {"loss": self.loss, "mlm": self.mlm, "itm": self.itm, "vla": self.vla,
                 "mfr": self.mfr, "itc": self.itc}
        out = {k: float(v.detach()) for k, v in parts.items() if v is not None}
        if self.visual_spread is not None:
            out["visual_spread"] = float(self.visual_spread)
        c = self.counts
        if c.get("itm_total"):
            out["itm_acc"] = c["itm_correct"] / c["itm_total"]
        if c.get("mlm_total"):
            out["mlm_acc"] = c["mlm_correct"] / c["mlm_total"]
        return out


def mfr_visual_mask(cfg: ObjectiveConfig, noise: Tensor, attention: Tensor | None) -> Tensor | None:
    """The ``(B, m)`` MFR mask, or ``None`` when MFR is off.

    The anchor token is ``argmax(noise)``; ``attention`` mode adds its top attended tokens in the
    parser's last layer, ``random`` mode the tokens of largest noise.
    """
    if cfg.mfr_mode == "off":
        return None
    m = noise.shape[1]
    k = mfr.num_mfr_tokens(m, cfg.mfr_k, cfg.mfr_ratio)
    anchor = noise.argmax(dim=1)
    if cfg.mfr_mode == "attention":
        if attention is None:
            raise ValueError(
                "objectives.mfr_mode='attention' needs the visual embedder's attention; this "
                "embedder has none. Use objectives.mfr_mode=random or off."
            )
        return mfr.attention_guided_mask(attention.float(), anchor, k)
    return mfr.random_mask(noise, anchor, k)


def _mlm_terms(
    model, out, labels: Tensor, reduce_count: Callable[[Tensor], Tensor]
) -> tuple[Tensor, int, int]:
    """MLM loss over the masked positions of ``labels (T, L)`` (others -100)."""
    sel = labels != -100
    targets = labels[sel]
    logits = model.mlm_head(out.text[sel])
    normalizer = reduce_count(sel.sum().to(torch.float32)).clamp(min=1.0)
    loss = mlm.mlm_loss(logits.float(), targets, normalizer=normalizer)
    correct, total = mlm.mlm_accuracy(logits, targets)
    return loss, correct, total


def pretrain_losses(
    model,
    batch: dict[str, Tensor],
    cfg: ObjectiveConfig,
    reduce_count: Callable[[Tensor], Tensor] = _identity,
    mlm_weight: float = 1.0,
) -> PretrainLosses:
    """Losses of one pre-training batch.

    Args:
        model: a :class:`~vlparse.models.single_stream.VisualParsingModel` (or a DDP wrapper's
            ``module``; heads are called on it directly).
        batch: from :func:`vlparse.data.collate.collate_pretrain`: ``image (B,3,S,S)``,
            ``input_ids`` and ``attention_mask`` ``(B, P+N, L)``, ``mlm_input_ids`` and
            ``mlm_labels`` ``(B, P', L)`` with ``P' >= P``, ``mfr_noise (B, m)``.
        cfg: the objectives config.
        reduce_count: sums a count over processes and divides by the world size, so that token
            level losses are normalised by the global count (identity in one process).
        mlm_weight: factor of the MLM term in the total (the schedule of
            ``objectives.mlm_delay`` / ``mlm_ramp``; 1 in the paper). With the separate pass and
            a weight of 0 the masked pass is not run, so MFR waits with MLM and the step costs
            about a quarter less; the shared pass still computes and reports both.

    Returns:
        the total ``mlm_weight * MLM + lambda_itm * (ITM + vla_weight * VLA) + lambda_mfr *
        MFR`` (plus ``lambda_itc * ITC`` when that option is on; without the MLM and MFR terms
        when the masked pass is skipped) and parts.
    """
    images = batch["image"]
    bsz, n_txt, seq = batch["input_ids"].shape
    p = cfg.num_pos
    if n_txt != cfg.num_pos + cfg.num_neg:
        raise ValueError(f"batch has {n_txt} texts per image, config expects {p}+{cfg.num_neg}")

    vis = model.encode_image(images, output_attentions=cfg.mfr_mode == "attention")
    tokens = vis.tokens
    vmask = mfr_visual_mask(cfg, batch["mfr_noise"], vis.attention)
    labels_itm = itm.itm_labels(bsz, p, cfg.num_neg, device=images.device)

    shared = cfg.itm_pass == "shared"
    if shared:
        ids = batch["mlm_input_ids"][:, :n_txt]
        if ids.shape[1] != n_txt:
            raise ValueError("itm_pass='shared' needs MLM-masked versions of all texts")
        out = model.fuse(
            tokens.repeat_interleave(n_txt, 0),
            ids.reshape(-1, seq),
            batch["attention_mask"].reshape(-1, seq),
            visual_mask=None if vmask is None else vmask.repeat_interleave(n_txt, 0),
        )
    else:
        out = model.fuse(
            tokens.repeat_interleave(n_txt, 0),
            batch["input_ids"].reshape(-1, seq),
            batch["attention_mask"].reshape(-1, seq),
        )

    # ITM + VLA on all pairs.
    logits_itm = model.itm_head(out.cls)
    loss_itm = itm.itm_loss(logits_itm.float(), labels_itm)
    text_mask = batch["attention_mask"].reshape(-1, seq).bool()
    vis_mask = torch.ones(out.visual.shape[:2], dtype=torch.bool, device=images.device)
    if cfg.vla_weight > 0:
        dist = ot.ot_distance(
            out.visual.float(),
            out.text.float(),
            vis_mask,
            text_mask,
            beta=cfg.ipot_beta,
            iters=cfg.ipot_iters,
        )
        loss_vla = ot.vla_loss(dist, labels_itm)
    else:
        loss_vla = logits_itm.new_zeros(())
    itm_correct, itm_total = itm.itm_accuracy(logits_itm, labels_itm)

    counts = {"itm_correct": itm_correct, "itm_total": itm_total}
    total = cfg.lambda_itm * (loss_itm + cfg.vla_weight * loss_vla)
    loss_mlm = loss_mfr = None
    if shared or mlm_weight > 0:
        loss_mlm, loss_mfr, mlm_correct, mlm_total = _masked_terms(
            model, out, tokens, vmask, batch, labels_itm, cfg, reduce_count
        )
        total = total + mlm_weight * loss_mlm + cfg.lambda_mfr * loss_mfr
        counts.update(mlm_correct=mlm_correct, mlm_total=mlm_total)
    loss_itc = None
    if cfg.lambda_itc > 0:
        loss_itc = _itc_term(model, tokens, batch, p, cfg.itc_temperature)
        total = total + cfg.lambda_itc * loss_itc
    # std of the parser's tokens across the images of the batch: near 0 means the parser has
    # collapsed to one output whatever the image (see the quickstart config)
    spread = tokens.detach().float().std(0).mean() if bsz > 1 else None
    return PretrainLosses(total, loss_mlm, loss_itm, loss_vla, loss_mfr, counts, spread, loss_itc)


def _masked_terms(
    model,
    out,
    tokens: Tensor,
    vmask: Tensor | None,
    batch: dict[str, Tensor],
    labels_itm: Tensor,
    cfg: ObjectiveConfig,
    reduce_count: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor, int, int]:
    """``(MLM, MFR, mlm_correct, mlm_total)`` on the matched pairs: from the shared pass ``out``,
    or from a second pass over the masked inputs."""
    bsz, n_txt, seq = batch["input_ids"].shape
    p = cfg.num_pos
    mlm_labels = batch["mlm_labels"][:, :p].reshape(-1, seq)
    if cfg.itm_pass == "shared":
        matched = labels_itm.bool()
        hidden_text = out.text[matched]
        hidden_vis = out.visual[matched]
        mlm_out = _Slice(hidden_text, hidden_vis)
        vmask_m = None if vmask is None else vmask.repeat_interleave(n_txt, 0)[matched]
    else:
        vmask_m = None if vmask is None else vmask.repeat_interleave(p, 0)
        mlm_out = model.fuse(
            tokens.repeat_interleave(p, 0),
            batch["mlm_input_ids"][:, :p].reshape(-1, seq),
            batch["attention_mask"][:, :p].reshape(-1, seq),
            visual_mask=vmask_m,
        )
    loss_mlm, mlm_correct, mlm_total = _mlm_terms(model, mlm_out, mlm_labels, reduce_count)

    if vmask_m is not None:
        pred = model.mfr_head(mlm_out.visual[vmask_m])
        target = tokens.detach().repeat_interleave(p, 0)[vmask_m]
        per = target.shape[-1] if cfg.mfr_reduction == "mean_channel" else 1
        loss_mfr = mfr.mfr_loss(pred.float(), target.float(), num_samples=bsz * p * per)
    else:
        loss_mfr = loss_mlm.new_zeros(())
    return loss_mlm, loss_mfr, mlm_correct, mlm_total


def _itc_term(model, tokens: Tensor, batch: dict[str, Tensor], p: int, temperature: float):
    """The optional contrastive term: each image against the clean matched captions of the batch."""
    if model.itc_head is None:
        raise ValueError("objectives.lambda_itc > 0 needs a model built with model.itc_dim > 0")
    bsz, _, seq = batch["input_ids"].shape
    ids = batch["input_ids"][:, :p].reshape(-1, seq)
    mask = batch["attention_mask"][:, :p].reshape(-1, seq)
    text = model.itc_head.text(model.text_embed.word_embeddings(ids), mask)
    image = model.itc_head.image(tokens)
    owner = torch.arange(bsz, device=tokens.device).repeat_interleave(p)
    return itc.itc_loss(image, text, owner, temperature)


@dataclass
class _Slice:
    """The matched rows of a shared pass, shaped like a FusionOutput for the heads."""

    text: Tensor
    visual: Tensor


# --------------------------------------------------------------------------- the whole run


def _log_load_reports(reports: dict, logger_print: Callable[[str], None]) -> None:
    for name, report in reports.items():
        logger_print(f"pretrained {name}: {report}")


def run_pretrain(
    cfg,
    manifest_path: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    evaluate: bool = True,
) -> dict:
    """Pre-train a Visual Parsing model on the caption data sets of a manifest.

    Writes checkpoints, ``log.jsonl``, TensorBoard events, ``config.yaml``, ``run_info.json``,
    ``loss_curves.png`` and ``summary.json`` (held-out metrics beside chance) under ``out_dir``.
    Works in one process and under ``torchrun``.

    Returns:
        the summary dict (also written to ``summary.json`` by the main process).
    """
    from vlparse.config import to_dict
    from vlparse.data import read_pretrain_records
    from vlparse.data.collate import collate_pretrain
    from vlparse.data.manifest import load_manifest
    from vlparse.data.pretrain import PretrainDataset
    from vlparse.data.synthetic.truth import SceneTruth
    from vlparse.models.single_stream import VisualParsingModel
    from vlparse.models.visual import require_attention
    from vlparse.processing.tokenization import build_tokenizer, special_ids
    from vlparse.tasks.pretrain_eval import evaluate_pretrain
    from vlparse.train.distributed import cleanup, init_distributed
    from vlparse.train.logging import plot_curves
    from vlparse.train.loop import fit
    from vlparse.train.protocol import StepOutput

    require_attention(cfg.model.visual, cfg.objectives.mfr_mode)
    out_dir = Path(out_dir)
    dist = init_distributed()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    tokenizer = build_tokenizer(cfg.model.text.tokenizer)
    ids = special_ids(tokenizer)
    vocab = cfg.model.text.vocab_size or ids["vocab_size"]
    model = VisualParsingModel(cfg.model, vocab, cls_token_id=ids["cls"], sep_token_id=ids["sep"])
    if not resume and (cfg.model.visual.pretrained or cfg.model.text.pretrained):
        reports = model.load_pretrained()
        if dist.is_main:
            _log_load_reports(reports, print)
    if cfg.train.compile:
        model.visual.compile()
        model.encoder.compile()

    manifest = load_manifest(manifest_path)
    o = cfg.objectives
    records = read_pretrain_records(manifest, cfg.data.train_sets, cfg.data.train_splits)
    truth = SceneTruth.from_manifest(manifest) if cfg.data.verify_negatives == "auto" else None
    if truth is not None and dist.is_main:
        print(f"unmatched captions verified against the ground truth of {len(truth)} scenes "
              "(data.verify_negatives=off draws them at random)")

    def make_dataset(recs, seed: int) -> PretrainDataset:
        return PretrainDataset(
            recs,
            tokenizer,
            image_size=cfg.model.visual.image_size,
            max_text_len=cfg.model.text.max_text_len,
            num_visual_tokens=model.num_visual_tokens,
            num_pos=o.num_pos,
            num_neg=o.num_neg,
            mlm_prob=o.mlm_prob,
            seed=seed,
            on_error=cfg.data.on_error,
            mlm_all=o.itm_pass == "shared",
            truth=truth,
        )

    dataset = make_dataset(records, cfg.train.seed)
    micro = cfg.train.batch_size // (cfg.train.grad_accum * dist.world_size)
    if o.itm_negatives == "batch" and micro % o.itm_negative_group:
        raise ValueError(
            f"objectives.itm_negatives='batch': the micro-batch of each process ({micro} = "
            f"train.batch_size {cfg.train.batch_size} / grad_accum {cfg.train.grad_accum} / "
            f"{dist.world_size} processes) must be a multiple of objectives.itm_negative_group "
            f"({o.itm_negative_group}), so that no group is split"
        )
    collate = partial(
        collate_pretrain,
        negatives=o.itm_negatives,
        num_pos=o.num_pos,
        group=o.itm_negative_group,
        may_describe=dataset.may_describe if truth is not None else None,
    )
    val_dataset = None
    if evaluate:
        val_records = read_pretrain_records(manifest, [cfg.data.val_set], [cfg.data.val_split])
        val_dataset = make_dataset(val_records, cfg.train.seed + 1)

    amp = torch.bfloat16 if dist.device.type == "cuda" and cfg.train.precision != "fp32" else None

    def eval_fn(m) -> dict[str, float]:
        return evaluate_pretrain(
            m,
            val_dataset,
            device=dist.device,
            num_images=cfg.train.eval_images,
            batch_size=max(1, min(64, cfg.train.batch_size)),
            autocast_dtype=amp,
            progress=cfg.train.progress,
        )

    def step_fn(m, batch, reduce_count, step) -> StepOutput:
        weight = mlm.ramp_weight(step, o.mlm_delay, o.mlm_ramp)
        losses = pretrain_losses(m, batch, o, reduce_count, mlm_weight=weight)
        scalars = losses.scalars()
        if o.mlm_delay or o.mlm_ramp:
            scalars["mlm_weight"] = weight
        return StepOutput(losses.loss, scalars, losses.counts)

    result = fit(
        model=model,
        dataset=dataset,
        collate_fn=collate,
        step_fn=step_fn,
        optim_cfg=cfg.optim,
        train_cfg=cfg.train,
        data_cfg=cfg.data,
        run_dir=out_dir,
        dist=dist,
        config_dict=to_dict(cfg),
        resume=resume,
        eval_fn=eval_fn if evaluate else None,
        # heads without a gradient: MFR or VLA off, or the separate masked pass skipped during
        # mlm_delay (the shared pass runs the masked terms anyway)
        find_unused_parameters=o.mfr_mode == "off"
        or o.vla_weight == 0
        or (o.mlm_delay > 0 and o.itm_pass == "separate"),
        desc="pretrain",
    )
    summary = {
        "steps": result.step,
        "epochs_completed": result.epoch,
        "images_seen": result.images_seen,
        "bad_images": result.bad_images,
        "train_images": len(dataset),
        "checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "wall_s": time.perf_counter() - t0,
        "world_size": dist.world_size,
        "model": cfg.model.name,
        "negatives_verified": truth is not None,
        "held_out": result.final_metrics,
    }
    if dist.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_curves(
            out_dir / "log.jsonl",
            out_dir / "loss_curves.png",
            keys=["loss", "mlm", "itm", "vla", "mfr", "itm_acc", "mlm_acc", "visual_spread", "lr"]
            + (["mlm_weight"] if o.mlm_delay or o.mlm_ramp else []),
            title=f"vlparse pre-training ({cfg.model.name})",
        )
    cleanup()
    return summary
