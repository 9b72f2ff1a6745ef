"""Tests of vlparse.objectives.mfr: the loss."""

import pytest
import torch

from vlparse.objectives import mfr


def test_mfr_loss_hand_computation():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]], requires_grad=True)
    # squared distances: 5, 2, 4 -> sum 11, over 2 samples
    loss = mfr.mfr_loss(pred, target, num_samples=2)
    torch.testing.assert_close(loss, torch.tensor(5.5))
    torch.testing.assert_close(
        mfr.mfr_loss(pred, target, num_samples=torch.tensor(4.0)), torch.tensor(2.75)
    )
    loss.backward()
    torch.testing.assert_close(pred.grad, (pred - target).detach())  # 2 * diff / 2
    assert target.grad is None  # the target is detached
    with pytest.raises(ValueError, match="same shape"):
        mfr.mfr_loss(pred, target[:2], 2)
