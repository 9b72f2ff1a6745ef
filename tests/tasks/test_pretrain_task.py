"""PretrainTask: the trainer's protocol, one step (weights, the MLM schedule, logged scalars),
evaluation, and what it reports at start."""

from __future__ import annotations

import warnings

import pytest
import torch

from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.objectives import pretrain_loss
from vlparse.tasks.pretrain import PretrainTask, loss_weights
from vlparse.train.protocol import StepContext, TrainTask


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@pytest.fixture(scope="module")
def task(scene_world, small_overrides):
    cfg = load_config("tiny", [*small_overrides, "objectives.mlm_delay=2",
                               "objectives.mlm_ramp=4"])
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the world's texts are all known to the tokenizer
        task = PretrainTask(cfg, scene_world, log=lines.append)
    task.lines = lines
    return task


@pytest.fixture(scope="module")
def batch(task):
    data = task.train_dataset()
    return task.collate([data[i] for i in range(4)])


def test_protocol_and_start_up_report(task):
    assert isinstance(task, TrainTask) and task.name == "pretrain"
    assert any(line.startswith("unmatched captions verified") for line in task.lines)
    assert any(line.startswith("unknown tokens: 0.00% ") for line in task.lines)
    assert task.find_unused_parameters  # the masked pass is skipped during mlm_delay
    assert task.curve_keys()[-1] == "mlm_weight"
    assert len(task.eval_dataset()) > 0


def test_model_and_batch_fit_together(task, batch):
    torch.manual_seed(0)
    model = task.build_model()
    assert isinstance(model, VisualParsingModel) and model.objectives == task.cfg.objectives
    o = task.cfg.objectives
    assert batch["input_ids"].shape[:2] == (4, o.num_pos + o.num_neg)
    assert batch["mfr_noise"].shape == (4, model.num_visual_tokens)
    out = model.forward_pretrain(batch)
    assert out.itm_labels.numel() == 4 * (o.num_pos + o.num_neg)


def test_step_follows_the_mlm_schedule(task, batch):
    torch.manual_seed(0)
    model = task.build_model().eval()
    # step 0 < mlm_delay: the masked pass is skipped, nothing of MLM or MFR is logged
    early = task.step(model, batch, StepContext(0, _identity))
    assert {"mlm", "mfr"}.isdisjoint(early.scalars)
    assert early.scalars["mlm_weight"] == 0.0 and "mlm_total" not in early.counts
    # step 3: weight (3 - 2) / 4 on MLM, the other terms as configured
    step = task.step(model, batch, StepContext(3, _identity))
    assert step.scalars["mlm_weight"] == 0.25
    o = task.cfg.objectives
    expected = (o.lambda_itm * step.scalars["itm"] + o.lambda_itm * o.vla_weight
                * step.scalars["vla"] + 0.25 * step.scalars["mlm"] + o.lambda_mfr
                * step.scalars["mfr"])
    assert float(step.loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert step.scalars["loss"] == pytest.approx(float(step.loss.detach()))
    c = step.counts
    assert 0 <= int(c["itm_correct"]) <= c["itm_total"] == 4 * (o.num_pos + o.num_neg)
    assert int(c["mlm_total"]) == int((batch["mlm_labels"][:, :o.num_pos] != -100).sum())
    assert "visual_spread" in step.scalars
    # the same as the model's passes and the combiner called directly
    direct = pretrain_loss(model.forward_pretrain(batch), loss_weights(task.cfg, 0.25))
    torch.testing.assert_close(step.loss, direct.total)


def test_evaluate_reports_the_held_out_metrics(task):
    torch.manual_seed(0)
    model = task.build_model()
    result = task.evaluate(model, torch.device("cpu"))
    assert result["itm_pairs"] == 4 * result["num_images"] and result["itm_chance"] == 0.5
    for key in ("mlm_acc", "mlm_acc_wrong_image", "i2t_r1", "imf_1L", "nmi_last"):
        assert key in result
    assert model.training  # evaluation restores the mode


def test_batch_negatives_groups_must_not_be_split(scene_world, small_overrides):
    cfg = load_config("tiny", [*small_overrides, "objectives.itm_negatives=batch",
                               "objectives.itm_negative_group=2"])
    with pytest.raises(ValueError, match="multiple of objectives.itm_negative_group"):
        PretrainTask(cfg, scene_world, world_size=4, log=None)


def test_the_recipe_reaches_the_data_path(scene_world, small_overrides):
    """``data.epoch_unit`` sets the epoch's length and ``objectives.mlm_min_masked`` the MLM
    floor of the batches the task makes."""
    base = load_config("tiny", small_overrides)
    images = PretrainTask(base, scene_world, evaluate=False, log=None)
    pairs = PretrainTask(load_config("tiny", [*small_overrides, "data.epoch_unit=pairs"]),
                         scene_world, evaluate=False, log=None)
    counts = [len(r.captions) for r in images.records]
    assert len(images.train_dataset()) == len(counts)
    assert len(pairs.train_dataset()) == sum(-(-n // 2) for n in counts) > 2 * len(counts)
    data = images.train_dataset()
    items = [data[i] for i in range(16)]
    floors = {}
    for floor in (0, 1):
        cfg = load_config("tiny", [*small_overrides, f"objectives.mlm_min_masked={floor}"])
        labels = PretrainTask(cfg, scene_world, evaluate=False, log=None).collate(items)[
            "mlm_labels"]
        floors[floor] = labels != -100
    assert floors[1].any(-1).all()  # a target in every matched caption
    assert not floors[0].any(-1).all()  # BERT's masking leaves some caption without one
    assert (floors[1] | ~floors[0]).all()  # the floor only adds tokens to the same draw
