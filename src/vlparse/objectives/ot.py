"""Vision-language token alignment (VLA, paper section 3.3): optimal transport between the text
tokens and the visual tokens of each pair, approximated by IPOT.

IPOT is the Inexact Proximal point method for Optimal Transport (Xie et al., UAI 2019): each
outer step solves ``min_P <C, P> + beta * KL(P || P_t)`` with a few Sinkhorn scalings, which tends
to the exact transport plan (not an entropy-blurred one) as the steps go on. Here it runs in
float32 and without gradient (in the log domain, or multiplying the kernel directly when the
costs are bounded, as cosine costs are); the distance is differentiated through the cost only
(the plan is treated as a constant, the envelope-theorem gradient of the OT cost). The costs and
the plan are computed with autocast off, so they stay float32 under bf16 autocast too, compiled
or not.

Shapes: ``T`` pairs, ``n`` tokens on one side (e.g. words), ``k`` on the other (visual tokens),
``D`` feature width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vlparse.objectives.mlm import scale_sum

_R = TypeVar("_R")


def cosine_cost(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise cosine distance ``1 - cos(x_i, y_j)``, in float32 (autocast off).

    Args:
        x: ``(T, n, D)``; y: ``(T, k, D)``.

    Returns:
        ``(T, n, k)`` float32 with values in ``[0, 2]``; a zero vector has cost 1 to everything.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"cosine_cost: expected x (T, n, D) and y (T, k, D), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    return _autocast_off(x.device, _cosine_cost, x, y, eps)


def _cosine_cost(x: Tensor, y: Tensor, eps: float) -> Tensor:
    """:func:`cosine_cost` without the checks: ``(T, n, D), (T, k, D) -> (T, n, k)`` float32."""
    xn = F.normalize(x.float(), dim=-1, eps=eps)
    yn = F.normalize(y.float(), dim=-1, eps=eps)
    return 1.0 - torch.bmm(xn, yn.transpose(1, 2))


def _autocast_off(device: torch.device, fn: Callable[..., _R], *args: object) -> _R:
    """``fn(*args)`` with autocast off on ``device``, so that its products run in the dtype of
    their operands (float32 here) and not in autocast's bf16.

    The meta device has no autocast, so there is nothing to turn off there. The device type is
    compared as a string on purpose: ``torch.autocast`` itself is traced by ``torch.compile``
    into the graph, but a call to ``torch.amp.is_autocast_available`` before it made Dynamo
    break the compiled pre-training step here on CUDA and recompile the rest of the function at
    every step.
    """
    if device.type == "meta":
        return fn(*args)
    with torch.autocast(device_type=device.type, enabled=False):
        return fn(*args)


def _check_masks(cost: Tensor, x_mask: Tensor, y_mask: Tensor, where: str) -> None:
    t, n, k = cost.shape
    if x_mask.shape != (t, n) or y_mask.shape != (t, k):
        raise ValueError(
            f"{where}: masks must be x_mask (T, n) = {(t, n)} and y_mask (T, k) = {(t, k)}, got "
            f"{tuple(x_mask.shape)} and {tuple(y_mask.shape)}"
        )


@torch.no_grad()
def ipot(
    cost: Tensor,
    x_mask: Tensor,
    y_mask: Tensor,
    beta: float = 0.5,
    iters: int = 50,
    inner_iters: int = 1,
    log_domain: bool = True,
    matmul_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Transport plan of IPOT with uniform marginals over the unmasked tokens of each side.

    Row ``i`` of pair ``t`` carries mass ``1 / x_mask[t].sum()`` if unmasked, 0 otherwise; likewise
    the columns with ``y_mask``. Masked rows and columns get an exactly zero plan; a pair with no
    unmasked token on either side gets an all-zero plan. The last scaling of each step fits the
    column marginals exactly; the row marginals converge with the steps.

    Args:
        cost: ``(T, n, k)`` cost matrices (detached; computed in float32 whatever their dtype).
        x_mask: ``(T, n)`` bool, True for real tokens; y_mask: ``(T, k)`` bool.
        beta: proximal step size (the KL weight); smaller is closer to exact OT per step.
        iters: outer proximal steps; inner_iters: Sinkhorn scalings per step.
        log_domain: run the scalings on log values (safe for any cost and ``beta``). ``False``
            multiplies ``exp(-cost / beta)`` directly, about 3x cheaper (matrix products instead of
            log-sum-exps); it needs ``max(cost) / beta`` well under 80 so the kernel does not
            underflow in float32, e.g. cosine costs (at most 2) with ``beta >= 0.05``.
        matmul_dtype: the dtype of the plain domain's matrix products (their operands; the
            scalings stay float32), under autocast too. ``torch.bfloat16`` halves their bytes
            but moves the distances by about 1e-3 relative, where float32 holds 1e-5; the VLA
            loss is a small difference of such distances, so the model keeps float32
            (``tests/objectives/test_ot.py``).

    Returns:
        ``(T, n, k)`` float32 plan, no gradient.
    """
    if cost.dim() != 3:
        raise ValueError(f"ipot: cost must be (T, n, k), got {tuple(cost.shape)}")
    _check_masks(cost, x_mask, y_mask, "ipot")
    if beta <= 0 or iters < 1 or inner_iters < 1:
        raise ValueError(
            f"ipot: need beta > 0, iters >= 1, inner_iters >= 1; got beta={beta}, "
            f"iters={iters}, inner_iters={inner_iters}"
        )
    cost = cost.detach().float()
    x_mask = x_mask.to(device=cost.device, dtype=torch.bool)
    y_mask = y_mask.to(device=cost.device, dtype=torch.bool)
    joint = x_mask[:, :, None] & y_mask[:, None, :]  # (T, n, k)
    valid = (x_mask.any(-1) & y_mask.any(-1))[:, None]  # (T, 1): pairs with mass on both sides
    row_ok = x_mask & valid
    col_ok = y_mask & valid
    # autocast off: under bf16 autocast the plain domain's products would otherwise run in bf16
    # whatever matmul_dtype says
    if log_domain:
        plan = _autocast_off(cost.device, _ipot_log, cost, joint, row_ok, col_ok, x_mask, y_mask,
                             beta, iters, inner_iters)
    else:
        plan = _autocast_off(cost.device, _ipot_plain, cost, joint, row_ok, col_ok, x_mask,
                             y_mask, beta, iters, inner_iters, matmul_dtype)
    return torch.where(joint & valid[:, :, None], plan, torch.zeros_like(cost))


