"""Process-group setup from torchrun's environment, and collectives that are no-ops in a single
process.

Launch::

    torchrun --nproc_per_node 4 -m vlparse pretrain ...

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them. Without them (or with ``WORLD_SIZE=1``) everything runs in
one process and no process group is created.

On CUDA the group has two backends, ``cpu:gloo,cuda:nccl``: NCCL for tensors on the GPU (DDP's
gradients) and gloo for any CPU tensor, which an NCCL-only group would reject. On the CPU it is
gloo. The collectives of the trainer and the tasks take tensors on the process's device
(:attr:`DistInfo.device`) anyway.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vlparse.errors import ConfigError

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_distributed",
    "all_reduce_sum",
    "all_gather_bytes",
    "barrier",
    "backend_for",
    "cleanup",
    "run_local_processes",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, its
    ``device``; ``is_main`` for rank 0; ``enabled`` when a process group exists."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool
    enabled: bool


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise from torchrun's environment variables.

    ``device``: ``"cuda"``, ``"cuda:<i>"``, ``"cpu"`` or ``None`` (CUDA when available). Under
    torchrun a CUDA process uses ``cuda:<LOCAL_RANK>`` and makes it the current device. Calling
    again when a process group already exists reuses it.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available; use 'cpu'")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", dev.index if dev.index is not None else local_rank)
            torch.cuda.set_device(dev)
        return DistInfo(0, 1, 0, dev, True, False)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = backend_for(dev)
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with torchrun "
                "(which sets them) or export them yourself"
            )
        kwargs: dict[str, Any] = {}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(backend, rank=rank, world_size=world_size, **kwargs)
    return DistInfo(rank, world_size, local_rank, dev, rank == 0, True)


def backend_for(device: torch.device) -> str:
    """The process-group backend for a process computing on ``device``: ``cpu:gloo,cuda:nccl``
    on CUDA (CPU tensors then go through gloo), ``gloo`` otherwise."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def is_distributed() -> bool:
    """Whether a process group with more than one process exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it. A no-op in a single process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_bytes(data: bytes, device: torch.device) -> list[bytes]:
    """Every process's ``data``, in rank order (``[data]`` in a single process). The bytes travel
    as uint8 tensors on ``device``, the process's device."""
    if not is_distributed():
        return [data]
    world = dist.get_world_size()
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(s) for s in sizes)
    buf = torch.zeros(longest, dtype=torch.uint8, device=device)
    if data:
        buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    return [bytes(p[: int(n)].cpu().numpy().tobytes()) for p, n in zip(parts, sizes, strict=True)]


def barrier() -> None:
    """Wait for every process; a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _local_child(rank: int, fn: Callable, nprocs: int, port: int, threads: int, args: tuple):
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    torch.set_num_threads(threads)
    fn(*args)


def run_local_processes(fn: Callable, nprocs: int, args: tuple = (), threads: int = 1) -> None:
    """Run ``fn(*args)`` in ``nprocs`` fresh local processes that form one process group, like
    ``torchrun --nproc_per_node NPROCS`` (gloo on CPU), each with ``threads`` intra-op threads.

    For CPU training from Python: on 2 cores, two gloo processes of one thread train the
    quickstart model faster than one process of two threads (small matrix products use two
    threads poorly). ``fn`` must be picklable (a module-level function). Raises if a process
    fails, with its traceback.
    """
    import torch.multiprocessing as mp

    if nprocs < 1:
        raise ValueError(f"run_local_processes: nprocs must be >= 1, got {nprocs}")
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(
        _local_child, args=(fn, nprocs, port, threads, args), nprocs=nprocs, join=True,
        start_method="spawn",
    )
