"""Collectives that losses and models need, as tensor utilities: the identity in one process.

- :func:`all_gather_rows`: every process's rows, concatenated in rank order, *with* gradient: the
  backward sums the gradients that every process's loss sends to a row and hands each process
  the part for its own rows, so a loss averaged over processes (DDP's mean of gradients)
  differentiates like one process holding the global batch.
- :func:`fetch_rows`: chosen rows of the gathered batch, moved point to point
  (``all_to_all``), without gradient: each process receives only the rows it asked for.

Processes may hold different numbers of rows (the last batch of an epoch): each call first
gathers the row counts unless the caller passes them (:func:`gather_sizes`). Every process must
make the same calls in the same order, as with any collective.

Shapes: ``n`` local rows, ``N`` rows over all processes, ``...`` any trailing shape (the same on
every process).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rank_and_world", "gather_sizes", "all_gather_rows", "fetch_rows"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every process's row count ``n``, in rank order (``[n]`` in one process). ``device``: where
    the collective runs (a CUDA device under NCCL)."""
    _, world = rank_and_world()
    if world == 1:
        return [n]
    mine = torch.tensor([n], device=device)
    out = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(out, mine)
    return [int(t) for t in out]


def _gather_padded(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """``(n, ...)`` -> ``(N, ...)``: each process's rows padded to the largest count, gathered,
    padding dropped."""
    most = max(sizes)
    padded = F.pad(x, (0, 0) * (x.dim() - 1) + (0, most - x.shape[0])).contiguous()
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([t[:k] for t, k in zip(out, sizes, strict=True)])


class _AllGatherRows(torch.autograd.Function):
    """All-gather forward; backward: all-reduce (sum) of the gathered gradient, own rows kept.
    (An all-reduce rather than a reduce-scatter: gloo has no reduce-scatter, and the gathered
    tensors here are embeddings, ``N x E`` numbers.)"""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: tuple[int, ...], rank: int) -> Tensor:
        ctx.start = sum(sizes[:rank])
        ctx.count = sizes[rank]
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.count], None, None


def all_gather_rows(x: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    """Rows of every process, concatenated in rank order, with gradient.

    Args:
        x: ``(n, ...)`` this process's rows (any dtype; gradients flow for floating tensors).
        sizes: every process's ``n`` (from :func:`gather_sizes`); gathered here when ``None``.

    Returns:
        ``(N, ...)``; ``x`` itself in one process. This process's rows start at
        ``sum(sizes[:rank])``. In backward, the gradient reaching ``x`` is the sum over
        processes of the gradients their losses send to these rows.
    """
    rank, world = rank_and_world()
    if world == 1:
        return x
    sizes = tuple(sizes) if sizes is not None else tuple(gather_sizes(x.shape[0], x.device))
    if sizes[rank] != x.shape[0]:
        raise ValueError(f"all_gather_rows: sizes[{rank}] = {sizes[rank]} but x has "
                         f"{x.shape[0]} rows")
    if x.requires_grad:
        return _AllGatherRows.apply(x, sizes, rank)
    return _gather_padded(x, sizes)


def fetch_rows(x: Tensor, wanted: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    """Rows of the gathered batch at global indices ``wanted``, without gradient.

    Each process sends each other process exactly the rows it asked for (one ``all_to_all``),
    so a process receives ``len(wanted)`` rows rather than the whole gathered batch. (A process
    whose rows many others ask for sends each request separately: at most ``N`` rows when every
    process asks for all of its rows.)

    Args:
        x: ``(n, ...)`` this process's rows; the trailing shape and dtype must agree everywhere.
        wanted: ``(k,)`` long indices into the ``N`` gathered rows (``k`` may differ per process).
        sizes: every process's ``n``; gathered here when ``None``.

    Returns:
        ``(k, ...)`` detached, equal to ``all_gather_rows(x)[wanted]``.
    """
    rank, world = rank_and_world()
    x, wanted = x.detach(), wanted.to(x.device)
    if world == 1:
        return x[wanted]
    sizes = list(sizes) if sizes is not None else gather_sizes(x.shape[0], x.device)
    if len(wanted) and not 0 <= int(wanted.min()) <= int(wanted.max()) < sum(sizes):
        raise ValueError(f"fetch_rows: indices must lie in [0, {sum(sizes)}), got "
                         f"{int(wanted.min())}..{int(wanted.max())}")
    ends = torch.tensor(sizes, device=x.device).cumsum(0)
    asked = gather_sizes(wanted.numel(), x.device)
    requests = all_gather_rows(wanted, asked)
    owner = torch.bucketize(requests, ends, right=True)  # the rank holding each requested row
    first = int(ends[rank]) - sizes[rank]
    # send: to each requester in rank order, my rows it asked for, in the order it asked
    send_parts, send_counts, start = [], [], 0
    for k in asked:
        req, own = requests[start : start + k], owner[start : start + k]
        send_parts.append(x[req[own == rank] - first])
        send_counts.append(send_parts[-1].shape[0])
        start += k
    start = sum(asked[:rank])
    my_owner = owner[start : start + asked[rank]]
    recv_counts = [int((my_owner == r).sum()) for r in range(world)]
    received = x.new_empty((len(wanted), *x.shape[1:]))
    dist.all_to_all_single(received, torch.cat(send_parts).contiguous(), recv_counts,
                           send_counts)
    # received is grouped by owner, each group in my request order: undo the grouping
    out = torch.empty_like(received)
    out[torch.sort(my_owner, stable=True).indices] = received
    return out
