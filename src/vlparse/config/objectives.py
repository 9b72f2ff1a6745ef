"""The objectives of the Visual Parsing family's pre-training (paper section 3.3 and 4.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vlparse.config.base import Config
from vlparse.config.ranges import ranged

__all__ = ["ObjectiveConfig"]


@dataclass
class ObjectiveConfig(Config):
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
    1,000 against 0.50 (``reports/2026-11-23-mlm-schedule/``).
    ``itm_negatives``: where the unmatched captions come from. ``"dataset"`` (default): a caption
    of a random other image of the whole data set. ``"batch"`` (the paper does not say which):
    matched captions of the other images of the same group of ``itm_negative_group`` consecutive
    images of the batch, lent so that every caption of the group appears once beside its own
    image and once beside another (:func:`vlparse.data.pretrain.lend_batch_negatives`). The
    texts then carry no label information at all within a batch, and held-out ITM (measured, as
    always, against random captions of the data set) is learnt in fewer steps (see
    ``reports/2026-11-23-itm-negatives/``). With DDP or gradient accumulation the
    per-process micro-batch must be a multiple of the group, so that no group is split.
    """

    mlm_prob: float = ranged(0.15, gt=0, lt=1)
    mlm_delay: int = ranged(0, ge=0)
    mlm_ramp: int = ranged(0, ge=0)
    itm_pass: Literal["separate", "shared"] = "separate"
    itm_negatives: Literal["dataset", "batch"] = "dataset"
    itm_negative_group: int = ranged(8, ge=2)
    num_pos: int = ranged(2, ge=1)
    num_neg: int = ranged(2, ge=0)
    vla_weight: float = ranged(0.1, ge=0)
    ipot_beta: float = ranged(0.5, gt=0)
    ipot_iters: int = ranged(50, ge=1)
    mfr_mode: Literal["attention", "random", "off"] = "attention"
    mfr_k: int = ranged(7, ge=1)
    mfr_ratio: float | None = ranged(None, gt=0, le=1)
    mfr_reduction: Literal["mean_channel", "sum"] = "mean_channel"
    lambda_itm: float = ranged(1.0, ge=0)
    lambda_mfr: float = ranged(0.01, ge=0)
    lambda_itc: float = ranged(0.0, ge=0)
    itc_temperature: float = ranged(0.07, gt=0)
