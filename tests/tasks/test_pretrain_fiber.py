"""FIBER pre-training as a task: the family dispatch, the collator's FIBER batch (image ids,
masking that never touches special tokens, the per-item uniforms), one step, the held-out
evaluation's hard negatives, and ``vlparse pretrain --config fiber_tiny`` end to end."""

from __future__ import annotations

import json

import pytest
import torch

import vlparse
from vlparse.cli import main
from vlparse.config import load_config
from vlparse.data import PretrainCollator
from vlparse.data.formats.records import ImageCaptions
from vlparse.errors import ConfigError
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.objectives import pretrain_loss
from vlparse.tasks.pretrain import PretrainTask
from vlparse.tasks.pretrain_fiber import FiberPretrainTask, fiber_loss_weights
from vlparse.tasks.pretrain_fiber_eval import _hardest
from vlparse.train.protocol import StepContext, TrainTask

RUN = ["train.batch_size=4", "train.progress=false", "train.log_every=1", "train.eval_images=8",
       "data.num_workers=0"]
# a smaller text backbone for the task tests (the smoke run keeps fiber_tiny's MiniLM)
SMALL = [*RUN, "model.text.pretrained=null", "model.text.num_layers=3",
         "model.fusion.num_layers=2", "objectives.mlm_prob=0.5"]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@pytest.fixture(scope="module")
def task(scene_world) -> FiberPretrainTask:
    return PretrainTask(load_config("fiber_tiny", SMALL), scene_world, log=None)


@pytest.fixture(scope="module")
def batch(task) -> dict:
    data = task.train_dataset()
    return task.collate([data[i] for i in range(6)])


def test_pretrain_task_of_the_fiber_family(task):
    assert type(task) is FiberPretrainTask and isinstance(task, TrainTask)
    assert isinstance(task.processor, FiberProcessor)
    assert not task.find_unused_parameters  # every term weighted: every parameter trains
    assert set(task.curve_keys()) >= {"itc", "itm", "mlm", "itc_acc", "temperature"}

def test_visual_parsing_configs_keep_their_task(scene_world):
    assert type(PretrainTask(load_config("tiny"), scene_world, log=None)) is PretrainTask


def test_settings_it_cannot_run_are_refused(scene_world):
    cfg = load_config("fiber_tiny", [*SMALL, "train.batch_size=2"])
    PretrainTask(cfg, scene_world, world_size=2, log=None)  # 1 pair each, 2 gathered: fine
    local = load_config("fiber_tiny", [*SMALL, "train.batch_size=2",
                                       "objectives.hard_negative_pool=local"])
    with pytest.raises(ConfigError, match="needs at least 2"):
        PretrainTask(local, scene_world, world_size=2, log=None)
    nothing = load_config("fiber_tiny", [*SMALL, "objectives.lambda_itc=0",
                                         "objectives.lambda_itm=0", "objectives.lambda_mlm=0"])
    with pytest.raises(ConfigError, match="nothing to train"):
        PretrainTask(nothing, scene_world, log=None)


def test_the_collators_fiber_batch(task, batch):
    sid = task.processor.special_ids
    ids, labels = batch["input_ids"], batch["mlm_labels"]
    assert ids.shape == (6, 1, 24) and labels.shape == (6, 1, 24)
    assert (ids[:, 0, 0] == sid["cls"]).all()  # whole sequences: [CLS] first ...
    lengths = batch["attention_mask"][:, 0].sum(1)
    assert (ids[torch.arange(6), 0, lengths - 1] == sid["sep"]).all()  # ... [SEP] last
    # image ids: the records (one image file each in the scene world)
    assert batch["image_id"].tolist() == batch["record"]
    noise = batch["item_noise"]
    assert noise.shape == (6, 2) and bool(((noise >= 0) & (noise < 1)).all())
    # an item is the same alone or in a batch
    data = task.train_dataset()
    alone = task.collate([data[3]])
    assert torch.equal(alone["item_noise"][0], noise[3])
    assert torch.equal(alone["mlm_labels"][0], labels[3])
    assert batch["mfr_noise"].shape == (6, 0)  # no visual-token masking in FIBER


def test_masking_never_touches_special_tokens(task):
    data = task.train_dataset()
    batch = task.collate([data[i] for i in range(len(data))])
    ids, masked = batch["input_ids"][:, 0], batch["mlm_labels"][:, 0] != -100
    sid = task.processor.special_ids
    special = (ids == sid["cls"]) | (ids == sid["sep"]) | (ids == sid["pad"])
    assert int(masked.sum()) > 0.3 * int((~special).sum())  # mlm_prob 0.5: masking happens
    assert not bool((masked & special).any())
    assert not bool((masked & (batch["attention_mask"][:, 0] == 0)).any())


def test_image_ids_name_the_first_record_of_an_image_file():
    records = [ImageCaptions("a.jpg", ["one"], 1, "coco"),
               ImageCaptions("b.jpg", ["two"], 2, "coco"),
               ImageCaptions("a.jpg", ["three"], 1, "vg")]
    processor = FiberProcessor.from_config(load_config("fiber_tiny").model)
    collate = PretrainCollator(records, processor, 0, num_pos=1, num_neg=0)
    assert collate.image_ids == [0, 1, 0]
    with pytest.raises(ValueError, match="item_noise"):
        PretrainCollator(records, processor, 0, num_pos=1, num_neg=0, item_noise=-1)


