"""pretrain_loss: each term against its closed form, weights, skipped terms, the DDP normaliser."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlparse.models.outputs import PretrainOutput
from vlparse.objectives import pretrain_loss


def _output(seed: int = 0, **fields) -> PretrainOutput:
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0])
    out = PretrainOutput(
        itm_logits=torch.randn(8, 2, generator=g), itm_labels=labels,
        vla_distance=torch.rand(8, generator=g) * 2,
        mlm_logits=torch.randn(5, 11, generator=g), mlm_labels=torch.randint(0, 11, (5,),
                                                                             generator=g),
        mfr_pred=torch.randn(6, 3, generator=g), mfr_target=torch.randn(6, 3, generator=g),
        mfr_num_samples=4,
    )
    for k, v in fields.items():
        setattr(out, k, v)
    return out


def _by_hand(out: PretrainOutput) -> dict[str, float]:
    """Each term from its definition, with Python loops."""
    itm = sum(-math.log(torch.softmax(row, 0)[int(y)]) for row, y in
              zip(out.itm_logits, out.itm_labels, strict=True)) / 8
    vla = sum(float(d) if int(y) else -float(d) for d, y in
              zip(out.vla_distance, out.itm_labels, strict=True)) / 8
    mlm = sum(-math.log(torch.softmax(row, 0)[int(y)]) for row, y in
              zip(out.mlm_logits, out.mlm_labels, strict=True)) / 5
    mfr = float(((out.mfr_pred - out.mfr_target) ** 2).sum()) / 4
    return {"itm": float(itm), "vla": vla, "mlm": float(mlm), "mfr": mfr}


def test_each_term_and_the_weighted_total():
    out = _output()
    weights = {"itm": 1.0, "vla": 0.1, "mlm": 0.5, "mfr": 0.01}
    res = pretrain_loss(out, weights)
    ref = _by_hand(out)
    for k, v in ref.items():
        assert float(res.parts[k]) == pytest.approx(v, rel=1e-5), k
    assert float(res.total) == pytest.approx(sum(weights[k] * ref[k] for k in ref), rel=1e-5)
    correct = int((out.itm_logits.argmax(1) == out.itm_labels).sum())
    assert res.counts["itm_correct"] == correct and res.counts["itm_total"] == 8
    assert res.counts["mlm_total"] == 5
    assert res.counts["mlm_correct"] == int((out.mlm_logits.argmax(1) == out.mlm_labels).sum())


def test_missing_fields_skip_a_term_and_zero_weights_only_report_it():
    out = _output(mlm_logits=None, mlm_labels=None, mfr_pred=None, mfr_target=None)
    res = pretrain_loss(out, {"itm": 1.0, "vla": 0.0, "mlm": 1.0, "mfr": 0.01})
    assert set(res.parts) == {"itm", "vla"} and "mlm_total" not in res.counts
    torch.testing.assert_close(res.total, res.parts["itm"])  # VLA reported, weighted 0
    with pytest.raises(ValueError, match="unknown terms"):
        pretrain_loss(out, {"itm": 1.0, "mmm": 1.0})
    with pytest.raises(ValueError, match="no term with a non-zero weight"):
        pretrain_loss(out, {"itm": 0.0})


def test_mlm_is_normalised_by_the_count_over_processes():
    out = _output()
    # two processes with 5 and 15 masked tokens: the mean count is 10
    res = pretrain_loss(out, {"mlm": 1.0}, reduce_count=lambda t: (t + 15.0) / 2)
    summed = F.cross_entropy(out.mlm_logits, out.mlm_labels, reduction="sum")
    torch.testing.assert_close(res.parts["mlm"], summed / 10.0)


def test_itc_term_is_the_symmetric_infonce():
    g = torch.Generator().manual_seed(3)
    sim = torch.randn(4, 4, generator=g)
    out = PretrainOutput(itc_logits_i2t=sim, itc_logits_t2i=sim.t(), itc_targets=torch.arange(4))
    res = pretrain_loss(out, {"itc": 1.0})
    i2t = sum(-math.log(torch.softmax(sim[i], 0)[i]) for i in range(4)) / 4
    t2i = sum(-math.log(torch.softmax(sim[:, i], 0)[i]) for i in range(4)) / 4
    assert float(res.total) == pytest.approx(0.5 * float(i2t + t2i), rel=1e-5)
