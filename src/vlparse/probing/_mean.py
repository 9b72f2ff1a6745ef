"""The running mean over samples that the probe accumulators share."""

from __future__ import annotations

import torch
from torch import Tensor


class SampleMean:
    """Float64 sum and count on the CPU of per-sample values of shape ``shape``."""

    def __init__(self, shape: tuple[int, ...], owner: str) -> None:
        self._sum = torch.zeros(shape, dtype=torch.float64)
        self._count = 0
        self._owner = owner

    @property
    def num_samples(self) -> int:
        """Number of samples seen so far."""
        return self._count

    def reset(self) -> None:
        """Forget every sample seen."""
        self._sum.zero_()
        self._count = 0

    def add(self, per_sample: Tensor) -> None:
        """Add ``(B, *shape)`` per-sample values."""
        self._sum += per_sample.sum(dim=0).to(device="cpu", dtype=torch.float64)
        self._count += per_sample.shape[0]

    def compute(self) -> Tensor:
        """The float64 mean over all samples seen."""
        if self._count == 0:
            raise RuntimeError(f"{self._owner}.compute: no samples seen; call update() first.")
        return self._sum / self._count
