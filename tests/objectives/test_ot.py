"""Tests of vlparse.objectives.ot (IPOT and the VLA loss) against exact OT from POT."""

import numpy as np
import pytest
import torch

from vlparse.objectives import ot as vl_ot

pot = pytest.importorskip("ot")  # the POT library; our module is imported as vl_ot


def _problem(seed: int, masked: bool):
    """A random cosine-cost problem with n, k in 3..8 and optionally one masked token per side."""
    g = torch.Generator().manual_seed(seed)
    n, k = (int(v) for v in torch.randint(3, 9, (2,), generator=g))
    x = torch.randn(1, n, 16, generator=g)
    y = torch.randn(1, k, 16, generator=g)
    x_mask = torch.ones(1, n, dtype=torch.bool)
    y_mask = torch.ones(1, k, dtype=torch.bool)
    if masked:
        x_mask[0, int(torch.randint(0, n, (1,), generator=g))] = False
        y_mask[0, int(torch.randint(0, k, (1,), generator=g))] = False
    return vl_ot.cosine_cost(x, y), x_mask, y_mask


def _exact(cost, x_mask, y_mask) -> float:
    c = cost[0][x_mask[0]][:, y_mask[0]].double().numpy()
    a = np.full(c.shape[0], 1.0 / c.shape[0])
    b = np.full(c.shape[1], 1.0 / c.shape[1])
    return float(pot.emd2(a, b, c))


def _padded_batch(seeds):
    """The problems of ``seeds`` as one batch padded to 8 x 8, with the padding masked."""
    cost = torch.full((len(seeds), 8, 8), 7.0)  # padding cost: must never matter
    x_mask = torch.zeros(len(seeds), 8, dtype=torch.bool)
    y_mask = torch.zeros(len(seeds), 8, dtype=torch.bool)
    exact = []
    for t, seed in enumerate(seeds):
        c, xm, ym = _problem(seed, masked=seed % 2 == 1)
        n, k = xm.shape[1], ym.shape[1]
        cost[t, :n, :k], x_mask[t, :n], y_mask[t, :k] = c[0], xm[0], ym[0]
        exact.append(_exact(c, xm, ym))
    return cost, x_mask, y_mask, torch.tensor(exact, dtype=torch.float64)


@pytest.mark.parametrize("log_domain", [True, False])
def test_ipot_matches_exact_ot(log_domain):
    # Measured over 300 such problems (seeds 0..299): relative error of the transport cost at
    # 50 steps mean 4.7e-4, 99th percentile 2.8e-3, max 4.4e-3 (seed 21); at 1000 steps max 6.6e-5.
    cost, x_mask, y_mask, exact = _padded_batch(range(24))
    plan50 = vl_ot.ipot(cost, x_mask, y_mask, log_domain=log_domain)
    err50 = ((plan50 * cost).sum((1, 2)) - exact).abs() / exact
    plan = vl_ot.ipot(cost, x_mask, y_mask, iters=1000, log_domain=log_domain)
    err1000 = ((plan * cost).sum((1, 2)) - exact).abs() / exact
    assert err50.max() < 5e-3, err50
    assert err1000.max() < 1e-4, err1000
    assert (err1000 <= err50 + 1e-6).all() and err1000.mean() < err50.mean() / 10


@pytest.mark.parametrize("log_domain", [True, False])
def test_ipot_marginals_and_masks(log_domain):
    for seed in range(8):
        cost, x_mask, y_mask = _problem(seed, masked=True)
        plan = vl_ot.ipot(cost, x_mask, y_mask, log_domain=log_domain)
        assert not plan.requires_grad and plan.dtype == torch.float32
        assert (plan >= 0).all()
        nx, ny = x_mask.sum().item(), y_mask.sum().item()
        rows, cols = plan[0].sum(1), plan[0].sum(0)
        torch.testing.assert_close(rows[x_mask[0]], torch.full((nx,), 1 / nx), atol=2e-3, rtol=0)
        torch.testing.assert_close(cols[y_mask[0]], torch.full((ny,), 1 / ny), atol=1e-5, rtol=0)
        assert (plan[0][~x_mask[0]] == 0).all() and (plan[0][:, ~y_mask[0]] == 0).all()
        assert abs(plan.sum().item() - 1.0) < 1e-5