def test_one_step_is_the_weighted_sum_of_the_passes(task, batch):
    torch.manual_seed(0)
    model = task.build_model()
    assert isinstance(model, FiberModel) and model.objectives == task.cfg.objectives
    step = task.step(model, batch, StepContext(0, _identity))
    s = step.scalars
    assert float(step.loss.detach()) == pytest.approx(float(s["itc"] + s["itm"] + s["mlm"]),
                                                      rel=1e-5)
    assert step.counts["itm_total"] == 18 and step.counts["itc_total"] == 12
    assert {"mlm_correct", "mlm_total", "itc_correct", "itm_correct"} <= set(step.counts)
    assert {"temperature", "negative_fallbacks", "gate_i2t_0"} <= set(s)
    model.eval()
    torch.manual_seed(1)
    direct = pretrain_loss(model.forward_pretrain(batch), fiber_loss_weights(task.cfg.objectives))
    torch.manual_seed(1)
    again = task.step(model, batch, StepContext(0, _identity))
    torch.testing.assert_close(again.loss, direct.total)


def test_mlm_waits_for_its_delay_then_ramps_in(scene_world, batch):
    cfg = load_config("fiber_tiny", [*SMALL, "objectives.mlm_delay=10",
                                     "objectives.mlm_ramp=4"])
    task = PretrainTask(cfg, scene_world, log=None)
    assert task.find_unused_parameters  # the MLM head has no gradient while MLM waits
    weights = [fiber_loss_weights(cfg.objectives, k)["mlm"] for k in (0, 9, 10, 12, 14, 99)]
    assert weights == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 1.0])
    torch.manual_seed(0)
    model = task.build_model()
    waiting = task.step(model, batch, StepContext(5, _identity))
    assert waiting.scalars["mlm_weight"] == 0.0
    assert "mlm_total" not in waiting.counts  # the masked rows were not run
    assert float(waiting.loss.detach()) == pytest.approx(
        float(waiting.scalars["itc"] + waiting.scalars["itm"]), rel=1e-5)
    ramping = task.step(model, batch, StepContext(12, _identity))
    s = ramping.scalars
    assert s["mlm_weight"] == 0.5 and ramping.counts["mlm_total"] > 0
    assert float(ramping.loss.detach()) == pytest.approx(
        float(s["itc"] + s["itm"] + 0.5 * s["mlm"]), rel=1e-5)


def test_hardest_takes_the_best_allowed_column():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.2, 0.1, 0.7, 0.6], [0.3, 0.2, 0.1, 0.0]])
    banned = {(0, 0), (0, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)}
    assert _hardest(scores, lambda i, j: (i, j) not in banned) == [3, 3, None]


def test_evaluate_reports_each_metric_beside_chance(task):
    torch.manual_seed(0)
    model = task.build_model()
    result = task.evaluate(model, torch.device("cpu"))
    n = result["num_images"]
    assert result["itm_pairs"] == 2 * n and result["itm_chance"] == 0.5
    assert result["retrieval_images"] == n and result["i2t_r1_chance"] == 1 / n
    # each pair, then at most one hard text and one hard image per pair
    assert n < result["itm_hard_pairs"] <= 3 * n
    assert result["itm_hard_chance"] == pytest.approx((result["itm_hard_pairs"] - n)
                                                      / result["itm_hard_pairs"])
    for key in ("mlm_acc", "mlm_chance", "mlm_acc_wrong_image", "t2i_r1", "itm_hard_acc"):
        assert 0 <= result[key] <= 1
    assert model.training


def test_pretrain_fiber_tiny_end_to_end(scene_world, tmp_path):
    out = tmp_path / "f"
    argv = ["pretrain", "--config", "fiber_tiny", "--data", str(scene_world), "--out", str(out),
            "train.max_steps=5", *RUN]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["model"] == "fiber_tiny"
    held_out = summary["held_out"]
    for key in ("i2t_r1", "t2i_r1", "i2t_r1_chance", "itm_acc", "itm_chance", "itm_hard_acc",
                "itm_hard_chance", "mlm_acc", "mlm_chance"):
        assert key in held_out, key
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    trained = [r for r in lines if "itc" in r]
    assert len(trained) == 5 and all(r["temperature"] > 0 for r in trained)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["family"] == "fiber" and config["model"]["name"] == "fiber_tiny"
    # the exported model and processor load by name (a fresh process: tests/models/fiber)
    model = vlparse.create_model("fiber_tiny", pretrained=out / "model")
    processor = FiberProcessor.from_pretrained(out / "model")
    text = processor(text=["a red circle"])
    assert isinstance(model, FiberModel) and not model.training
    assert model.encode_text(text["input_ids"], text["attention_mask"]).embeds.shape == (1, 128)


def test_two_processes_train_through_the_trainer(scene_world, tmp_path):
    """The trainer under DDP (gloo): the gather and the fetch run in every process, every
    parameter gets a gradient, the main process evaluates alone."""
    from vlparse.tasks.pretrain import run_pretrain
    from vlparse.train.distributed import run_local_processes

    cfg = load_config("fiber_tiny", [*SMALL, "train.max_steps=2", "train.batch_size=8"])
    run_local_processes(run_pretrain, 2, (cfg, str(scene_world), str(tmp_path / "ddp")))
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert "itm_hard_acc" in summary["held_out"]
