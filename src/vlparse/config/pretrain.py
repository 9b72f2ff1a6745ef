"""The pre-training config: model, objectives, data, optimizer and loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vlparse.config.base import raise_failed
from vlparse.config.model import ModelConfig
from vlparse.config.training import DataConfig, OptimConfig, TrainConfig, shared_checks

__all__ = ["ObjectiveConfig", "PretrainConfig", "validate"]


@dataclass
class ObjectiveConfig:
    """Pre-training objectives (paper section 3.3 and 4.1).

    ``itm_pass``: ``"separate"`` (default) runs ITM and VLA on clean texts of all four pairs and a
    second pass with masked text and masked visual tokens on the two matched pairs for MLM and MFR;
    ``"shared"`` runs one pass over all four pairs with masking applied to all of them and computes
    MLM and MFR on the matched pairs only (cheaper, one pass; masks then appear in both matched and
    unmatched pairs, so they carry no label information).
    ``mfr_k``: tokens masked by MFR (the picked token plus its top attended ones); if ``mfr_ratio``
    is set, ``k = round(m * mfr_ratio)`` instead (the ablation's ``k = m * p``).
    ``lambda_itc``: weight of an image-text contrastive term added to the total (0 = the paper's
    objectives only; see :mod:`vlparse.objectives.itc`); needs ``model.itc_dim > 0``.
    ``mlm_delay`` / ``mlm_ramp``: a schedule of the MLM weight, beyond the paper (which weights
    MLM 1 throughout, the default 0 / 0): 0 for the first ``mlm_delay`` optimizer steps, then
    rising linearly to 1 over ``mlm_ramp`` steps (:func:`vlparse.objectives.mlm.ramp_weight`).
    With the separate ITM pass, the masked pass (MLM and MFR) is not run while the weight is 0,
    so MFR waits with MLM and those steps cost about a quarter less.
    On the quickstart world, held-out ITM left chance at about step 1,800 with all objectives
    from step 0 and at about 450 with ITM alone; delaying MLM by 300 steps gave 0.62 at step
    1,000 against 0.50 (the quickstart config; ``docs/results/itm_learnability/session6``).
    ``itm_negatives``: where the unmatched captions come from. ``"dataset"`` (default): a caption
    of a random other image of the whole data set. ``"batch"`` (the paper does not say which):
    matched captions of the other images of the same group of ``itm_negative_group`` consecutive
    images of the batch, lent so that every caption of the group appears once beside its own
    image and once beside another (:func:`vlparse.data.pretrain.lend_batch_negatives`). The
    texts then carry no label information at all within a batch, and held-out ITM (measured, as
    always, against random captions of the data set) is learnt in fewer steps (see
    ``docs/results/itm_learnability/session7``). With DDP or gradient accumulation the
    per-process micro-batch must be a multiple of the group, so that no group is split.
    """

    mlm_prob: float = 0.15
    mlm_delay: int = 0
    mlm_ramp: int = 0
    itm_pass: Literal["separate", "shared"] = "separate"
    itm_negatives: Literal["dataset", "batch"] = "dataset"
    itm_negative_group: int = 8
    num_pos: int = 2
    num_neg: int = 2
    vla_weight: float = 0.1
    ipot_beta: float = 0.5
    ipot_iters: int = 50
    mfr_mode: Literal["attention", "random", "off"] = "attention"
    mfr_k: int = 7
    mfr_ratio: float | None = None
    mfr_reduction: Literal["mean_channel", "sum"] = "mean_channel"
    lambda_itm: float = 1.0
    lambda_mfr: float = 0.01
    lambda_itc: float = 0.0
    itc_temperature: float = 0.07


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: PretrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    o = cfg.objectives
    raise_failed([
        (0.0 < o.mlm_prob < 1.0, "objectives.mlm_prob must be in (0, 1)"),
        (o.mlm_delay >= 0 and o.mlm_ramp >= 0, "objectives.mlm_delay and mlm_ramp must be >= 0"),
        (o.itm_negative_group >= 2, "objectives.itm_negative_group must be >= 2"),
        (
            o.itm_negatives == "dataset"
            or (cfg.train.batch_size // cfg.train.grad_accum) % o.itm_negative_group == 0,
            f"objectives.itm_negatives='batch' needs train.batch_size / train.grad_accum "
            f"({cfg.train.batch_size} / {cfg.train.grad_accum}) to be a multiple of "
            f"objectives.itm_negative_group ({o.itm_negative_group})",
        ),
        (o.num_pos >= 1 and o.num_neg >= 0, "objectives.num_pos >= 1 and num_neg >= 0"),
        (o.mfr_k >= 1, "objectives.mfr_k must be >= 1"),
        (o.mfr_ratio is None or 0.0 < o.mfr_ratio <= 1.0, "objectives.mfr_ratio must be in (0, 1]"),
        (o.ipot_iters >= 1 and o.ipot_beta > 0, "objectives.ipot_iters >= 1, ipot_beta > 0"),
        (
            o.lambda_itc == 0 or cfg.model.itc_dim > 0,
            "objectives.lambda_itc > 0 needs model.itc_dim > 0 (the contrastive projections)",
        ),
        (o.itc_temperature > 0, "objectives.itc_temperature must be > 0"),
        *shared_checks(cfg),
    ])