@pytest.mark.parametrize("log_domain", [True, False])
def test_ipot_batched_equals_per_item(log_domain):
    g = torch.Generator().manual_seed(3)
    sizes = [(3, 8), (8, 5), (5, 5), (6, 3)]
    cost = torch.rand(len(sizes), 8, 8, generator=g) * 2
    x_mask = torch.zeros(len(sizes), 8, dtype=torch.bool)
    y_mask = torch.zeros(len(sizes), 8, dtype=torch.bool)
    for t, (n, k) in enumerate(sizes):
        x_mask[t, :n] = True
        y_mask[t, 8 - k:] = True  # padding on the left for this side
    plan = vl_ot.ipot(cost, x_mask, y_mask, log_domain=log_domain)
    for t, (n, k) in enumerate(sizes):
        alone = vl_ot.ipot(
            cost[t:t + 1, :n, 8 - k:],
            torch.ones(1, n, dtype=torch.bool),
            torch.ones(1, k, dtype=torch.bool),
            log_domain=log_domain,
        )
        torch.testing.assert_close(plan[t:t + 1, :n, 8 - k:], alone, atol=1e-6, rtol=1e-5)
        assert plan[t].sum().item() == pytest.approx(1.0, abs=1e-5)


def test_ipot_plain_domain_equals_log_domain():
    cost, x_mask, y_mask, _ = _padded_batch(range(12))
    cost = cost.clamp(max=2.0)  # cosine range, as ot_distance uses it
    log = vl_ot.ipot(cost, x_mask, y_mask, log_domain=True)
    plain = vl_ot.ipot(cost, x_mask, y_mask, log_domain=False)
    torch.testing.assert_close(plain, log, atol=1e-6, rtol=1e-4)


def test_ipot_degenerate_and_large_costs_are_finite():
    cost = torch.rand(2, 4, 3)
    plan = vl_ot.ipot(cost, torch.zeros(2, 4, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool))
    assert (plan == 0).all()
    cost = torch.rand(3, 5, 6) * 500.0  # exp(-C / beta) underflows outside the log domain
    plan = vl_ot.ipot(cost, torch.ones(3, 5, dtype=torch.bool), torch.ones(3, 6, dtype=torch.bool))
    assert plan.isfinite().all()
    torch.testing.assert_close(plan.sum((1, 2)), torch.ones(3), atol=1e-4, rtol=0)


def test_ot_distance_gradient_through_cost_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g, requires_grad=True)
    y = torch.randn(3, 7, 8, generator=g, requires_grad=True)
    x_mask = torch.ones(3, 5, dtype=torch.bool)
    y_mask = torch.ones(3, 7, dtype=torch.bool)
    x_mask[1, 3:] = False
    y_mask[2, :2] = False
    dist = vl_ot.ot_distance(x, y, x_mask, y_mask)
    assert dist.shape == (3,) and dist.dtype == torch.float32
    weights = torch.tensor([1.0, -2.0, 0.5])
    (dist * weights).sum().backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    assert (x.grad[1, 3:] == 0).all() and (y.grad[2, :2] == 0).all()  # padding gets no gradient

    # The same gradient as a constant plan times a differentiable cost.
    xd, yd = x.detach().requires_grad_(), y.detach().requires_grad_()
    cost = vl_ot.cosine_cost(xd, yd)
    plan = vl_ot.ipot(cost, x_mask, y_mask)
    ((plan * cost).sum((1, 2)) * weights).sum().backward()
    torch.testing.assert_close(x.grad, xd.grad)
    torch.testing.assert_close(y.grad, yd.grad)


def test_ot_distance_bf16_and_cosine_cost():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, generator=g)
    y = torch.randn(2, 6, 8, generator=g)
    cost = vl_ot.cosine_cost(x, y)
    ref = 1 - torch.nn.functional.cosine_similarity(x[:, :, None], y[:, None], dim=-1)
    torch.testing.assert_close(cost, ref, atol=1e-6, rtol=1e-5)
    masks = torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)
    d32 = vl_ot.ot_distance(x, y, *masks)
    d16 = vl_ot.ot_distance(x.bfloat16(), y.bfloat16(), *masks)
    assert d16.dtype == torch.float32
    torch.testing.assert_close(d16, d32, atol=2e-2, rtol=0)
    same = vl_ot.ot_distance(x, x, masks[0], masks[0])  # identical token sets: distance ~ 0
    assert same.abs().max() < 1e-2


