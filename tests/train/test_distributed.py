"""Single-process defaults, the backends of a CUDA group, and 2-process gloo collectives.

DDP wrapping is not exercised here: constructing DistributedDataParallel imports torch._dynamo
(6-12 s on a small CPU); the training-loop tests cover it.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from vlparse.train import distributed as D


def test_single_process_without_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = D.init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
    assert info.device == torch.device("cpu")
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(D.all_reduce_sum(t), torch.tensor([1.0, 2.0]))
    assert D.all_gather_bytes(b"abc", info.device) == [b"abc"]
    D.barrier()
    D.cleanup()


def test_a_cuda_process_group_has_a_cpu_backend(monkeypatch):
    """On CUDA the group is made with ``cpu:gloo,cuda:nccl``: a CPU tensor given to a collective
    goes through gloo instead of failing in an NCCL-only group (CUDA mocked here)."""
    made = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group",
                        lambda backend, **kw: made.update(backend=backend, **kw))
    info = D.init_distributed("cuda")
    assert made["backend"] == "cpu:gloo,cuda:nccl"
    assert made["device_id"] == torch.device("cuda", 1) == info.device
    assert (info.rank, info.world_size, info.enabled) == (1, 2, True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    info = D.init_distributed("cpu")
    try:
        total = D.all_reduce_sum(torch.tensor([float(rank + 1), 10.0]))
        parts = D.all_gather_bytes(b"x" * (rank + 2), info.device)
        D.barrier()
        torch.save({"total": total, "parts": parts, "rank": info.rank},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        D.cleanup()


def test_two_process_gloo_all_reduce(tmp_path):
    # fork: the children need not re-import torch (spawn costs ~10 s per child on small CPUs)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        assert r["rank"] == rank
        assert torch.equal(r["total"], torch.tensor([3.0, 20.0]))
        assert r["parts"] == [b"xx", b"xxx"]  # of unequal lengths
