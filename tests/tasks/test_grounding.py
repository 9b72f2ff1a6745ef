"""The box tasks: their metrics wired to the records (perfect and shifted predictions, the
largest-box baseline against a brute-force count), tiny end-to-end runs of ``vlparse finetune``
and ``vlparse evaluate`` for grounding, refexp and detection, FIBER's fine-grained pre-training
from a saved coarse model with ``--init`` and its continuation, the API's ``ground`` / ``detect``
and ``vlparse figure boxes``."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.ops import box_area, box_iou

import vlparse
from vlparse.api import caption_phrases
from vlparse.cli import main
from vlparse.config import FinetuneConfig, load_config
from vlparse.data.grounding import read_box_source, record_boxes
from vlparse.data.manifest import load_manifest
from vlparse.errors import WrongTaskError
from vlparse.models.detection.postprocess import Detections
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.tasks.finetune import finetune_task
from vlparse.tasks.grounding import box_dataset
from vlparse.tasks.grounding_eval import detection_metrics, grounding_metrics, refexp_metrics

SMALL = ["model.text.pretrained=null", "model.text.num_layers=3", "model.fusion.num_layers=2",
         "model.detection.train_sizes=[64]", "model.detection.test_size=64",
         "model.detection.max_size=64", "model.detection.channels=32",
         "model.detection.max_text_len=32", "train.batch_size=4", "train.progress=false",
         "train.log_every=1", "task.eval_max_images=4"]


def _data(world, name: str, split: str):
    src = read_box_source(load_manifest(world), name, split)
    cfg = load_config("grounding_world", cls=FinetuneConfig)
    data = box_dataset([src], cfg.model, FiberProcessor.from_config(cfg.model).tokenizer, False)
    data.source = src
    return data


def _dets(boxes: torch.Tensor, phrases: list[int]) -> Detections:
    return Detections(boxes.float(), torch.linspace(1.0, 0.5, len(phrases)),
                      torch.tensor(phrases, dtype=torch.long))


def test_refexp_metrics_perfect_shifted_and_largest_box(scene_world) -> None:
    data = _data(scene_world, "refcoco", "val")
    truth = {r: record_boxes(rec) for r, rec in enumerate(data.records)}
    perfect = refexp_metrics(data, {r: _dets(b, [0]) for r, b in truth.items()})
    assert perfect["accuracy"] == perfect["accuracy_giou"] == 1.0
    moved = {r: _dets(b + torch.tensor([1.0, 0, 1.0, 0]) * (b[:, 2:3] - b[:, :1]), [0])
             for r, b in truth.items()}
    assert refexp_metrics(data, moved)["accuracy_iou"] == 0.0
    # brute force: the largest box that any expression of the same picture refers to
    hits = 0
    for rec in data.records:
        pool = torch.cat([record_boxes(o) for o in data.records if o.image_id == rec.image_id])
        big = pool[int(box_area(pool).argmax())]
        hits += float(box_iou(big[None], record_boxes(rec))[0, 0]) >= 0.5
    assert perfect["largest_box_accuracy_iou"] == pytest.approx(hits / len(data.records))


def test_grounding_metrics_perfect_and_missing(scene_world) -> None:
    data = _data(scene_world, "flickr_entities", "val")
    found = {}
    for r, rec in enumerate(data.records):
        members = rec.phrase_boxes()
        boxes = record_boxes(rec)
        chosen = [(p, m[0]) for p, m in enumerate(members) if m]
        found[r] = _dets(boxes[[b for _, b in chosen]].reshape(-1, 4), [p for p, _ in chosen])
    result = grounding_metrics(data, found)
    assert result["recall@1"] == result["recall@10"] == 1.0 and result["num_phrases"] > 0
    empty = {r: _dets(torch.zeros(0, 4), []) for r in found}
    assert grounding_metrics(data, empty)["recall@10"] == 0.0


def test_detection_metrics_perfect_is_ap_one(scene_world) -> None:
    data = _data(scene_world, "coco_detection", "val")
    ids = data.source.prompt.category_ids
    found = {r: _dets(record_boxes(rec), [ids.index(b.category_id) for b in rec.boxes])
             for r, rec in enumerate(data.records[:6])}
    result = detection_metrics(data, found, data.source.instances, ids)
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert 0 <= result["random_box_AP"] < 1 and 0 <= result["largest_box_AP"] <= 1


@pytest.mark.parametrize(("task", "dataset", "split", "keys"), [
    ("grounding", "flickr_entities", "test", ("recall@1", "largest_box_recall@1")),
    ("refexp", "refcoco", "testA", ("accuracy", "random_box_accuracy_iou")),
    ("detection", "coco_detection", "val", ("AP", "AP50", "largest_box_AP")),
])
def test_finetune_and_evaluate_end_to_end(scene_world, tmp_path, capsys, task, dataset, split,
                                          keys) -> None:
    out = tmp_path / task
    main(["finetune", task, "--config", f"{task}_world", "--data", str(scene_world), "--out",
          str(out), "train.max_steps=2", *SMALL])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and set(keys) <= set(summary["val"])
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in log if "loss" in x)
    report = tmp_path / f"{task}.json"
    main(["evaluate", task, "--checkpoint", str(out), "--data", str(scene_world), "--split",
          split, "--dataset", dataset, "--out", str(report), "--no-progress", "--device", "cpu"])
    result = json.loads(report.read_text())
    assert all(0.0 <= result[k] <= 1.0 for k in keys) and result["num_examples"] > 0


@pytest.fixture(scope="module")
def fine_run(scene_world, tmp_path_factory):
    """A coarse FIBER model saved as a run would export it, then 2 fine-grained steps on it."""
    root = tmp_path_factory.mktemp("fine")
    cfg = load_config("fiber_fine_tiny", SMALL[:3])
    coarse = FiberModel(cfg.model)
    coarse.save_pretrained(root / "coarse", FiberProcessor.from_config(cfg.model))
    main(["pretrain", "--config", "fiber_fine_tiny", "--data", str(scene_world), "--out",
          str(root / "run"), "--init", str(root / "coarse"), "train.max_steps=2",
          "train.eval_images=4", *[o for o in SMALL if not o.startswith("task.")][3:]])
    return root


def test_fine_grained_pretraining_starts_from_the_coarse_model(fine_run) -> None:
    from safetensors.torch import load_file

    coarse = load_file(fine_run / "coarse" / "model.safetensors")
    summary = json.loads((fine_run / "run" / "summary.json").read_text())
    assert summary["stage"] == "fine" and summary["data"] == ["detection", "refexp"]
    assert "accuracy" in summary["held_out"]
    fine = vlparse.load(fine_run / "run", device="cpu")
    assert fine.task == "pretrain" and type(fine.model).__name__ == "FiberForGrounding"
    # the text side moves at 1e-5 for two steps: near the coarse weights, not a new draw
    theirs = fine.model.backbone.state_dict()
    shared = [k for k in coarse if k.startswith("text.model.encoder.") and k in theirs]
    change = max(float((theirs[k] - coarse[k]).abs().max()) for k in shared)
    assert shared and 0 < change < 1e-3


def test_fine_quickstart_recipe_starts_from_the_fiber_quickstart_model(scene_world,
                                                                        tmp_path) -> None:
    """``fiber_fine_quickstart`` fits the one-stage backbone that ``vlparse quickstart --model
    fiber`` saves: its box head reads that one Swin stage."""
    coarse_cfg = load_config("fiber_quickstart", ["model.visual.pretrained=null"])
    coarse = FiberModel(coarse_cfg.model)
    coarse.save_pretrained(tmp_path / "coarse", FiberProcessor.from_config(coarse_cfg.model))
    main(["pretrain", "--config", "fiber_fine_quickstart", "--data", str(scene_world), "--out",
          str(tmp_path / "run"), "--init", str(tmp_path / "coarse"), "train.max_steps=2",
          "train.eval_images=4", "train.batch_size=4", "train.progress=false",
          "model.detection.train_sizes=[96]", "model.detection.test_size=96",
          "model.detection.max_size=96"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stage"] == "fine" and summary["model"] == "fiber_quickstart"
    fine = vlparse.load(tmp_path / "run", device="cpu").model
    assert fine.backbone.cfg.detection.num_levels == 1
    assert len(coarse_cfg.model.visual.depths) == fine.backbone.cfg.detection.num_levels


def test_finetuning_a_fine_grained_run_keeps_its_head(fine_run, scene_world) -> None:
    cfg = load_config("refexp_world", SMALL, cls=FinetuneConfig)
    task = finetune_task("refexp", cfg, load_manifest(scene_world), init=fine_run / "run",
                         log=None)
    model = task.build_model()
    saved = vlparse.load(fine_run / "run", device="cpu").model
    torch.testing.assert_close(model.head.bias_lang, saved.head.bias_lang)
    torch.testing.assert_close(model.head.box_pred.weight, saved.head.box_pred.weight)
    assert model.task == "refexp"


def test_api_ground_detect_and_the_figure(fine_run, scene_world, tmp_path) -> None:
    model = vlparse.load(fine_run / "run", device="cpu")
    image = read_box_source(load_manifest(scene_world), "refcoco", "val").records[0].image_path
    caption = "a red circle left of a blue square"
    found = model.ground(image, caption, per_phrase=2)
    assert set(found.phrases) <= {"red circle", "blue square"} and len(found) == 4
    assert all(caption[a:b] == p for (a, b), p in zip(found.spans, found.phrases, strict=True))
    assert found.boxes.shape == (4, 4) and bool((found.scores <= 1).all())
    one = model.ground(image, caption, phrases=["blue square"])
    assert one.phrases == ["blue square"] and one.spans == [(23, 34)]
    named = model.detect(image, ["red square", "blue circle"], min_score=0.0)
    assert set(named.phrases) <= {"red square", "blue circle"} and len(named) > 0
    out = tmp_path / "boxes.png"
    main(["figure", "boxes", "--checkpoint", str(fine_run / "run"), "--image", image,
          "--caption", caption, "--out", str(out), "--device", "cpu"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ground_needs_a_box_model(fine_run) -> None:
    coarse = vlparse.load(fine_run / "coarse", device="cpu")
    with pytest.raises(WrongTaskError, match="box model"):
        coarse.ground("unused.png", "a red circle")


def test_caption_phrases() -> None:
    caption = "There are two red circles to the left of a small blue square."
    assert [caption[a:b] for a, b in caption_phrases(caption)] == [
        "two red circles", "small blue square"]
    assert caption_phrases("the left of the") == []
