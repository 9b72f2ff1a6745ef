"""Two "nodes" on localhost: two ``torchrun`` launchers of one process each that meet through a
c10d rendezvous (``--nnodes 2 --rdzv_backend c10d --rdzv_endpoint HOST:PORT``, the port found
free at test time), training over gloo as a multi-node job would.

What is compared: every parameter after a few optimizer steps, against one process with the
same global batch (a DDP step averages the two processes' gradients, and the losses'
normalisers are means over processes, so the step is the one-process step of the concatenated
batch, up to float summation order):

- from the manifest: the reference is ``vlparse pretrain`` in one process with the same config
  (the sampler gives rank ``r`` slice ``r`` of every global batch);
- from tar shards: each rank streams its own contiguous part of the epoch, so no plain
  one-process stream has the same batches. The reference is one process whose step ``k`` takes
  rank 0's micro-batch ``k`` followed by rank 1's, read by the same readers
  (:meth:`PretrainTask.shard_dataset` of ranks 0 and 1 of 2, each with its own shuffle buffer
  and caption reservoir), the same collator and the same trainer.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import IterableDataset

from vlparse.config import load_config
from vlparse.data.shards import ShardDataset, write_shards
from vlparse.tasks.pretrain import PretrainTask, run_pretrain
from vlparse.train.trainer import train

SRC = str(Path(__file__).resolve().parents[2] / "src")
STEPS = ["train.max_steps=3", "train.ckpt_every=3", "train.seed=5", "data.shuffle_buffer=20"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(args: list[str], out: Path, logs: Path) -> None:
    """``torchrun --nnodes 2 --nproc_per_node 1`` twice, rendezvous c10d on a free port."""
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
           "--nproc_per_node", "1", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"vlparse-{port}",
           "--rdzv_conf", "join_timeout=300", "--max_restarts", "0",
           "-m", "vlparse", *args, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    files = [open(logs / f"node{n}.log", "w") for n in range(2)]  # noqa: SIM115
    procs = [subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT) for f in files]
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p, f in zip(procs, files, strict=True):
            if p.poll() is None:
                p.kill()
            f.close()
    for n, code in enumerate(codes):
        assert code == 0, (logs / f"node{n}.log").read_text()[-3000:]
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(run_dir / "checkpoints" / latest / "model.safetensors")


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-6, rtol=1e-5), k


class _TwoRanksInOne(IterableDataset):
    """The global batches of a 2-process stream in one process: micro-batch ``k`` of rank 0,
    then micro-batch ``k`` of rank 1, for as long as both have a whole one."""

    def __init__(self, ranks: list[ShardDataset], micro: int) -> None:
        self.ranks, self.micro = ranks, micro

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranks)

    def set_epoch(self, epoch: int) -> None:
        for r in self.ranks:
            r.set_epoch(epoch)

    def resume(self, epoch, consumed, exact=True) -> None:
        raise NotImplementedError("the reference runs without a stop")

    def num_batches(self, batch_size: int, num_workers: int, drop_last: bool = False) -> int:
        assert batch_size == len(self.ranks) * self.micro and num_workers == 0
        return min(r.num_batches(self.micro, 0, drop_last=True) for r in self.ranks)

    def worker_progress(self, batches, batch_size, num_workers, drop_last=False) -> list[int]:
        raise NotImplementedError("the reference runs without a stop")

    def __iter__(self):
        streams = [iter(r) for r in self.ranks]
        while True:
            chunks = [list(itertools.islice(s, self.micro)) for s in streams]
            if any(len(c) < self.micro for c in chunks):
                return
            for chunk in chunks:
                yield from chunk


class _OneProcessOfTwo(PretrainTask):
    def train_dataset(self) -> _TwoRanksInOne:
        micro = self.cfg.train.batch_size // 2
        return _TwoRanksInOne([self.shard_dataset(r, 2) for r in range(2)], micro)


def _args(world: Path, small: list[str], *extra: str) -> list[str]:
    return ["pretrain", "--config", "tiny", "--data", str(world), "--no-eval", *small, *STEPS,
            *extra]


@pytest.mark.slow
def test_two_nodes_from_the_manifest_equal_one_process(scene_world, tmp_path, small_overrides):
    _two_nodes(_args(scene_world, small_overrides), tmp_path / "two", tmp_path)
    cfg = load_config("tiny", [*small_overrides, *STEPS])
    run_pretrain(cfg, scene_world, tmp_path / "one", evaluate=False)
    _assert_same(_weights(tmp_path / "two"), _weights(tmp_path / "one"))


@pytest.mark.slow
def test_two_nodes_from_shards_equal_one_process_of_their_batches(scene_world, tmp_path,
                                                                  small_overrides):
    shards = tmp_path / "shards"
    write_shards(scene_world, shards, maxcount=16, progress=False)
    stream = ["data.format=shards", f"data.shards={shards}"]
    _two_nodes(_args(scene_world, small_overrides, *stream), tmp_path / "two", tmp_path)
    cfg = load_config("tiny", [*small_overrides, *STEPS, *stream])
    train(_OneProcessOfTwo(cfg, scene_world, evaluate=False, log=None), cfg, tmp_path / "one",
          evaluate=False)
    two, one = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    _assert_same(two, one)
    # the reference is no plain stream: one process reading the epoch itself trains otherwise
    run_pretrain(cfg, scene_world, tmp_path / "plain", evaluate=False)
    plain = _weights(tmp_path / "plain")
    assert any(not torch.allclose(plain[k], two[k], atol=2e-6, rtol=1e-5) for k in two)