def test_vla_loss_hand_values():
    distance = torch.tensor([0.2, 0.4, 1.0, 1.5])
    labels = torch.tensor([1, 1, 0, 0])
    # (0.2 + 0.4 - 1.0 - 1.5) / 4
    torch.testing.assert_close(vl_ot.vla_loss(distance, labels), torch.tensor(-1.9 / 4))
    torch.testing.assert_close(
        vl_ot.vla_loss(distance, labels, normalizer=10.0), torch.tensor(-0.19)
    )
    d = distance.clone().requires_grad_()
    vl_ot.vla_loss(d, labels).backward()
    torch.testing.assert_close(d.grad, torch.tensor([0.25, 0.25, -0.25, -0.25]))


def _vla_batch(seed: int = 0):
    """A VLA-sized batch: 16 pairs of 40 text tokens (25 real) x 144 visual tokens, width 64."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 40, 64, generator=g), torch.randn(16, 144, 64, generator=g)
    y = y + 0.5 * x.mean(1, keepdim=True)
    x_mask = torch.ones(16, 40, dtype=torch.bool)
    x_mask[:, 25:] = False
    y_mask = torch.ones(16, 144, dtype=torch.bool)
    cost = vl_ot.cosine_cost(x, y)
    cost = torch.where(x_mask[:, :, None], cost, torch.zeros_like(cost))
    return cost, x_mask, y_mask


def test_ipot_bf16_matmuls_against_float32():
    """bf16 products in the plain domain against float32: the plan keeps its marginals, but the
    distances move by about 1e-3 relative (float32 holds 1e-5), a twentieth of their spread over
    the pairs of the batch, for products that are a small part of a step; the model keeps
    float32 IPOT."""
    cost, x_mask, y_mask = _vla_batch()
    ref = vl_ot.ipot(cost, x_mask, y_mask, log_domain=False)
    log = vl_ot.ipot(cost, x_mask, y_mask, log_domain=True)
    half = vl_ot.ipot(cost, x_mask, y_mask, log_domain=False, matmul_dtype=torch.bfloat16)
    d_ref, d_log, d_half = ((p * cost).sum((1, 2)) for p in (ref, log, half))
    assert ((d_log - d_ref).abs() / d_ref).max() < 1e-5  # float32 agrees with itself
    rel = ((d_half - d_ref).abs() / d_ref).max()
    assert 1e-4 < rel < 5e-3, rel
    torch.testing.assert_close(half.sum(1), ref.sum(1), atol=1e-5, rtol=1e-2)  # columns: 1/k
    spread = (d_ref.max() - d_ref.min()) / d_ref.mean()
    assert spread / 50 < rel < spread / 10, (rel, spread)


def test_ot_stays_float32_under_bf16_autocast_compiled_or_not():
    """Costs and plan are computed with autocast off: under bf16 autocast the distances and the
    plain-domain plan equal the float32 ones exactly (with autocast left on, the plan's products
    run in bf16 and the distances move by about 1e-3 relative), also when torch.compile traces
    the distance as one graph."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 12, 32, generator=g), torch.randn(4, 20, 32, generator=g)
    x_mask = torch.ones(4, 12, dtype=torch.bool)
    x_mask[:, 9:] = False
    y_mask = torch.ones(4, 20, dtype=torch.bool)
    cost = vl_ot.cosine_cost(x, y)
    plan = vl_ot.ipot(cost, x_mask, y_mask, iters=10, log_domain=False)
    ref = vl_ot.ot_distance(x, y, x_mask, y_mask, iters=10)
    compiled = torch.compile(vl_ot.ot_distance, backend="eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(vl_ot.cosine_cost(x, y), cost)
        assert torch.equal(vl_ot.ipot(cost, x_mask, y_mask, iters=10, log_domain=False), plan)
        assert torch.equal(vl_ot.ot_distance(x, y, x_mask, y_mask, iters=10), ref)
        torch.testing.assert_close(compiled(x, y, x_mask, y_mask, iters=10), ref, rtol=1e-6,
                                   atol=1e-7)
