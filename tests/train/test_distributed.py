"""Single-process defaults and a 2-process gloo all-reduce.

DDP wrapping is not exercised here: constructing DistributedDataParallel imports torch._dynamo
(6-12 s on a small CPU); the training-loop tests cover it.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from torch import nn

from vlparse.train import distributed as D


def test_single_process_without_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = D.init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
    assert info.device == torch.device("cpu")
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(D.all_reduce_sum(t), torch.tensor([1.0, 2.0]))
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    D.barrier()
    model = nn.Linear(2, 2)
    assert D.wrap_ddp(model, info) is model
    D.cleanup()


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
        obj = D.broadcast_object({"from": info.rank} if info.is_main else None)
        D.barrier()
        torch.save({"total": total, "obj": obj, "rank": info.rank},
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
        assert r["obj"] == {"from": 0}
