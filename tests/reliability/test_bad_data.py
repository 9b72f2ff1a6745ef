"""Bad-data accounting never throws away finished work: a short run with one bad image among
few finishes (the verdict needs as many images at the end as during the run), and a run over the
limit writes a checkpoint of its last step before it stops.

Guards against the old behaviour: with 1 corrupt image among a few dozen, a 10-step run ended
``1 of 41 images were bad (2.4%)``, exit status 2 and no summary, because the final check ignored
the minimum number of images of the periodic check; and a run stopped for bad data lost every
step since its last checkpoint, since the check ran before the final checkpoint.
"""

from __future__ import annotations

import json
import shutil

from vlparse.cli import main


def _corrupt(world, n: int) -> list[str]:
    """Overwrite the first ``n`` COCO training images of a copied world with junk."""
    manifest = json.loads(world.read_text())
    data = json.loads((world.parent / manifest["coco"]["train"]["karpathy"]).read_text())
    root = world.parent / manifest["coco"]["train"]["image_root"]
    names = []
    for im in [im for im in data["images"] if im["split"] == "train"][:n]:
        (root / im.get("filepath", "") / im["filename"]).write_bytes(b"not an image")
        names.append(im["filename"])
    return names


def _copy(scene_world, dst):
    shutil.copytree(scene_world.parent, dst)
    return dst / scene_world.name


def test_one_bad_image_in_a_short_run(tmp_path, scene_world, small_overrides, capsys):
    world = _copy(scene_world, tmp_path / "w")
    (name,) = _corrupt(world, 1)
    run = tmp_path / "run"
    argv = ["pretrain", "--config", "tiny", "--data", str(world), "--out", str(run), "--no-eval",
            *small_overrides, "data.train_sets=[coco]", "train.max_steps=10"]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["bad_images"] >= 1
    log = (run / "train.log").read_text()
    assert name in log and "Too few images" in log


def test_too_many_bad_images_stop_after_a_checkpoint(tmp_path, scene_world, small_overrides,
                                                     capsys, one_line_error):
    world = _copy(scene_world, tmp_path / "w")
    _corrupt(world, 12)
    run = tmp_path / "run"
    argv = ["pretrain", "--config", "tiny", "--data", str(world), "--out", str(run), "--no-eval",
            *small_overrides, "data.train_sets=[coco]", "train.max_steps=200",
            "train.batch_size=8", "train.log_every=1", "train.ckpt_every=1000"]
    assert main(argv) == 2
    stopped = max(json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines())
    assert (run / "checkpoints" / f"step_{stopped:08d}" / "model.safetensors").is_file()
    line = one_line_error(capsys.readouterr().err)
    assert "max_bad_fraction" in line and f"Stopped at step {stopped};" in line
    assert not (run / "summary.json").exists()
