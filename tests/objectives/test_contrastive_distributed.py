"""Two gloo processes against one process holding the global batch: the ITC loss and its
gradients (with several captions of one image across processes, and a queue), the gather with
unequal row counts, and the fetch of the hard negatives' raw inputs for the fused ITM pass.

The processes meet through a file in a temporary folder (no TCP port to collide with tests
running at the same time). They are forked (sparing each child the import of torch) and run one
intra-op thread: a child that inherits an OpenMP pool the parent has used hangs in its first
parallel kernel.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlparse.models.fiber.negatives import Negatives, draw_negatives, itm_inputs
from vlparse.objectives.contrastive import FeatureQueue, contrastive_logits, itc_loss
from vlparse.objectives.distributed import all_gather_rows, fetch_rows

WORLD, LOCAL, DIM = 2, 3, 4
IDS = torch.tensor([0, 1, 0, 2, 1, 3])  # image 0 twice on rank 0, image 1 on both ranks
TAU = 0.3
PAD = 9


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = WORLD * LOCAL
    ids = torch.randint(10, 50, (n, 6), generator=g)
    mask = torch.ones(n, 6, dtype=torch.long)
    mask[:LOCAL, 4:] = 0  # rank 0's texts are 4 tokens long: its batch is padded to 4 only
    ids[:LOCAL, 4:] = PAD
    return {"emb": torch.randn(2, 2, n, DIM, generator=g),  # step, image/text, pair, dim
            "images": torch.randn(n, 3, 4, 4, generator=g), "ids": ids, "mask": mask}


def _itc_steps(image_text: torch.Tensor, rows: slice) -> list[dict]:
    """Two ITC steps sharing a queue; the loss, the embeddings' and temperature's gradients."""
    queue, out = FeatureQueue(8, DIM), []
    for step in range(2):
        image, text = (image_text[step, k, rows].clone().requires_grad_() for k in (0, 1))
        tau = torch.tensor(TAU, requires_grad=True)
        logits = contrastive_logits(image, text, tau, IDS[rows], queue=queue)
        loss = itc_loss(logits.i2t, logits.t2i, logits.targets)
        loss.backward()
        g = logits.gathered
        queue.enqueue(g.image, g.text, g.image_ids)
        out.append({"loss": loss.detach(), "image": image.grad, "text": text.grad,
                    "tau": tau.grad, "columns": logits.i2t.shape[1]})
    return out


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        data = _data()
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        result: dict = {"itc": _itc_steps(data["emb"], rows)}
        # unequal row counts: rank 0 holds 2 rows, rank 1 holds 3
        x = (torch.arange(5.0)[:, None] * torch.ones(1, 2))[[slice(0, 2), slice(2, 5)][rank]]
        x.requires_grad_()
        gathered = all_gather_rows(x)
        (gathered * torch.arange(1.0, 6.0)[:, None]).sum().backward()
        wanted = torch.tensor([[4, 0, 4, 1], [2, 3]][rank])
        result |= {"gathered": gathered.detach(), "grad": x.grad,
                   "fetched": fetch_rows(x.detach() * 10, wanted)}
        # hard negatives over the gathered batch, fetched for the fused ITM pass
        length = 4 if rank == 0 else 6
        logits = contrastive_logits(data["emb"][0, 0, rows], data["emb"][0, 1, rows], TAU,
                                    IDS[rows])
        gen = torch.Generator().manual_seed(100 + rank)
        neg = draw_negatives(logits, generator=gen)
        itm = itm_inputs(data["images"][rows], data["ids"][rows, :length],
                         data["mask"][rows, :length], neg, PAD)
        result |= {"negatives": neg, "itm": itm}
        torch.save(result, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two processes computed."""
    folder = tmp_path_factory.mktemp("gloo")
    mp.start_processes(_worker, args=(str(folder),), nprocs=WORLD, join=True,
                       start_method="fork")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_two_processes_equal_one_process_with_the_global_batch(ranks):
    data = _data()
    ref = _itc_steps(data["emb"], slice(None))
    for step in range(2):
        one = ref[step]
        two = [r["itc"][step] for r in ranks]
        assert two[0]["columns"] == one["columns"] == 6 + 6 * step  # the queue: step 1 only
        # DDP averages over processes: the mean loss, the mean temperature gradient, and each
        # process's embedding gradients divided by the number of processes
        torch.testing.assert_close((two[0]["loss"] + two[1]["loss"]) / 2, one["loss"])
        torch.testing.assert_close((two[0]["tau"] + two[1]["tau"]) / 2, one["tau"])
        for k in ("image", "text"):
            torch.testing.assert_close(torch.cat([t[k] for t in two]) / WORLD, one[k])

    # the gather with 2 and 3 rows; the gradient of each row summed over both processes
    rows = torch.arange(5.0)[:, None] * torch.ones(1, 2)
    for result in ranks:
        torch.testing.assert_close(result["gathered"], rows)
    grads = torch.cat([ranks[0]["grad"], ranks[1]["grad"]])
    torch.testing.assert_close(grads, WORLD * torch.arange(1.0, 6.0)[:, None].expand(5, 2))
    torch.testing.assert_close(ranks[0]["fetched"], rows[[4, 0, 4, 1]] * 10)
    torch.testing.assert_close(ranks[1]["fetched"], rows[[2, 3]] * 10)


def test_negative_inputs_come_from_the_process_that_holds_them(ranks):
    data = _data()
    for rank, result in enumerate(ranks):
        neg: Negatives = result["negatives"]
        own = torch.arange(LOCAL) + rank * LOCAL
        assert neg.pool == "gathered" and neg.sizes == [LOCAL, LOCAL] and neg.fallbacks == 0
        for drawn in (neg.text_for_image, neg.image_for_text):
            assert bool((IDS[drawn] != IDS[own]).all())  # never a pair of the same image
        itm = result["itm"]
        # every text padded to the longest of the pool (6 tokens on rank 1)
        images, ids, mask = data["images"], data["ids"], data["mask"]
        assert torch.equal(itm.images, torch.cat([images[own], images[own],
                                                  images[neg.image_for_text]]))
        assert torch.equal(itm.input_ids, torch.cat([ids[own], ids[neg.text_for_image],
                                                     ids[own]]))
        assert torch.equal(itm.attention_mask, torch.cat([mask[own], mask[neg.text_for_image],
                                                          mask[own]]))
        assert itm.labels.tolist() == [1] * LOCAL + [0] * 2 * LOCAL
    drawn_from_other = [bool(((r["negatives"].image_for_text // LOCAL) != k).any())
                        for k, r in enumerate(ranks)]
    assert any(drawn_from_other)  # the fetch really crossed processes
