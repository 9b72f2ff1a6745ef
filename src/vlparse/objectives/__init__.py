"""Pre-training objectives as pure functions of tensors (paper section 3.3).

- :mod:`~vlparse.objectives.mlm`: BERT masking and the Masked Language Modeling loss.
- :mod:`~vlparse.objectives.itm`: Image-Text Matching labels, negatives and loss.
- :mod:`~vlparse.objectives.ot`: IPOT optimal transport and the VLA alignment loss.
- :mod:`~vlparse.objectives.mfr`: attention-guided masking and Masked Feature Regression.
- :mod:`~vlparse.objectives.itc`: image-text contrastive loss (an option, not in the paper).

Losses take an optional ``normalizer``: the training loop may pass a count taken over all
processes so that a DDP step equals a single-process step over the same global batch.
"""

from vlparse.objectives import itc, itm, mfr, mlm, ot

__all__ = ["itc", "itm", "mfr", "mlm", "ot"]
