"""Modality NMI probe (paper section 4.4, Figure 5).

For every layer's output, each sample's token features are split into two clusters with
k-means (k = 2) and the clusters are compared with the ground-truth vision / language split by
Normalized Mutual Information. A larger NMI means the two modalities stay apart (less fusion).
The reported value is the mean over samples.

Labels follow :mod:`vlparse.probing.imf`: ``(B, N)`` ints, 1 vision, 0 language, -1 excluded.
``FusionOutput.modality`` labels ``[CLS]`` and ``[SEP]`` as language; use
:func:`vlparse.probing.imf.relabel_special` to change that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor

from vlparse.probing._mean import SampleMean

__all__ = ["NMIAccumulator", "modality_nmi", "modality_nmi_per_sample"]


def _sample_nmi(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """NMI between a 2-means clustering of ``features`` ``(n, D)`` and ``labels`` ``(n,)``."""
    clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(features)
    return float(normalized_mutual_info_score(labels, clusters))


def modality_nmi_per_sample(
    hidden_states: Sequence[Tensor], modality: Tensor, seed: int = 0
) -> Tensor:
    """Per-sample modality NMI for every hidden state.

    Args:
        hidden_states: ``S`` tensors ``(B, N, D)`` (embeddings first, then each layer's output;
            ``S = L + 1`` for ``FusionOutput.hidden_states``).
        modality: ``(B, N)`` ints: 1 vision, 0 language, -1 excluded (padding).
        seed: ``random_state`` of scikit-learn's ``KMeans`` (``n_init=10``).

    Returns:
        ``(B, S)`` float64 on the CPU.
    """
    where = "modality_nmi"
    if len(hidden_states) == 0:
        raise ValueError(f"{where}: got no hidden states; pass (B, N, D) tensors, one per layer.")
    batch, tokens = hidden_states[0].shape[:2]
    for s, h in enumerate(hidden_states):
        if h.dim() != 3 or tuple(h.shape[:2]) != (batch, tokens):
            raise ValueError(
                f"{where}: hidden state {s} has shape {tuple(h.shape)}, expected "
                f"({batch}, {tokens}, D) like hidden state 0."
            )
    if modality.dim() != 2 or tuple(modality.shape) != (batch, tokens):
        raise ValueError(
            f"{where}: modality must be (B, N) = ({batch}, {tokens}), got {tuple(modality.shape)}."
        )
    mod = modality.detach().cpu().long()
    if bool((~((mod == 1) | (mod == 0) | (mod == -1))).any()):
        raise ValueError(f"{where}: modality may only hold 1 (vision), 0 (language) or -1.")
    valid = mod >= 0
    counts = valid.sum(dim=1)
    if bool((counts < 2).any()):
        idx = torch.nonzero(counts < 2).flatten().tolist()
        raise ValueError(
            f"{where}: samples {idx} have fewer than 2 non-excluded tokens; k-means with k = 2 "
            "needs at least 2. Drop them."
        )

    out = torch.empty(batch, len(hidden_states), dtype=torch.float64)
    for b in range(batch):
        keep = valid[b]
        labels = mod[b, keep].numpy()
        for s, h in enumerate(hidden_states):
            feats = h[b].detach().to(device="cpu", dtype=torch.float64)[keep].numpy()
            out[b, s] = _sample_nmi(feats, labels, seed)
    return out


def modality_nmi(hidden_states: Sequence[Tensor], modality: Tensor, seed: int = 0) -> Tensor:
    """Modality NMI per hidden state, averaged over the samples of one batch.

    Args:
        hidden_states: ``L + 1`` tensors ``(B, N, D)``, the embeddings first.
        modality: ``(B, N)`` ints: 1 vision, 0 language, -1 excluded (padding).
        seed: ``random_state`` of the k-means runs.

    Returns:
        ``(L + 1,)`` float64: entry 0 for the embeddings, entry ``l`` for layer ``l``'s output.
    """
    return modality_nmi_per_sample(hidden_states, modality, seed).mean(dim=0)


class NMIAccumulator:
    """Running mean of per-sample modality NMI over many batches.

    Args:
        num_states: number of hidden states each update must provide (``L + 1``).
        seed: ``random_state`` of the k-means runs.
    """

    def __init__(self, num_states: int, seed: int = 0) -> None:
        if num_states < 1:
            raise ValueError(f"NMIAccumulator: num_states must be >= 1, got {num_states}.")
        self.num_states = num_states
        self.seed = seed
        self._mean = SampleMean((num_states,), "NMIAccumulator")

    @property
    def num_samples(self) -> int:
        """Number of samples seen so far."""
        return self._mean.num_samples

    def reset(self) -> None:
        """Forget every sample seen."""
        self._mean.reset()

    def update(self, hidden_states: Sequence[Tensor], modality: Tensor) -> None:
        """Add one batch: ``num_states`` tensors ``(B, N, D)`` and ``(B, N)`` labels."""
        if len(hidden_states) != self.num_states:
            raise ValueError(
                f"NMIAccumulator.update: expected {self.num_states} hidden states, got "
                f"{len(hidden_states)} (embeddings plus one per layer)."
            )
        scores = modality_nmi_per_sample(hidden_states, modality, self.seed)
        self._mean.add(scores)

    def compute(self) -> Tensor:
        """``(num_states,)`` float64 mean NMI over all samples seen."""
        return self._mean.compute()
