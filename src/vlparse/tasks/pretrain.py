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

The training images come from the manifest (``data.format=manifest``) or stream from the tar
shards of ``vlparse data shard`` (``data.format=shards``, :class:`~vlparse.data.shards.
ShardDataset`): the same collator serves both, a stream's unmatched captions
(``objectives.itm_negatives=dataset``) coming from each item's caption reservoir instead of the
list of all records. The held-out evaluation reads the manifest either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import IterableDataset

from vlparse.config import PretrainConfig
from vlparse.data import PretrainCollator, PretrainDataset, read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.errors import ConfigError
from vlparse.models.processor import VisualParsingProcessor
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.visual import require_attention
from vlparse.objectives import pretrain_loss
from vlparse.objectives.mlm import ramp_weight
from vlparse.processing.tokenization import report_unknown_tokens
from vlparse.tasks.pretrain_eval import evaluate_pretrain
from vlparse.train.protocol import StepContext, StepOutput
from vlparse.utils import autocast_dtype

__all__ = ["PretrainTask", "loss_weights", "run_pretrain", "step_scalars"]


def loss_weights(cfg: PretrainConfig, mlm_weight: float) -> dict[str, float]:
    """The weight of each term of :func:`~vlparse.objectives.pretrain_loss`."""
    o = cfg.objectives
    return {"itm": o.lambda_itm, "vla": o.lambda_itm * o.vla_weight, "mlm": mlm_weight,
            "mfr": o.lambda_mfr}


def step_scalars(losses: Any, output: Any) -> dict[str, Any]:
    """What a pre-training step logs: the total, each computed term and the model's
    diagnostics, as detached tensors (the trainer reads them back once per log window, so that
    the step never waits for the device; it turns the counts of ``losses`` into accuracies)."""
    scalars: dict[str, Any] = {"loss": losses.total.detach()}
    scalars.update({k: v.detach() for k, v in losses.parts.items()})
    scalars.update({k: torch.as_tensor(v).detach() for k, v in output.diagnostics.items()})
    return scalars