def _ipot_log(cost, joint, row_ok, col_ok, x_mask, y_mask, beta, iters, inner_iters) -> Tensor:
    neg_inf = cost.new_full((), float("-inf"))  # filled on the device: no copy from the host
    # Log marginals: -log(count) on real tokens, -inf elsewhere.
    log_mu = torch.where(row_ok, -x_mask.sum(-1, keepdim=True).clamp_min(1).float().log(), neg_inf)
    log_nu = torch.where(col_ok, -y_mask.sum(-1, keepdim=True).clamp_min(1).float().log(), neg_inf)
    log_kernel = torch.where(joint, -cost / beta, neg_inf)  # log of exp(-C / beta)

    log_plan = torch.where(joint, torch.zeros_like(cost), neg_inf)  # P_0 = 1 on the support
    log_b = log_nu.clone()
    for _ in range(iters):
        log_q = log_kernel + log_plan  # Q = exp(-C / beta) * P_t
        for _ in range(inner_iters):
            log_a = torch.where(row_ok, log_mu - torch.logsumexp(log_q + log_b[:, None, :], -1),
                                neg_inf)
            log_b = torch.where(col_ok, log_nu - torch.logsumexp(log_q + log_a[:, :, None], -2),
                                neg_inf)
        log_plan = log_a[:, :, None] + log_q + log_b[:, None, :]
    return log_plan.exp()


def _ipot_plain(cost, joint, row_ok, col_ok, x_mask, y_mask, beta, iters, inner_iters,
                dtype=torch.float32) -> Tensor:
    zero = torch.zeros((), device=cost.device)
    mu = torch.where(row_ok, 1.0 / x_mask.sum(-1, keepdim=True).clamp_min(1).float(), zero)
    nu = torch.where(col_ok, 1.0 / y_mask.sum(-1, keepdim=True).clamp_min(1).float(), zero)
    kernel = torch.where(joint, torch.exp(-cost / beta), zero)  # (T, n, k)
    plan = joint.float()  # P_0 = 1 on the support
    b = nu.clone()
    tiny = torch.finfo(torch.float32).tiny
    for _ in range(iters):
        q = (kernel * plan).to(dtype)
        for _ in range(inner_iters):
            qb = torch.bmm(q, b.to(dtype)[:, :, None])[..., 0].float()
            a = torch.where(row_ok, mu / qb.clamp_min(tiny), zero)
            aq = torch.bmm(a.to(dtype)[:, None, :], q)[:, 0].float()
            b = torch.where(col_ok, nu / aq.clamp_min(tiny), zero)
        plan = a[:, :, None] * q.float() * b[:, None, :]
    return plan


def ot_distance(
    x: Tensor,
    y: Tensor,
    x_mask: Tensor,
    y_mask: Tensor,
    beta: float = 0.5,
    iters: int = 50,
) -> Tensor:
    """IPOT transport cost ``sum(plan * cosine_cost(x, y))`` per pair.

    The gradient flows to ``x`` and ``y`` through the cost; the plan is a constant.

    Args:
        x: ``(T, n, D)`` tokens of one side; y: ``(T, k, D)`` of the other.
        x_mask: ``(T, n)`` bool, True for real tokens; y_mask: ``(T, k)`` bool.

    Returns:
        ``(T,)`` float32 distances in ``[0, 2]``.
    """
    cost = cosine_cost(x, y)
    _check_masks(cost, x_mask, y_mask, "ot_distance")
    joint = x_mask.bool()[:, :, None] & y_mask.bool()[:, None, :]
    cost = torch.where(joint, cost, torch.zeros_like(cost))  # padding cannot leak NaN or grads
    # Cosine costs are at most 2, so the plain-domain IPOT is safe unless beta is tiny.
    plan = ipot(cost, x_mask, y_mask, beta=beta, iters=iters, log_domain=beta < 0.05)
    return (plan * cost).sum(dim=(-2, -1))


def vla_loss(
    distance: Tensor, labels: Tensor, normalizer: float | Tensor | None = None
) -> Tensor:
    """VLA loss: ``(sum of matched distances - sum of unmatched distances) / normalizer``.

    Sign convention: minimising it pulls the tokens of matched pairs together (their OT distance
    goes down) and pushes unmatched pairs apart (their distance goes up). It is bounded because
    cosine distances lie in ``[0, 2]``.

    Args:
        distance: ``(T,)`` from :func:`ot_distance`.
        labels: ``(T,)`` 1 matched / 0 unmatched (the ITM labels).
        normalizer: divisor; default ``T``.
    """
    if distance.shape != labels.shape or distance.dim() != 1:
        raise ValueError(
            f"vla_loss: expected distance (T,) and labels (T,), got {tuple(distance.shape)} and "
            f"{tuple(labels.shape)}"
        )
    matched = labels.to(torch.bool)
    distance = distance.float()
    total = torch.where(matched, distance, -distance).sum()
    return scale_sum(total, normalizer, labels.numel())
