"""Coarse-grained pre-training of FIBER as a task the trainer runs (:class:`FiberPretrainTask`,
what ``PretrainTask(cfg, ...)`` gives for a config of family ``fiber``).

Each image comes with one of its captions (the collator draws it, tokenises the whole sequence
with the backbone's tokenizer, masks it for MLM and adds the image's id and two uniforms for the
model's negative draws). The model runs its passes
(:meth:`~vlparse.models.fiber.FiberModel.forward_pretrain`: ITC over the batch gathered across
processes, ITM with hard negatives drawn from the ITC similarities, MLM on the fused text) and
:func:`~vlparse.objectives.pretrain_loss` sums ``lambda_itc * ITC + lambda_itm * ITM +
lambda_mlm * MLM`` (FIBER: weights 1). Learning rates by module role come from the model's
parameter groups (cross-modal parameters and heads x5).

Held-out evaluation (:func:`~vlparse.tasks.pretrain_fiber_eval.evaluate_fiber_pretrain`): ITC
retrieval both ways, ITM with random and with hard negatives, MLM, each beside chance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlparse.data import PretrainCollator
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.errors import ConfigError
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.models.fiber.pretraining import NOISE_PER_ITEM
from vlparse.objectives import pretrain_loss
from vlparse.objectives.mlm import ramp_weight
from vlparse.tasks.pretrain import PretrainTask, step_scalars
from vlparse.tasks.pretrain_fiber_eval import evaluate_fiber_pretrain
from vlparse.train.protocol import StepContext, StepOutput

__all__ = ["FiberPretrainTask", "fiber_loss_weights"]


def fiber_loss_weights(objectives: Any, step: int = 0) -> dict[str, float]:
    """The weight of each term of :func:`~vlparse.objectives.pretrain_loss` at optimizer step
    ``step`` (MLM follows ``mlm_delay`` / ``mlm_ramp``)."""
    o = objectives
    return {"itc": o.lambda_itc, "itm": o.lambda_itm,
            "mlm": o.lambda_mlm * ramp_weight(step, o.mlm_delay, o.mlm_ramp)}


class FiberPretrainTask(PretrainTask):
    """FIBER's coarse-grained pre-training on the caption data sets of a manifest (arguments as
    :class:`~vlparse.tasks.pretrain.PretrainTask`'s)."""

    def _check(self, world_size: int) -> None:
        o, tr = self.cfg.objectives, self.cfg.train
        if not (o.lambda_itc or o.lambda_itm or o.lambda_mlm):
            raise ConfigError("objectives: every loss weight (lambda_itc, lambda_itm, "
                              "lambda_mlm) is 0; nothing to train")
        micro = tr.batch_size // (tr.grad_accum * world_size)
        pool = micro * (world_size if o.hard_negative_pool == "gathered" else 1)
        if pool < 2:
            raise ConfigError(
                f"objectives.hard_negative_pool={o.hard_negative_pool}: ITM draws its negatives "
                f"from {pool} pair(s) ({micro} per process = train.batch_size {tr.batch_size} / "
                f"grad_accum {tr.grad_accum} / {world_size} processes); it needs at least 2"
            )

    captions_per_image = 1
    """One matched caption per image and item (an epoch over pairs visits every caption)."""

    def _processor(self) -> FiberProcessor:
        """The backbone's tokenizer and the image transform; the tokenizer must fit the text
        backbone (its vocabulary, its padding id)."""
        processor = FiberProcessor.from_config(self.cfg.model)
        t, ids = self.cfg.model.text, processor.special_ids
        if ids["vocab_size"] > t.vocab_size:
            raise ConfigError(f"model.text.tokenizer '{t.tokenizer}' has {ids['vocab_size']} "
                              f"tokens, more than model.text.vocab_size={t.vocab_size}")
        if ids["pad"] != t.pad_token_id:
            raise ConfigError(f"model.text.pad_token_id={t.pad_token_id}, but the tokenizer "
                              f"'{t.tokenizer}' pads with {ids['pad']}; set it to {ids['pad']}")
        return processor

    def _make_collator(self, records, seed: int, truth: SceneTruth | None, train: bool,
                       numbered=None) -> PretrainCollator:
        """Training: one matched caption per image, masked for MLM, and the uniforms of the
        model's negative draws. Evaluation: also one unmatched caption per image (verified
        against the ground truth when there is one) for ITM with random negatives.
        ``numbered``: as :meth:`PretrainTask._make_collator`'s."""
        numbered = records if numbered is None else numbered
        return PretrainCollator(
            records, self.processor, 0, num_pos=self.captions_per_image, num_neg=0 if train else 1,
            mlm_prob=self.cfg.objectives.mlm_prob, seed=seed, negatives="dataset",
            negative_filter=truth.negative_filter(numbered) if truth is not None else None,
            item_noise=NOISE_PER_ITEM if train else 0,
        )

    @property
    def find_unused_parameters(self) -> bool:
        """A term weighted 0 leaves its head without a gradient (MLM off, or waiting, skips
        its rows)."""
        o = self.cfg.objectives
        return not (o.lambda_itc and o.lambda_itm and o.lambda_mlm) or o.mlm_delay > 0

    def build_model(self) -> FiberModel:
        """The model of ``cfg.model`` with the pass settings of ``cfg.objectives``, initialised
        from the sources the config names (unless ``init_weights`` is off)."""
        cfg = self.cfg
        model = FiberModel(cfg.model, objectives=cfg.objectives)
        if self.init_weights and (cfg.model.visual.pretrained or cfg.model.text.pretrained):
            for name, report in model.load_pretrained().items():
                self.log(f"pretrained {name}: {report}")
        if cfg.train.compile:  # static shapes only: no host synchronisation in the step
            model.set_static_shapes(True)
            self.log("train.compile: FIBER's towers are not compiled (its fused pass runs them "
                     "block by block); static shapes on (the MLM head on every text position)")
        return model

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        """The weighted loss of one micro-batch; logs its parts, the accuracies of ITC, ITM and
        MLM, the temperature, the negatives' fallbacks and the gates (and, with a schedule, the
        MLM weight)."""
        o = self.cfg.objectives
        weights = fiber_loss_weights(o, ctx.step)
        output = model.forward_pretrain(batch, run_masked=weights["mlm"] > 0)
        losses = pretrain_loss(output, weights, ctx.reduce_count)
        scalars = step_scalars(losses, output)
        if o.mlm_delay or o.mlm_ramp:
            scalars["mlm_weight"] = weights["mlm"]
        return StepOutput(losses.total, scalars, losses.counts)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Held-out metrics (:func:`~vlparse.tasks.pretrain_fiber_eval.
        evaluate_fiber_pretrain`) over ``train.eval_images`` images; bf16 autocast on CUDA
        unless ``train.precision=fp32``."""
        dataset = self.eval_dataset()
        if dataset is None:
            return {}
        tr = self.cfg.train
        amp = torch.bfloat16 if device.type == "cuda" and tr.precision != "fp32" else None
        return evaluate_fiber_pretrain(model, dataset, self._eval_collator, device=device,
                                       num_images=tr.eval_images,
                                       batch_size=max(1, min(64, tr.batch_size)),
                                       autocast_dtype=amp, progress=tr.progress)

    def curve_keys(self) -> list[str]:
        return ["loss", "itc", "itm", "mlm", "itc_acc", "itm_acc", "mlm_acc", "temperature",
                "lr"]
