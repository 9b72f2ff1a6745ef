"""Pre-training and fine-tuning losses as pure functions of tensors (paper section 3.3).

- :mod:`~vlparse.objectives.mlm`: the Masked Language Modeling loss and its weight schedule.
- :mod:`~vlparse.objectives.itm`: Image-Text Matching labels and loss.
- :mod:`~vlparse.objectives.ot`: IPOT optimal transport and the VLA alignment loss.
- :mod:`~vlparse.objectives.mfr`: the Masked Feature Regression loss.
- :mod:`~vlparse.objectives.contrastive`: image-text contrastive learning (ITC) over the batch
  gathered across processes, a queue of earlier features, the clamped learnable temperature.
- :mod:`~vlparse.objectives.distributed`: the collectives ITC and hard negatives need (a gather
  with gradient, a fetch of chosen rows), the identity in one process.
- :mod:`~vlparse.objectives.combine`: :func:`pretrain_loss`, the weighted sum of a pass's terms.
- :mod:`~vlparse.objectives.tasks`: the losses of the fine-tuning heads.

Masking and negative sampling are data preparation (:mod:`vlparse.data`); which visual tokens
MFR masks is the model's (:mod:`vlparse.models.visual_masking`). Losses take an optional
``normalizer``: the training loop may pass a count taken over all processes so that a DDP step
equals a single-process step over the same global batch.
"""

from vlparse.objectives import contrastive, distributed, itm, mfr, mlm, ot, tasks
from vlparse.objectives.combine import TERMS, LossOutput, pretrain_loss
from vlparse.objectives.contrastive import FeatureQueue, contrastive_logits, itc_loss

__all__ = ["TERMS", "FeatureQueue", "LossOutput", "contrastive", "contrastive_logits",
           "distributed", "itc_loss", "itm", "mfr", "mlm", "ot", "pretrain_loss", "tasks"]
