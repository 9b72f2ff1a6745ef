"""The running mean over samples that the probe accumulators share."""

from __future__ import annotations

import torch
from torch import Tensor


class SampleMean:
    """Float64 sum and count of per-sample values of shape ``shape``.

    The sum lives on the device of the first values added, so adding never waits for the
    device; :meth:`compute` reads it back once. Samples flagged invalid are counted there too
    and :meth:`compute` raises if there were any (``invalid_hint`` says what was wrong).
    """

    def __init__(self, shape: tuple[int, ...], owner: str, invalid_hint: str = "were invalid"):
        self._shape = shape
        self._owner = owner
        self._hint = invalid_hint
        self._sum: Tensor | None = None
        self._invalid: Tensor | None = None
        self._count = 0

    @property
    def num_samples(self) -> int:
        """Number of samples seen so far."""
        return self._count

    def reset(self) -> None:
        """Forget every sample seen."""
        self._sum = self._invalid = None
        self._count = 0

    def add(self, per_sample: Tensor, invalid: Tensor | None = None) -> None:
        """Add ``(B, *shape)`` per-sample values; ``invalid`` ``(B,)`` bool flags bad samples."""
        total = per_sample.detach().sum(dim=0).to(torch.float64)
        if self._sum is None:
            self._sum = torch.zeros(self._shape, dtype=torch.float64, device=total.device)
        self._sum += total.to(self._sum.device)
        if invalid is not None:
            bad = invalid.sum().to(self._sum.device)
            self._invalid = bad if self._invalid is None else self._invalid + bad
        self._count += per_sample.shape[0]

    def compute(self) -> Tensor:
        """The float64 mean over all samples seen, on the CPU."""
        if self._count == 0 or self._sum is None:
            raise RuntimeError(f"{self._owner}.compute: no samples seen; call update() first.")
        if self._invalid is not None:
            bad = int(self._invalid.item())
            if bad:
                raise ValueError(
                    f"{self._owner}.compute: {bad} of the {self._count} samples seen {self._hint}."
                )
        return (self._sum / self._count).cpu()
