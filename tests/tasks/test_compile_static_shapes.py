"""``train.compile``: the pre-training task of either family builds its model with static shapes
(no data-dependent size in the step, which would break the compiled graphs); without it, the
boolean MLM gather stays. Nothing is compiled or trained here."""

from __future__ import annotations

import pytest

from tests.tasks.test_pretrain_fiber import SMALL as FIBER_SMALL
from vlparse.config import load_config
from vlparse.tasks.pretrain import PretrainTask


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compile"])
def test_visual_parsing_pretrain_task(scene_world, small_overrides, compile_):
    cfg = load_config("tiny", [*small_overrides, f"train.compile={str(compile_).lower()}"])
    model = PretrainTask(cfg, scene_world, evaluate=False, log=None).build_model()
    assert model.static_shapes is compile_


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compile"])
def test_fiber_pretrain_task(scene_world, compile_):
    cfg = load_config("fiber_tiny", [*FIBER_SMALL, f"train.compile={str(compile_).lower()}"])
    lines: list[str] = []
    model = PretrainTask(cfg, scene_world, evaluate=False, log=lines.append).build_model()
    assert model.static_shapes is compile_
    assert any("static shapes on" in line for line in lines) is compile_


def test_visual_parsing_held_out_evaluation_is_the_same_with_static_shapes(scene_world,
                                                                          small_overrides):
    """With static shapes the MLM logits come at every position (labels -100 where nothing was
    masked); the held-out MLM accuracy, its chance level and its token count must not change."""
    import torch

    cfg = load_config("tiny", [*small_overrides, "train.eval_images=8"])
    task = PretrainTask(cfg, scene_world, evaluate=True, log=None)
    torch.manual_seed(0)
    model = task.build_model().eval()
    plain = task.evaluate(model, torch.device("cpu"))
    model.set_static_shapes(True)
    static = task.evaluate(model, torch.device("cpu"))
    assert plain["mlm_tokens"] > 0
    for key in ("mlm_acc", "mlm_chance", "mlm_tokens", "mlm_acc_wrong_image", "itm_acc"):
        assert static[key] == pytest.approx(plain[key]), key
