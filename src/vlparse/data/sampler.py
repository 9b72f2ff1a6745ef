"""A batch sampler that is the same for any number of processes and can resume mid-epoch.

Per epoch, one permutation of ``[0, n)`` is drawn from a generator seeded by ``(seed, epoch)``.
Global batch ``k`` is ``perm[k*G:(k+1)*G]`` with ``G = batch_size_per_rank * num_replicas``, and
rank ``r`` takes the slice ``[r*b:(r+1)*b]`` of it. Concatenating the ranks' step-``k`` batches in
rank order gives the single-process batch of size ``G``, so a DDP run sees the same data as one
process with the same global batch.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator

import torch

__all__ = ["ResumableSampler", "stable_seed"]


def stable_seed(*values: int) -> int:
    """A 63-bit seed from integers, the same in every process and Python run (unlike ``hash``).

    Example: ``torch.Generator().manual_seed(stable_seed(seed, epoch, index))``.
    """
    data = b"".join(struct.pack("<q", int(v)) for v in values)
    digest = hashlib.blake2b(data, digest_size=8, person=b"vlparse").digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ResumableSampler:
    """Batch sampler (use as ``DataLoader(batch_sampler=...)``) yielding lists of indices.

    Args:
        n: dataset size.
        batch_size_per_rank: ``b``, images per batch on this process.
        num_replicas: number of processes ``R``.
        rank: this process, in ``[0, R)``.
        seed: base seed; epoch ``e`` uses the permutation seeded by ``(seed, e)``.
        shuffle: if False the order is ``0..n-1`` every epoch.
        drop_last: drop the incomplete last global batch. When False, the last global batch of
            ``r < G`` indices is cut into ``R`` contiguous chunks of near-equal size (padded with
            the first indices of the permutation when ``r < R``, so no rank gets an empty batch).

    ``set_epoch(e)`` picks the epoch; ``set_start_batch(k)`` makes the next iteration start at
    global batch ``k`` of the epoch (to resume mid-epoch; it applies to one iteration only).
    ``len()`` is the number of batches of a full epoch.
    """

    def __init__(
        self,
        n: int,
        batch_size_per_rank: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError(f"ResumableSampler: n must be >= 1, got {n}")
        if batch_size_per_rank < 1:
            raise ValueError(
                f"ResumableSampler: batch_size_per_rank must be >= 1, got {batch_size_per_rank}"
            )
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"ResumableSampler: need 0 <= rank < num_replicas, got rank={rank}, "
                f"num_replicas={num_replicas}"
            )
        self.n = n
        self.batch_size = batch_size_per_rank
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0
        if drop_last and len(self) == 0:
            raise ValueError(
                f"ResumableSampler: {n} items make no full global batch of "
                f"{self.global_batch_size} ({batch_size_per_rank} x {num_replicas} processes); "
                "lower the batch size or set drop_last=False"
            )

    @property
    def global_batch_size(self) -> int:
        """``G = batch_size_per_rank * num_replicas``."""
        return self.batch_size * self.num_replicas

    def __len__(self) -> int:
        g = self.global_batch_size
        return self.n // g if self.drop_last else math.ceil(self.n / g)

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def set_start_batch(self, k: int) -> None:
        """Skip the first ``k`` batches of the epoch in the next iteration (resume mid-epoch)."""
        if not 0 <= k <= len(self):
            raise ValueError(f"set_start_batch: k must be in [0, {len(self)}], got {k}")
        self.start_batch = int(k)

    def permutation(self) -> list[int]:
        """The order of the current epoch: ``n`` indices."""
        if not self.shuffle:
            return list(range(self.n))
        gen = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=gen).tolist()

    def _rank_slice(self, batch: list[int], perm: list[int]) -> list[int]:
        b, r, reps = self.batch_size, self.rank, self.num_replicas
        if len(batch) == self.global_batch_size:
            return batch[r * b : (r + 1) * b]
        if len(batch) < reps:  # partial last batch: give every rank something
            batch = batch + perm[: reps - len(batch)]
        size, extra = divmod(len(batch), reps)
        start = r * size + min(r, extra)
        return batch[start : start + size + (r < extra)]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        perm = self.permutation()
        g = self.global_batch_size
        batches = [perm[k * g : (k + 1) * g] for k in range(start, len(self))]
        return iter([self._rank_slice(batch, perm) for batch in batches])
