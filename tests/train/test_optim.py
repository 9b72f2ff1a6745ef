"""Closed-form checks of the warm-up + step-decay schedule and the optimizer builder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlparse.config import OptimConfig
from vlparse.train.optim import (
    build_optimizer,
    build_scheduler,
    clip_grad_norm,
    decay_boundaries,
    lr_factor,
)


def _cfg(**kw) -> OptimConfig:
    base = dict(warmup_steps=10, decay_epochs=[2, 3], decay_factor=0.1)
    base.update(kw)
    return OptimConfig(**base)


def test_lr_factor_warmup_ramp_and_decays():
    cfg, spe = _cfg(), 20  # decays at steps 40 and 60
    for s in range(10):
        assert lr_factor(s, cfg, spe) == pytest.approx((s + 1) / 10)
    assert lr_factor(9, cfg, spe) == pytest.approx(1.0)
    assert lr_factor(39, cfg, spe) == pytest.approx(1.0)
    assert lr_factor(40, cfg, spe) == pytest.approx(0.1)
    assert lr_factor(59, cfg, spe) == pytest.approx(0.1)
    assert lr_factor(60, cfg, spe) == pytest.approx(0.01)
    assert lr_factor(10_000, cfg, spe) == pytest.approx(0.01)


def test_fractional_epochs_and_no_warmup():
    cfg = _cfg(warmup_steps=0, decay_epochs=[0.1, 0.5])
    assert decay_boundaries(cfg, 30) == [3, 15]  # 0.1 * 30 is 3.0000000000000004, not 4
    assert decay_boundaries(_cfg(decay_epochs=[0.25]), 10) == [3]  # 2.5 rounds up
    assert lr_factor(0, cfg, 30) == 1.0
    assert lr_factor(2, cfg, 30) == 1.0
    assert lr_factor(3, cfg, 30) == pytest.approx(0.1)
    assert lr_factor(15, cfg, 30) == pytest.approx(0.01)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_factor(0, _cfg(), 0)
    with pytest.raises(ValueError, match="step"):
        lr_factor(-1, _cfg(), 10)


def test_scheduler_two_groups_keep_ratio():
    visual, rest = nn.Linear(3, 3), nn.Linear(3, 2)
    groups = [
        {"params": list(visual.parameters()), "lr": 5e-6, "weight_decay": 0.01, "name": "visual"},
        {"params": list(rest.parameters()), "lr": 5e-5, "weight_decay": 0.0, "name": "rest"},
    ]
    cfg, spe = _cfg(warmup_steps=4, decay_epochs=[1.5]), 4  # decay at step 6
    opt = build_optimizer(groups, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["name"] == "visual"
    assert opt.defaults["betas"] == tuple(cfg.betas)
    sched = build_scheduler(opt, cfg, spe)
    for step in range(10):
        f = lr_factor(step, cfg, spe)
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs[0] == pytest.approx(5e-6 * f)
        assert lrs[1] == pytest.approx(5e-5 * f)
        assert lrs[1] / lrs[0] == pytest.approx(10.0)
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(5e-6)  # 5e-5 * 0.1 after step 6


def test_scheduler_state_round_trip():
    p = nn.Parameter(torch.zeros(2))
    cfg = _cfg()
    opt = build_optimizer([{"params": [p], "lr": 1.0, "weight_decay": 0.0}], cfg)
    sched = build_scheduler(opt, cfg, 20)
    for _ in range(45):
        opt.step()
        sched.step()
    opt2 = build_optimizer([{"params": [p], "lr": 1.0, "weight_decay": 0.0}], cfg)
    sched2 = build_scheduler(opt2, cfg, 20)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 45
    assert sched2.get_last_lr()[0] == pytest.approx(0.1)


def test_group_without_lr_is_an_error():
    with pytest.raises(ValueError, match="weight_decay"):
        build_optimizer([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0}], _cfg())


def test_clip_grad_norm():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([p], None) is None
    assert clip_grad_norm([p], 0) is None
    norm = clip_grad_norm([p], 1.0)
    assert norm == pytest.approx(5.0)
    assert math.isclose(p.grad.norm().item(), 1.0, rel_tol=1e-5)
