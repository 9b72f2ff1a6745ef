"""Inter-modality probes: Inter-Modality Flow (IMF) from attentions, modality NMI from states.

``[CLS]`` and ``[SEP]`` are labelled by the caller's ``modality`` tensor; vlparse's
``FusionOutput.modality`` labels them language (0). :func:`relabel_special` overrides that.
The adapters (:func:`probe_vlparse`, :func:`probe_vilt`, :func:`probe_visualbert`) give
attentions, hidden states and modality labels of vlparse and Hugging Face models alike.
For fusion in the backbone (FIBER), :func:`fiber_flow_per_sample` and
:class:`FiberFlowAccumulator` give the generalised flow of each fused pair
(:mod:`vlparse.probing.fiber_flow`).
"""

from vlparse.probing.adapters import ProbeInputs, probe_vilt, probe_visualbert, probe_vlparse
from vlparse.probing.fiber_flow import FiberFlowAccumulator, fiber_flow_per_sample, update_share
from vlparse.probing.imf import (
    IMFAccumulator,
    inter_modality_flow,
    inter_modality_flow_per_sample,
    relabel_special,
)
from vlparse.probing.nmi import NMIAccumulator, modality_nmi, modality_nmi_per_sample

__all__ = [
    "FiberFlowAccumulator",
    "IMFAccumulator",
    "NMIAccumulator",
    "ProbeInputs",
    "fiber_flow_per_sample",
    "inter_modality_flow",
    "inter_modality_flow_per_sample",
    "modality_nmi",
    "modality_nmi_per_sample",
    "probe_vilt",
    "probe_visualbert",
    "probe_vlparse",
    "relabel_special",
    "update_share",
]
