"""``vlparse finetune caption`` and ``vlparse evaluate caption`` end to end on a small scene
world (a small FIBER saved by ``save_pretrained`` as the initialisation), the self-critical
stage from the MLE run, and ``vlparse.load(run).caption``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vlparse
from vlparse.cli import main
from vlparse.config import FinetuneConfig, load_config
from vlparse.data.formats.karpathy import read_karpathy
from vlparse.data.manifest import load_manifest
from vlparse.errors import WrongTaskError
from vlparse.tasks.base import get_task

pytest.importorskip("timm")
pytest.importorskip("transformers")

SMALL_MODEL = ["model.text.pretrained=null", "model.text.num_layers=3",
               "model.fusion.num_layers=2", "model.visual.image_size=64"]
RUN = ["train.max_steps=2", "train.batch_size=4", "train.progress=false", "train.log_every=1",
       "task.eval_max_images=4", "task.num_beams=2", "task.max_length=8"]


@pytest.fixture(scope="module")
def pretrained(scene_world, tmp_path_factory):
    """A freshly initialised small FIBER with its processor, as save_pretrained writes it."""
    from vlparse.models.fiber import FiberModel, FiberProcessor

    cfg = load_config("caption_world", SMALL_MODEL, cls=FinetuneConfig).model
    folder = tmp_path_factory.mktemp("pre")
    FiberModel(cfg).save_pretrained(folder, FiberProcessor.from_config(cfg))
    return folder


def test_caption_task_is_registered_with_its_recipes():
    task = get_task("caption")
    assert task.recipe == "caption" and task.default_split == "test"
    cfg = load_config("caption_world", cls=FinetuneConfig)
    assert cfg.model.family == "fiber" and cfg.task.name == "caption"
    assert (cfg.data.train_sets, cfg.data.train_splits) == (["coco"], ["train", "restval"])
    paper = load_config("caption", cls=FinetuneConfig).task
    assert (paper.num_beams, paper.max_length, paper.length_alpha) == (5, 50, 1.0)


def test_finetune_evaluate_and_caption_end_to_end(scene_world, pretrained, tmp_path):
    out = tmp_path / "mle"
    argv = ["finetune", "caption", "--config", "caption_world", "--data", str(scene_world),
            "--init", str(pretrained), "--out", str(out), *RUN]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "caption" and summary["steps"] == 2
    assert {"CIDEr", "Bleu_4", "ROUGE_L"} <= set(summary["val"])
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert sum("mle" in r for r in logged) == 2 and not any("scst" in r for r in logged)

    path = tmp_path / "eval" / "test.json"
    argv = ["evaluate", "caption", "--checkpoint", str(out), "--data", str(scene_world),
            "--split", "test", "--out", str(path), "--no-progress", "--beams", "1"]
    assert main(argv) == 0
    metrics = json.loads(path.read_text())
    assert metrics["num_beams"] == 1  # greedy, asked on the command line
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert 0.0 <= metrics[key] <= 10.0, key
    assert metrics["tokenizer"] in ("ptb", "simple_ptb") and "SPICE" in metrics["skipped"]
    manifest = load_manifest(scene_world)
    roles = manifest["coco"]["test"]
    test_ids = {r.image_id for r in read_karpathy(roles["karpathy"], roles["image_root"], "test")}
    results = json.loads((tmp_path / "eval" / "test_captions.json").read_text())
    assert metrics["num_examples"] == len(results) == len(test_ids)  # the whole split
    assert {r["image_id"] for r in results} == test_ids
    assert all(set(r) == {"image_id", "caption"} and isinstance(r["caption"], str)
               for r in results)

    model = vlparse.load(out, device="cpu")
    image = next(iter(read_karpathy(roles["karpathy"], roles["image_root"], "test"))).image_path
    one = model.caption(image, beam=2, max_length=8)
    two = model.caption([image, image], beam=1, max_length=8)
    assert isinstance(one, str) and len(two) == 2 and two[0] == two[1]
    with pytest.raises(WrongTaskError):
        vlparse.load(pretrained).caption(image)


def test_self_critical_stage_from_the_mle_run(scene_world, pretrained, tmp_path):
    mle, scst = tmp_path / "mle", tmp_path / "scst"
    base = ["--config", "caption_world", "--data", str(scene_world), "--no-eval"]
    assert main(["finetune", "caption", *base, "--init", str(pretrained), "--out", str(mle),
                 *RUN, "train.max_steps=1"]) == 0
    assert main(["finetune", "caption", *base, "--init", str(mle), "--out", str(scst), *RUN,
                 "task.scst_weight=0.7", "task.scst_samples=2", "task.scst_max_length=6"]) == 0
    logged = [json.loads(x) for x in (scst / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "scst" in r]
    assert len(steps) == 2
    for r in steps:
        torch.testing.assert_close(r["loss"], 0.3 * r["mle"] + 0.7 * r["scst"], rtol=1e-4,
                                   atol=1e-5)
        assert r["reward_sample"] >= 0 and r["reward_greedy"] >= 0


def test_nearest_neighbour_baseline_finds_the_image_itself(scene_world):
    """An embedding that identifies each image (its pixels): with the test images among the
    training ones, every test image gets its own first caption."""
    from types import SimpleNamespace

    from vlparse.tasks.caption import CaptionEvalDataset, nearest_neighbour_results
    from vlparse.tasks.retrieval import read_retrieval_records

    class Pixels:
        def encode_image(self, images):
            return SimpleNamespace(embeds=images.flatten(1) - images.mean())

    def pixels(image):
        return torch.from_numpy(np.asarray(image.resize((16, 16)), dtype="float32")).permute(
            2, 0, 1)

    processor = SimpleNamespace(image_transform=pixels)
    manifest = load_manifest(scene_world)
    train = read_retrieval_records(manifest, ["coco"], ["train", "test"])
    test = read_retrieval_records(manifest, ["coco"], ["test"])
    cfg = load_config("caption_world", ["train.batch_size=7"], cls=FinetuneConfig)
    results = nearest_neighbour_results(Pixels(), CaptionEvalDataset(train, processor),
                                        CaptionEvalDataset(test, processor), cfg,
                                        torch.device("cpu"))
    assert results == [{"image_id": r.image_id, "caption": r.captions[0]} for r in test]
