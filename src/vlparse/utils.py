"""Small helpers shared across vlparse: seeding, and the mixed-precision decision.

(Atomic file writes live in :mod:`vlparse.io.files`.)
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager

import numpy as np
import torch

__all__ = ["seed_everything", "autocast_dtype", "autocast"]


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices).

    Each process gets ``seed + rank`` so that dropout differs between DDP ranks while the run as a
    whole stays reproducible. Returns the seed actually used.
    """
    value = int(seed) + int(rank)
    random.seed(value)
    np.random.seed(value % (2**32))
    torch.manual_seed(value)  # also seeds every CUDA device
    return value


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device``: bf16 when ``precision`` is
    ``"bf16"``, or ``"auto"`` on CUDA; ``None`` (full precision) otherwise."""
    kind = torch.device(device).type
    if precision == "bf16" or (precision == "auto" and kind == "cuda"):
        return torch.bfloat16
    return None


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """``torch.autocast`` as :func:`autocast_dtype` decides (disabled when it says ``None``)."""
    dtype = autocast_dtype(precision, device)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)