class PretrainTask:
    """Pre-training on the caption data sets of a manifest, or on tar shards of them (the
    trainer's task protocol, :class:`~vlparse.train.protocol.TrainTask`).

    ``PretrainTask(cfg, ...)`` is the task of ``cfg.model.family``: a FIBER config gives a
    :class:`~vlparse.tasks.pretrain_fiber.FiberPretrainTask` (a subclass that replaces the
    family's parts: processor, collator settings, model, step and evaluation).

    Args:
        cfg: the pre-training config.
        manifest_path: the data manifest.
        world_size: processes the global batch is split over (checks that batch negatives
            groups are not split).
        rank: this process (the part of the shards it streams).
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
                 rank: int = 0, evaluate: bool = True, init_weights: bool = True,
                 log: Callable[[str], None] | None = print) -> None:
        self.cfg, self.init_weights, self._log = cfg, init_weights, log
        self.rank, self.world_size = rank, world_size
        self._check(world_size)
        manifest = load_manifest(manifest_path)
        self.processor = self._processor()
        d = cfg.data
        self.shard_index = self._open_shards() if d.format == "shards" else None
        self.records = (read_pretrain_records(manifest, d.train_sets, d.train_splits)
                        if self.shard_index is None else None)
        self.val_records = (read_pretrain_records(manifest, [cfg.data.val_set],
                                                  [cfg.data.val_split]) if evaluate else None)
        truth = SceneTruth.from_manifest(manifest) if cfg.data.verify_negatives == "auto" else None
        self.negatives_verified = truth is not None
        if truth is not None:
            self.log(f"unmatched captions verified against the ground truth of {len(truth)} "
                     "scenes (data.verify_negatives=off draws them at random)")
        if self.records is not None:
            report_unknown_tokens(self.processor.tokenizer,
                                  [c for r in self.records for c in r.captions],
                                  "the training captions", log=self._log)
        numbered = self.records
        if truth is not None and numbered is None:  # what the samples' record numbers index
            numbered = self._shard_records(manifest, manifest_path)
        self._collator = self._make_collator(self.records, cfg.train.seed, truth, train=True,
                                             numbered=numbered)
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

    @property
    def captions_per_image(self) -> int:
        """Matched captions an image comes with in a training item (``objectives.num_pos``)."""
        return self.cfg.objectives.num_pos

    def _processor(self) -> VisualParsingProcessor:
        return VisualParsingProcessor.from_config(self.cfg.model)

    def _make_collator(self, records, seed: int, truth: SceneTruth | None, train: bool,
                       numbered=None) -> PretrainCollator:
        """The collator of training (``train``) or of the held-out evaluation. ``numbered``:
        the records that items' ``record`` numbers index (default ``records``; for shards, the
        manifest's records they were written from)."""
        o = self.cfg.objectives
        numbered = records if numbered is None else numbered
        return PretrainCollator(
            records, self.processor, self._visual_tokens(), num_pos=o.num_pos,
            num_neg=o.num_neg, mlm_prob=o.mlm_prob, mlm_min_masked=o.mlm_min_masked,
            seed=seed, negatives=o.itm_negatives if train else "dataset",
            group=o.itm_negative_group,
            negative_filter=truth.negative_filter(numbered) if truth is not None else None,
        )

    # ------------------------------------------------------------------ tar shards

    def _open_shards(self) -> dict[str, Any]:
        """The index of ``data.shards``, checked against ``data.train_sets`` / ``train_splits``
        (a missing shard fails here, named)."""
        from vlparse.data.shards import resolve_shards
        from vlparse.data.shards.index import check_sets

        d = self.cfg.data
        shards, index = resolve_shards(d.shards)
        check_sets(index, d.train_sets, d.train_splits, d.shards)
        self.log(f"streaming {sum(s.count for s in shards)} training images from "
                 f"{len(shards)} shard(s) at {d.shards}")
        if self.cfg.objectives.itm_negatives == "dataset":
            self.log("unmatched captions: drawn from each data worker's caption reservoir, "
                     "reproducible for this layout of processes and workers "
                     "(objectives.itm_negatives=batch does not depend on it)")
        return index

    def _shard_records(self, manifest: dict, manifest_path: str | Path) -> list:
        """The manifest's training records, which the shards' record numbers index: read only
        for a scene world's ground truth, and checked to be the records the shards hold."""
        from vlparse.data.shards.writer import records_digest

        d = self.cfg.data
        records = read_pretrain_records(manifest, d.train_sets, d.train_splits)
        if records_digest(records, manifest_path) != self.shard_index["arguments"].get(
                "records_digest"):
            raise ConfigError(f"data.shards={d.shards} were written from other records than "
                              f"those of {manifest_path} (index.json's records_digest); write "
                              "them again from this manifest")
        return records

    def shard_dataset(self, rank: int, world_size: int):
        """The stream of ``data.shards`` for process ``rank`` of ``world_size``: a
        :class:`~vlparse.data.shards.ShardDataset` shuffled with ``train.seed`` through a
        buffer of ``data.shuffle_buffer``; bad samples are counted by the trainer
        (``data.on_error=raise``: the first one is fatal)."""
        from vlparse.data.shards import ShardDataset

        d = self.cfg.data
        strict = d.on_error == "raise"
        return ShardDataset(d.shards, rank=rank, world_size=world_size, seed=self.cfg.train.seed,
                            shuffle_buffer=d.shuffle_buffer,
                            max_bad_fraction=0.0 if strict else None, min_bad_check=1)

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
        if cfg.train.compile:  # data-dependent shapes (the MLM gather) would break the graphs
            model.set_static_shapes(True)
            model.visual.compile()
            model.encoder.compile()
        return model

    def train_dataset(self) -> PretrainDataset | IterableDataset:
        """The training images: a stream of shards, or the manifest's images, an epoch passing
        over images or pairs (``data.epoch_unit``)."""
        if self.shard_index is not None:
            return self.shard_dataset(self.rank, self.world_size)
        d = self.cfg.data
        return PretrainDataset(self.records, on_error=d.on_error, epoch_unit=d.epoch_unit,
                               num_pos=self.captions_per_image)

    def eval_dataset(self) -> PretrainDataset | None:
        if self.val_records is None:
            return None
        return PretrainDataset(self.val_records, on_error=self.cfg.data.on_error)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collator(items)

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        """The weighted loss of one micro-batch; logs its parts, ``visual_spread``, the
        accuracy counts (the trainer turns them into ``itm_acc`` / ``mlm_acc``) and (with a
        schedule) ``mlm_weight``."""
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
        ``train.eval_images`` images, under the autocast of ``train.precision``
        (:func:`~vlparse.utils.autocast_dtype`)."""
        dataset = self.eval_dataset()
        if dataset is None:
            return {}
        tr = self.cfg.train
        amp = autocast_dtype(tr.precision, device)
        return evaluate_pretrain(model, dataset, self._eval_collator, device=device,
                                 num_images=tr.eval_images,
                                 batch_size=max(1, min(64, tr.batch_size)),
                                 autocast_dtype=amp, progress=tr.progress)

    def summary(self, result: Any) -> dict[str, Any]:
        """``summary.json`` entries beside the trainer's: the held-out metrics and the data."""
        images = (len(self.records) if self.records is not None
                  else self.shard_index["total"])
        return {"train_images": images, "model": self.cfg.model.name,
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
    init: str | Path | None = None,
) -> dict:
    """Pre-train on the caption data sets of a manifest with the trainer
    (:func:`vlparse.train.trainer.train`); FIBER's fine-grained stage
    (``objectives.stage: fine``) trains on the box data sets instead
    (:class:`~vlparse.tasks.pretrain_fine.FineGrainedPretrainTask`), from the model at ``init``
    (a coarse-grained run) when given.

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
    log = print if dist.is_main else None
    if getattr(cfg.objectives, "stage", "coarse") == "fine":
        from vlparse.tasks.pretrain_fine import FineGrainedPretrainTask

        task = FineGrainedPretrainTask(cfg, manifest_path, init=init, evaluate=evaluate,
                                       init_weights=not resume, log=log)
        cfg = task.cfg
    elif init is not None:
        raise ConfigError("--init starts FIBER's fine-grained stage (objectives.stage=fine); "
                          "coarse-grained pre-training starts from model.*.pretrained")
    else:
        task = PretrainTask(cfg, manifest_path, world_size=dist.world_size, rank=dist.rank,
                            evaluate=evaluate, init_weights=not resume, log=log)
    result = train(task, cfg, out_dir, resume=resume, overwrite=overwrite, evaluate=evaluate,
                   dist=dist)
    cleanup()
    return result.summary
