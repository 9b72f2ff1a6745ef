"""FIBER's whole pre-training step in two gloo processes under DDP against one process holding
the global batch: the loss (mean over processes), the ITM rows (the hard negatives drawn from
the gathered batch and fetched from the process that holds them) and every parameter's
gradient (DDP's mean).

Six pairs, three per process; image 0 shows twice on process 0 and image 1 once on each, so the
image ids must cross processes. The processes meet through a file in a temporary folder (no TCP
port to collide with concurrent runs), are forked and run one intra-op thread (a child that
inherits an OpenMP pool the parent used hangs in its first parallel kernel).
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vlparse.config.fiber import FiberObjectiveConfig
from vlparse.models.fiber import FiberModel
from vlparse.objectives import pretrain_loss

WORLD, LOCAL, L = 2, 3, 8
IMAGE_IDS = [0, 1, 0, 2, 1, 3]
WEIGHTS = {"itc": 1.0, "itm": 1.0, "mlm": 1.0}


def _global_batch(vocab: int, image_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = WORLD * LOCAL
    ids = torch.randint(3, vocab, (n, 1, L), generator=g)
    mask = torch.ones(n, 1, L, dtype=torch.long)
    mask[4, 0, 5:] = 0
    labels = torch.full((n, 1, L), -100)
    labels[:, 0, 1:3] = ids[:, 0, 1:3]
    labels[0, 0, 5] = ids[0, 0, 5]  # unequal masked counts per process: 7 and 6
    mlm_ids = torch.where(labels != -100, torch.full_like(ids, 4), ids)
    images = torch.randn(n, 3, image_size, image_size, generator=g)
    images[2] = images[0]  # pairs 0 and 2 show image 0
    images[4] = images[1]
    return {"image": images, "input_ids": ids, "attention_mask": mask, "mlm_input_ids": mlm_ids,
            "mlm_labels": labels, "image_id": torch.tensor(IMAGE_IDS),
            "item_noise": torch.rand(n, 2, generator=g)}


class _Step(nn.Module):
    """The trainer's shape of a step: DDP wraps the module whose forward runs the passes."""

    def __init__(self, model: FiberModel, reduce_count) -> None:
        super().__init__()
        self.model, self.reduce_count = model, reduce_count

    def forward(self, batch: dict[str, torch.Tensor]):
        out = self.model.forward_pretrain(batch)
        return pretrain_loss(out, WEIGHTS, self.reduce_count).total, out


def _build(make_config, set_gates) -> FiberModel:
    torch.manual_seed(0)
    model = FiberModel(make_config(), FiberObjectiveConfig())
    set_gates(model, 0.3, -0.2)
    return model


def _worker(rank: int, folder: str, state: dict, config) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        model = FiberModel(config, FiberObjectiveConfig())
        model.load_state_dict(state)

        def reduce_count(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            dist.all_reduce(t)
            return t / WORLD

        step = nn.parallel.DistributedDataParallel(_Step(model, reduce_count))
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        batch = {k: v[rows] for k, v in _global_batch(50, 40).items()}
        loss, out = step(batch)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        torch.save({"loss": loss.detach(), "itm": out.itm_logits.detach(), "grads": grads},
                   os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture
def ranks(tmp_path, make_config, set_gates) -> list[dict]:
    model = _build(make_config, set_gates)
    mp.start_processes(_worker, args=(str(tmp_path), model.state_dict(), model.cfg),
                       nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_two_processes_equal_one_process_with_the_global_batch(ranks, make_config, set_gates):
    model = _build(make_config, set_gates)
    out = model.forward_pretrain(_global_batch(50, 40))
    loss = pretrain_loss(out, WEIGHTS).total
    loss.backward()
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, loss.detach())
    # ITM rows [pairs, their drawn texts, their drawn images], each process its own pairs'
    n = WORLD * LOCAL
    for rank, result in enumerate(ranks):
        own = [k * n + rank * LOCAL + i for k in range(3) for i in range(LOCAL)]
        torch.testing.assert_close(result["itm"], out.itm_logits.detach()[own])
    for name, p in model.named_parameters():
        for result in ranks:
            torch.testing.assert_close(result["grads"][name], p.grad, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, name=name: f"{name}: {m}")
