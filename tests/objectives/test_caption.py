"""Captioning losses against hand computations; the self-critical gradient's sign."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.objectives.caption import (
    caption_mle_loss,
    mix_caption_losses,
    self_critical_loss,
    token_logprobs,
)


def _log_softmax(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(x) for x in row))
    return [x - z for x in row]


LOGITS = torch.tensor(
    [
        [[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -0.5, 0.3], [0.2, 0.1, 0.0, -2.0]],
        [[-0.3, 0.8, 0.1, 1.5], [2.0, -1.0, 0.4, 0.0], [9.0, 9.0, 9.0, 9.0]],
    ]
)
LABELS = torch.tensor([[3, 2, 1], [3, 0, -100]])  # first id: the start token; -100: padding


def _expected(eps: float) -> float:
    """Mean over the 3 targets of -(1 - eps) log p_y - eps / V sum_v log p_v."""
    losses = []
    for b, t in [(0, 0), (0, 1), (1, 0)]:  # logits[b, t] predicts LABELS[b, t + 1]
        logp = _log_softmax(LOGITS[b, t].tolist())
        y = int(LABELS[b, t + 1])
        losses.append(-(1 - eps) * logp[y] - eps / 4 * sum(logp))
    return sum(losses) / 3


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_mle_loss_shifts_labels_and_ignores_padding(eps):
    loss = caption_mle_loss(LOGITS, LABELS, label_smoothing=eps)
    assert loss.item() == pytest.approx(_expected(eps), rel=1e-6)


def test_mle_loss_normalizer():
    total = caption_mle_loss(LOGITS, LABELS, normalizer=1.0)
    assert total.item() == pytest.approx(3 * _expected(0.0), rel=1e-6)


def test_token_logprobs_with_temperature():
    tokens = torch.tensor([[2, 0, 3], [1, 1, 0]])
    out = token_logprobs(LOGITS, tokens, temperature=2.0)
    for b in range(2):
        for t in range(3):
            row = [x / 2.0 for x in LOGITS[b, t].tolist()]
            assert out[b, t].item() == pytest.approx(_log_softmax(row)[tokens[b, t]], rel=1e-6)


def test_self_critical_gradient_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.1, -4.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rewards, baseline = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0])
    loss = self_critical_loss(logprobs, mask, rewards, baseline)
    # -(sum (r - b) * logp * mask) / 5 tokens
    assert loss.item() == pytest.approx(-(1.0 * (-3.0) + (-0.5) * (-4.4)) / 5)
    loss.backward()
    expected = torch.tensor([[-1.0, -1.0, 0.0], [0.5, 0.5, 0.5]]) / 5
    torch.testing.assert_close(logprobs.grad, expected)


def test_self_critical_step_favours_captions_better_than_greedy():
    torch.manual_seed(0)
    table = torch.randn(3, 6, requires_grad=True)  # a policy: logits of each position
    better, worse = torch.tensor([1, 2, 0]), torch.tensor([3, 4, 5])
    samples = torch.stack([better, worse])
    mask = torch.ones(2, 3)

    def seq_logprob() -> torch.Tensor:
        return token_logprobs(table.expand(2, 3, 6), samples).sum(1)

    before = seq_logprob().detach()
    rewards, greedy = torch.tensor([1.3, 0.4]), torch.tensor([0.8, 0.8])  # CIDEr-D values
    loss = self_critical_loss(token_logprobs(table.expand(2, 3, 6), samples), mask, rewards, greedy)
    loss.backward()
    with torch.no_grad():
        table -= 0.5 * table.grad
    after = seq_logprob().detach()
    assert after[0] > before[0]  # better than greedy: more likely
    assert after[1] < before[1]  # worse than greedy: less likely


def test_self_critical_ignores_padding_and_checks_shapes():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]])
    self_critical_loss(logprobs, mask, torch.ones(2), torch.zeros(2)).backward()
    assert (logprobs.grad[mask == 0] == 0).all() and (logprobs.grad[mask == 1] != 0).all()
    with pytest.raises(ValueError, match="rewards"):
        self_critical_loss(logprobs, mask, torch.ones(3), torch.zeros(3))


def test_mix():
    mle, rl = torch.tensor(2.0), torch.tensor(-1.0)
    assert mix_caption_losses(mle, rl, 0.7).item() == pytest.approx(0.3 * 2.0 - 0.7)
    with pytest.raises(ValueError):
        mix_caption_losses(mle, rl, 1.5)
