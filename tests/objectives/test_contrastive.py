"""FIBER's contrastive objective in one process: the logits and loss against a hand computation,
several captions of one image, the temperature's clamp, and the queue of earlier features."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.objectives.contrastive import (
    FeatureQueue,
    clamp_temperature,
    contrastive_logits,
    itc_loss,
)


def _ce(row: list[float], target: int) -> float:
    """Cross-entropy of one row of logits, by hand (``None`` entries are masked out)."""
    kept = [x for x in row if x is not None]
    return math.log(sum(math.exp(x) for x in kept)) - row[target]


def test_itc_equals_a_hand_computation_with_two_captions_of_one_image():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    text = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 2.0]])  # the last one normalises to (0, 1)
    ids = torch.tensor([7, 3, 7])  # pairs 0 and 2 show the same image
    out = contrastive_logits(image, text, 0.5, ids)
    # cosine / 0.5, the other caption of image 7 masked out of rows 0 and 2 (None)
    i2t = [[1.6, 2.0, None], [1.92, 1.2, 1.6], [None, 0.0, 2.0]]
    t2i = [[1.6, 1.92, None], [2.0, 1.2, 0.0], [None, 1.6, 2.0]]
    for got, want in ((out.i2t, i2t), (out.t2i, t2i)):
        for r, row in enumerate(want):
            for c, x in enumerate(row):
                if x is None:
                    assert got[r, c] == float("-inf")
                else:
                    assert got[r, c].item() == pytest.approx(x, abs=1e-6)
    assert out.targets.tolist() == [0, 1, 2]
    want_loss = 0.5 * (sum(_ce(row, k) for k, row in enumerate(i2t)) / 3
                       + sum(_ce(row, k) for k, row in enumerate(t2i)) / 3)
    loss = itc_loss(out.i2t, out.t2i, out.targets)
    assert loss.item() == pytest.approx(want_loss, rel=1e-6)


def test_without_ids_every_pair_is_its_own_image():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    out = contrastive_logits(image, text, 1.0)
    assert torch.isfinite(out.i2t).all() and torch.isfinite(out.t2i).all()
    want = 0.5 * ((_ce([1.0, 1.0], 0) + _ce([0.0, 0.0], 1))
                  + (_ce([1.0, 0.0], 0) + _ce([1.0, 0.0], 1))) / 2
    assert itc_loss(out.i2t, out.t2i, out.targets).item() == pytest.approx(want, rel=1e-6)


def test_masked_columns_give_finite_gradients_and_none_to_the_masked_pairs():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(4, 5, generator=g, requires_grad=True)
    text = torch.randn(4, 5, generator=g, requires_grad=True)
    ids = torch.tensor([0, 1, 0, 0])
    out = contrastive_logits(image, text, 0.1, ids)
    itc_loss(out.i2t, out.t2i, out.targets).backward()
    assert torch.isfinite(image.grad).all() and torch.isfinite(text.grad).all()
    # two captions of a two-pair batch, both of one image: nothing left to contrast, loss 0
    pair = contrastive_logits(image[:1].expand(2, 5), text[:2], 0.1, torch.tensor([4, 4]))
    assert itc_loss(pair.i2t, pair.t2i, pair.targets).item() == 0.0


def test_temperature_is_clamped_and_learns_only_inside_its_range():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    for start, grad_expected in ((1e-4, False), (0.5, True), (3.0, False)):
        tau = torch.tensor(start, requires_grad=True)
        used = clamp_temperature(tau, 0.001, 1.0)
        out = contrastive_logits(image, image, used)
        bound = min(max(start, 0.001), 1.0)
        assert out.i2t[0, 1].item() == pytest.approx(0.6 / bound, rel=1e-5)
        itc_loss(out.i2t, out.t2i, out.targets).backward()
        assert (tau.grad != 0).item() == grad_expected
    with pytest.raises(ValueError, match="low <= high"):
        clamp_temperature(torch.tensor(0.07), 0.5, 0.1)


def test_queue_is_fifo_and_starts_empty():
    queue = FeatureQueue(5, 2)
    assert len(queue) == 0
    for step in range(3):  # 3 batches of 2 entries (k, 1), k = 0..5: the first falls out
        feats = torch.tensor([[2.0 * step, 1.0], [2.0 * step + 1, 1.0]])
        queue.enqueue(feats, -feats, torch.tensor([10 * step, 10 * step + 1]))
    for stored, sign in ((queue.image, 1), (queue.text, -1)):
        assert (stored[:, 0] / stored[:, 1]).tolist() == pytest.approx([1, 2, 3, 4, 5])
        torch.testing.assert_close(stored.norm(dim=1), torch.ones(5))
        assert bool((sign * stored[:, 1] > 0).all())
    assert queue.image_ids.tolist() == [1, 10, 11, 20, 21]
    queue.enqueue(torch.zeros(7, 2), torch.zeros(7, 2))  # more than fits: the last 5, ids -1
    assert len(queue) == 5 and queue.image_ids.tolist() == [-1] * 5
    assert "image" not in queue.state_dict()  # not saved with the model
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        queue.enqueue(torch.zeros(2, 3), torch.zeros(2, 3))


def test_queued_features_are_extra_negatives_without_gradient():
    g = torch.Generator().manual_seed(1)
    earlier = torch.randn(2, 4, generator=g, requires_grad=True)
    queue = FeatureQueue(8, 4)
    queue.enqueue(earlier, earlier.flip(0), torch.tensor([5, 6]))
    assert not queue.image.requires_grad and not queue.text.requires_grad
    image = torch.randn(3, 4, generator=g, requires_grad=True)
    text = torch.randn(3, 4, generator=g, requires_grad=True)
    ids = torch.tensor([1, 5, 2])  # the second pair's image is in the queue (id 5)
    out = contrastive_logits(image, text, 0.2, ids, queue=queue)
    plain = contrastive_logits(image, text, 0.2, ids)
    assert out.i2t.shape == out.t2i.shape == (3, 5)
    assert out.targets.tolist() == plain.targets.tolist() == [0, 1, 2]
    torch.testing.assert_close(out.i2t[:, :3], plain.i2t)
    unit = torch.nn.functional.normalize
    torch.testing.assert_close(queue.text, unit(earlier.flip(0), dim=-1))  # stored unit-length
    rows = [0, 2]  # row 1 shows the queue's image 5: masked below
    torch.testing.assert_close(out.i2t[rows, 3:4],
                               unit(image[rows], dim=-1) @ queue.text[:1].T / 0.2)
    torch.testing.assert_close(out.t2i[:, 4:], unit(text, dim=-1) @ queue.image[1:].T / 0.2)
    assert out.i2t[1, 3] == float("-inf") and out.t2i[1, 3] == float("-inf")  # same image
    assert torch.isfinite(out.i2t[[0, 2], 3]).all()
    loss = itc_loss(out.i2t, out.t2i, out.targets)
    assert loss > itc_loss(plain.i2t, plain.t2i, plain.targets)  # more negatives, more loss
    loss.backward()
    assert earlier.grad is None and image.grad is not None
