"""Pre-training as a task the trainer runs (:class:`PretrainTask`): of the Visual Parsing model
here, of FIBER in :mod:`vlparse.tasks.pretrain_fiber` (``PretrainTask(cfg, ...)`` gives the task of
``cfg.model.family``).

Batch composition (paper section 4.1): every image comes with ``P = num_pos`` matched captions
and ``N = num_neg`` captions of other images (2 and 2 in the paper); the collator
(:class:`~vlparse.data.collate.PretrainCollator`) draws them, tokenises and masks. The model runs
its passes (:meth:`~vlparse.models.single_stream.VisualParsingModel.forward_pretrain`: ITM and
VLA on clean inputs of all ``P + N`` pairs, then MLM and MFR on the matched pairs) and
:func:`~vlparse.objectives.pretrain_loss` weights the terms: ``lambda_itm * ITM +
lambda_itm * vla_weight * VLA + w_mlm * MLM + lambda_mfr * MFR``, where ``w_mlm`` follows the
``objectives.mlm_delay`` / ``mlm_ramp`` schedule; while it is 0 the masked pass is not run (MFR
waits with MLM, and the step costs about a quarter less).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlparse.config import PretrainConfig
from vlparse.data import PretrainCollator, PretrainDataset, read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.models.processor import VisualParsingProcessor
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.visual import require_attention
from vlparse.objectives import pretrain_loss
from vlparse.objectives.mlm import ramp_weight
from vlparse.processing.tokenization import report_unknown_tokens
from vlparse.tasks.pretrain_eval import evaluate_pretrain
from vlparse.train.protocol import StepContext, StepOutput

__all__ = ["PretrainTask", "loss_weights", "run_pretrain", "step_scalars"]


def loss_weights(cfg: PretrainConfig, mlm_weight: float) -> dict[str, float]:
    """The weight of each term of :func:`~vlparse.objectives.pretrain_loss`."""
    o = cfg.objectives
    return {"itm": o.lambda_itm, "vla": o.lambda_itm * o.vla_weight, "mlm": mlm_weight,
            "mfr": o.lambda_mfr}


def step_scalars(losses: Any, output: Any) -> dict[str, float]:
    """What a pre-training step logs: the total, each computed term, the model's diagnostics
    and the accuracies of the terms that count (``itm_acc``, ``mlm_acc``, ``itc_acc``)."""
    scalars = {"loss": float(losses.total.detach())}
    scalars.update({k: float(v.detach()) for k, v in losses.parts.items()})
    scalars.update({k: float(v) for k, v in output.diagnostics.items()})
    for name in ("itm", "mlm", "itc"):
        if losses.counts.get(f"{name}_total"):
            scalars[f"{name}_acc"] = (losses.counts[f"{name}_correct"]
                                      / losses.counts[f"{name}_total"])
    return scalars


class PretrainTask:
    """Pre-training on the caption data sets of a manifest (the trainer's task protocol,
    :class:`~vlparse.train.protocol.TrainTask`).

    ``PretrainTask(cfg, ...)`` is the task of ``cfg.model.family``: a FIBER config gives a
    :class:`~vlparse.tasks.pretrain_fiber.FiberPretrainTask` (a subclass that replaces the
    family's parts: processor, collator settings, model, step and evaluation).

    Args:
        cfg: the pre-training config.
        manifest_path: the data manifest.
        world_size: processes the global batch is split over (checks that batch negatives
            groups are not split).
        evaluate: read the held-out records (``data.val_set`` / ``val_split``).
        init_weights: ``build_model`` loads the initialisation sources the config names (off
            when a checkpoint replaces them anyway, on ``--resume``).
        log: where start-up lines go (``None``: nowhere, e.g. on processes other than the
            first).
    """

    name = "pretrain"

    def __new__(cls, cfg: PretrainConfig | None = None, *args: Any, **kwargs: Any):
        if cls is PretrainTask and cfg is not None and cfg.model.family == "fiber":
            from vlparse.tasks.pretrain_fiber import FiberPretrainTask

            cls = FiberPretrainTask
        return super().__new__(cls)

    def __init__(self, cfg: PretrainConfig, manifest_path: str | Path, *, world_size: int = 1,
                 evaluate: bool = True, init_weights: bool = True,
                 log: Callable[[str], None] | None = print) -> None:
        self.cfg, self.init_weights, self._log = cfg, init_weights, log
        self._check(world_size)
        manifest = load_manifest(manifest_path)
        self.processor = self._processor()
        self.records = read_pretrain_records(manifest, cfg.data.train_sets, cfg.data.train_splits)
        self.val_records = (read_pretrain_records(manifest, [cfg.data.val_set],
                                                  [cfg.data.val_split]) if evaluate else None)
        truth = SceneTruth.from_manifest(manifest) if cfg.data.verify_negatives == "auto" else None
        self.negatives_verified = truth is not None
        if truth is not None:
            self.log(f"unmatched captions verified against the ground truth of {len(truth)} "
                     "scenes (data.verify_negatives=off draws them at random)")
        report_unknown_tokens(self.processor.tokenizer,
                              [c for r in self.records for c in r.captions],
                              "the training captions", log=self._log)
        self._collator = self._make_collator(self.records, cfg.train.seed, truth, train=True)
        self._eval_collator = None
        if self.val_records is not None:
            self._eval_collator = self._make_collator(self.val_records, cfg.train.seed + 1,
                                                      truth, train=False)

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def _check(self, world_size: int) -> None:
        """Refuse settings the family cannot run, before any data is read."""
        require_attention(self.cfg.model.visual, self.cfg.objectives.mfr_mode)
        o, tr = self.cfg.objectives, self.cfg.train
        micro = tr.batch_size // (tr.grad_accum * world_size)
        if o.itm_negatives == "batch" and micro % o.itm_negative_group:
            raise ValueError(
                f"objectives.itm_negatives='batch': the micro-batch of each process ({micro} = "
                f"train.batch_size {tr.batch_size} / grad_accum {tr.grad_accum} / "
                f"{world_size} processes) must be a multiple of objectives.itm_negative_group "
                f"({o.itm_negative_group}), so that no group is split"
            )

    def _processor(self) -> VisualParsingProcessor:
        return VisualParsingProcessor.from_config(self.cfg.model)

    def _make_collator(self, records, seed: int, truth: SceneTruth | None,
                       train: bool) -> PretrainCollator:
        o = self.cfg.objectives
        return PretrainCollator(
            records, self.processor, self._visual_tokens(), num_pos=o.num_pos,
            num_neg=o.num_neg, mlm_prob=o.mlm_prob, seed=seed,
            negatives=o.itm_negatives if train else "dataset",
            group=o.itm_negative_group,
            negative_filter=truth.negative_filter(records) if truth is not None else None,
        )

    def _visual_tokens(self) -> int:
        """``m`` of the configured visual embedder (built on the meta device: no memory)."""
        from vlparse.models.visual import build_visual_embedder

        with torch.device("meta"):
            return build_visual_embedder(self.cfg.model.visual).num_tokens

    # ------------------------------------------------------------------ the protocol

    @property
    def find_unused_parameters(self) -> bool:
        """Heads without a gradient: MFR or VLA off, or the masked pass skipped during
        ``mlm_delay``."""
        o = self.cfg.objectives
        return o.mfr_mode == "off" or o.vla_weight == 0 or o.mlm_delay > 0

    def build_model(self) -> VisualParsingModel:
        """The model of ``cfg.model`` with the pass settings of ``cfg.objectives``, initialised
        from the sources the config names (unless ``init_weights`` is off)."""
        ids, cfg = self.processor.special_ids, self.cfg
        model = VisualParsingModel(cfg.model, cfg.model.text.vocab_size or ids["vocab_size"],
                                   cls_token_id=ids["cls"], sep_token_id=ids["sep"],
                                   objectives=cfg.objectives)
        if self.init_weights and (cfg.model.visual.pretrained or cfg.model.text.pretrained):
            for name, report in model.load_pretrained().items():
                self.log(f"pretrained {name}: {report}")
        if cfg.train.compile:
            model.visual.compile()
            model.encoder.compile()
        return model

    def train_dataset(self) -> PretrainDataset:
        return PretrainDataset(self.records, on_error=self.cfg.data.on_error)

    def eval_dataset(self) -> PretrainDataset | None:
        if self.val_records is None:
            return None
        return PretrainDataset(self.val_records, on_error=self.cfg.data.on_error)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collator(items)

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        """The weighted loss of one micro-batch; logs its parts, ``visual_spread``, the
        accuracies and (with a schedule) ``mlm_weight``."""
        o = self.cfg.objectives
        weight = ramp_weight(ctx.step, o.mlm_delay, o.mlm_ramp)
        output = model.forward_pretrain(batch, run_masked=weight > 0)
        losses = pretrain_loss(output, loss_weights(self.cfg, weight), ctx.reduce_count)
        scalars = step_scalars(losses, output)
        if o.mlm_delay or o.mlm_ramp:
            scalars["mlm_weight"] = weight
        return StepOutput(losses.total, scalars, losses.counts)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Held-out metrics (:func:`~vlparse.tasks.pretrain_eval.evaluate_pretrain`) over
        ``train.eval_images`` images; bf16 autocast on CUDA unless ``train.precision=fp32``."""
        dataset = self.eval_dataset()
        if dataset is None:
            return {}
        tr = self.cfg.train
        amp = torch.bfloat16 if device.type == "cuda" and tr.precision != "fp32" else None
        return evaluate_pretrain(model, dataset, self._eval_collator, device=device,
                                 num_images=tr.eval_images,
                                 batch_size=max(1, min(64, tr.batch_size)),
                                 autocast_dtype=amp, progress=tr.progress)

    def summary(self, result: Any) -> dict[str, Any]:
        """``summary.json`` entries beside the trainer's: the held-out metrics and the data."""
        return {"train_images": len(self.records), "model": self.cfg.model.name,
                "negatives_verified": self.negatives_verified,
                "held_out": result.final_metrics}

    def curve_keys(self) -> list[str]:
        o = self.cfg.objectives
        keys = ["loss", "mlm", "itm", "vla", "mfr", "itm_acc", "mlm_acc", "visual_spread", "lr"]
        return keys + (["mlm_weight"] if o.mlm_delay or o.mlm_ramp else [])


# --------------------------------------------------------------------------- the whole run


def run_pretrain(
    cfg: PretrainConfig,
    manifest_path: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    evaluate: bool = True,
    overwrite: bool = False,
) -> dict:
    """Pre-train on the caption data sets of a manifest with the trainer
    (:func:`vlparse.train.trainer.train`).

    Writes checkpoints, ``log.jsonl``, TensorBoard events, ``config.yaml``, ``run_info.json``,
    ``loss_curves.png``, ``summary.json`` (held-out metrics beside chance) and the final model
    (``model/``, :meth:`~vlparse.models.base.PretrainedMixin.save_pretrained` with its
    processor) under ``out_dir``. Works in one process and under ``torchrun``.

    Returns:
        the summary dict (also written to ``summary.json`` by the main process).
    """
    from vlparse.train.distributed import cleanup, init_distributed
    from vlparse.train.trainer import train

    dist = init_distributed()
    task = PretrainTask(cfg, manifest_path, world_size=dist.world_size, evaluate=evaluate,
                        init_weights=not resume, log=print if dist.is_main else None)
    result = train(task, cfg, out_dir, resume=resume, overwrite=overwrite, evaluate=evaluate,
                   dist=dist)
    cleanup()
    return result.summary
