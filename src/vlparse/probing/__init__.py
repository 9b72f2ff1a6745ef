"""Inter-modality probes: Inter-Modality Flow (IMF) from attentions, modality NMI from states.

``[CLS]`` and ``[SEP]`` are labelled by the caller's ``modality`` tensor; vlparse's
``FusionOutput.modality`` labels them language (0). :func:`relabel_special` overrides that.
"""

from vlparse.probing.imf import (
    IMFAccumulator,
    inter_modality_flow,
    inter_modality_flow_per_sample,
    relabel_special,
)
from vlparse.probing.nmi import NMIAccumulator, modality_nmi, modality_nmi_per_sample

__all__ = [
    "IMFAccumulator",
    "NMIAccumulator",
    "inter_modality_flow",
    "inter_modality_flow_per_sample",
    "modality_nmi",
    "modality_nmi_per_sample",
    "relabel_special",
]
