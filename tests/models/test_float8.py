"""FP8 training layers (torchao) as an option: a clear error without torchao; with it, the
encoder's and parser's products converted, the heads kept, and a step close to the plain one."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.models.test_forward_pretrain import SMALL, _batch
from vlparse.config import load_config
from vlparse.errors import OptionalDependencyError
from vlparse.models.float8 import convert_to_float8
from vlparse.models.single_stream import VisualParsingModel
from vlparse.objectives import pretrain_loss
from vlparse.tasks.pretrain import loss_weights


def test_without_torchao_the_option_fails_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    with pytest.raises(OptionalDependencyError, match="pip install torchao"):
        convert_to_float8(torch.nn.Linear(16, 16))


def test_float8_layers_convert_the_products_and_keep_the_heads():
    pytest.importorskip("torchao.float8")
    cfg = load_config("tiny", SMALL)
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives)
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    weights = loss_weights(cfg, 1.0)
    plain = pretrain_loss(model.forward_pretrain(batch), weights).total.detach()
    names = convert_to_float8(model)
    assert "encoder.layers.0.query" in names and "encoder.layers.1.ffn_out" in names
    assert not any(n.startswith(("mlm_head", "itm_head", "mfr_head")) for n in names)
    assert type(model.itm_head.fc).__name__ == "Linear"
    assert type(model.encoder.layers[0].query).__name__ == "Float8Linear"
    loss = pretrain_loss(model.forward_pretrain(batch), weights).total
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.layers[0].query.weight.grad is not None
    assert abs(float(loss.detach()) - float(plain)) < 0.05 * abs(float(plain))
